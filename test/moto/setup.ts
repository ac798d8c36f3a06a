/**
 * Setup of the vitest project `moto`: before any test file loads, refuse to run outside a
 * loopback-only network namespace (test/moto/netns.ts says why).
 */
import { assertLoopbackOnly } from './netns';

assertLoopbackOnly();
