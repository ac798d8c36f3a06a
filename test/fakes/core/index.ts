/** The shared core of the cloud API fakes. See test/fakes/README.md. */
export * from './server';
export * from './faults';
export * from './contract';
export * from './state';
