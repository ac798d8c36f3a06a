/**
 * Killing a starting process at a chosen step, as a crashed laptop would: the child
 * (test/e2e/fixtures/start-until-killed.ts) starts a cluster against a cloud fake or emulator and
 * is SIGKILLed the moment the k-th mutating request reaches that cloud (the request still takes
 * effect), or, when the start makes fewer than k, while it waits for the scheduler.
 */
import { expect } from 'vitest';
import { spawnTsx } from './spawn';

const FIXTURE = 'test/e2e/fixtures/start-until-killed.ts';

export interface KillTarget {
  provider: 'gcp' | 'ec2' | 'digitalocean';
  /** FAKE_OPTIONS of the fixture. */
  options: Record<string, string | number>;
  /**
   * Calls `onMutating(what)` for every mutating request the cloud receives, from now until the
   * returned function is called.
   */
  watchMutating(onMutating: (what: string) => void): () => void;
}

/** Runs the child until it is killed; says where. */
export async function killStartAt(t: KillTarget, k: number): Promise<{ clusterId: string; killedAt: string }> {
  const child = spawnTsx(FIXTURE, [], { FAKE_PROVIDER: t.provider, FAKE_OPTIONS: JSON.stringify(t.options), DEBUG: '' });
  let seen = 0;
  let killedAt: string | undefined;
  const unwatch = t.watchMutating((what) => {
    if (++seen === k && killedAt === undefined) {
      killedAt = `mutating request ${k}${what ? ` (${what})` : ''}`;
      child.child.kill('SIGKILL');
    }
  });
  try {
    await child.until(/"clusterId"/, 60_000);
    const clusterId = (JSON.parse(child.stdout().split('\n')[0]!) as { clusterId: string }).clusterId;
    const waiting = child.until(/"type":"member-launched","clusterId":"[^"]+","role":"worker"/, 60_000).then(
      () => true,
      () => false,
    );
    const ended = await Promise.race([child.exited.then(() => 'exited' as const), waiting.then((w) => (w ? ('waiting' as const) : ('exited' as const)))]);
    if (ended === 'waiting' && killedAt === undefined) {
      killedAt = 'waiting for the scheduler';
      child.child.kill('SIGKILL');
    }
    const code = await child.exited;
    expect(code, `the child must die by SIGKILL, not end on its own:\n${child.output()}`).toBeNull();
    return { clusterId, killedAt: killedAt ?? 'unknown' };
  } finally {
    unwatch();
    if (child.child.exitCode === null && child.child.signalCode === null) child.child.kill('SIGKILL');
  }
}
