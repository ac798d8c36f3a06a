/** The EC2 fake: see fake-ec2.ts and test/fakes/README.md. */
export { FakeEc2, MUTATING_OPERATIONS } from './fake-ec2';
export type { LaunchFailure } from './fake-ec2';
export type { FakeEc2Options } from './fake-ec2';
export * from './model';
export { IMAGES, INSTANCE_TYPES, REGIONS, OWNERS, STATE_CODES, DEFAULT_TIMINGS, USER_DATA_LIMIT, imageIdFor } from './catalog';
export type { Ec2Image, Ec2Timings, InstanceStateName, Architecture } from './catalog';
