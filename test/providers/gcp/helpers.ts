/**
 * Shared setup for the GCP provider tests: a FakeGcp whose every address is on loopback, the
 * options that point a GCPCluster at it, and a booter that runs each instance's Dask process.
 *
 * Network safety (FACTS.md): a fake here never hands out 10.77 addresses. Its private and public
 * blocks are /20s of 127.0.0.0/8 (every 127/8 address is local on Linux), so whatever the library
 * or a Python client dials is loopback. Each fake gets its own pair of blocks outside 127.77/16
 * (which the other providers' tests use), so test files running in parallel never hand out the
 * same scheduler address. `startFake` asserts it before anything starts.
 */
import { expect } from 'vitest';
import { FakeGcp, type FakeGcpOptions } from '../../fakes/gcp';
import type { GCPClusterOptions } from '../../../providers/gcp';

export const ZONE = 'us-central1-a';

let counter = 0;

/** A private /20 and a public /20 on loopback, different for each fake of this process. */
export function loopbackBlocks(): { privateCidr: string; publicCidr: string } {
  // 127.80.0.0 - 127.207.255.255: away from 127.0.0.1 and from 127.77/16.
  const second = 80 + ((process.pid * 7 + counter++) % 128);
  const third = 16 * (counter % 8);
  return { privateCidr: `127.${second}.${third}.0/20`, publicCidr: `127.${second}.${128 + third}.0/20` };
}

/** A FakeGcp on loopback blocks. */
export async function startFake(opts: Omit<FakeGcpOptions, 'privateCidr' | 'publicCidr'> = {}): Promise<FakeGcp> {
  const fake = await FakeGcp.start({ ...loopbackBlocks(), ...opts });
  expect(fake.pools.private.cidr.startsWith('127.'), 'the fake must hand out loopback addresses only').toBe(true);
  expect(fake.pools.public.cidr.startsWith('127.'), 'the fake must hand out loopback addresses only').toBe(true);
  return fake;
}

/** GCPCluster options that reach `fake` (fixed-token auth, plain http on 127.0.0.1). */
export function fakeOptions(fake: FakeGcp): Pick<GCPClusterOptions, 'projectId' | 'zone' | 'endpoint' | 'authClient' | 'closeOnSignals' | 'memberWatchIntervalMs'> {
  const o = fake.clientOptions();
  return {
    projectId: fake.project,
    zone: ZONE,
    endpoint: { apiEndpoint: o.apiEndpoint, port: o.port, protocol: o.protocol },
    authClient: o.authClient,
    closeOnSignals: false,
    // Start/scale/close tests assert exact call sequences; the member watch would add lists at
    // random points. The tests about the watch turn it on.
    memberWatchIntervalMs: 0,
  };
}

/** Operation names the fake received, in order, with consecutive repeats collapsed (polling counts vary). */
export function collapsed(fake: FakeGcp, from = 0): string[] {
  const ops = fake.server.received.slice(from).map((r) => (r.operation ?? `${r.method} ${r.path}`).replace(/^compute\./, ''));
  return ops.filter((op, i) => op !== ops[i - 1]);
}

/** Operation names the fake received, in order. */
export function operations(fake: FakeGcp, from = 0): string[] {
  return fake.server.received.slice(from).map((r) => (r.operation ?? `${r.method} ${r.path}`).replace(/^compute\./, ''));
}


export { NatProcessBooter } from '../../sim/nat-booter';
export { eventually } from '../../helpers/eventually';
