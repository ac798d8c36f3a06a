/** The DigitalOcean API v2 fake. See fake-digitalocean.ts and test/fakes/README.md. */
export * from './fake-digitalocean';
export * from './firewall';
export * from './rate-limit';
export * from './catalog';
export * from './contract';
export * from './recording-booter';
