/**
 * Ownership records of the simulated cloud (state.ts): a record's owner counts as alive only
 * while its process runs. A zombie (exited, not yet reaped by its parent) keeps its PID and start
 * time, so both must be checked along with the process state, or a dead run's networks and image
 * lock would be taken for a live one's and never cleaned up.
 *
 * Needs nothing but /proc: it runs without root.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { currentOwner, ownerAlive, processStartTime } from './state';

const started: number[] = [];
afterEach(() => {
  for (const pid of started.splice(0)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
});

const stateOf = (pid: number) => fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0];

describe('sim ownership records', () => {
  it('this process is alive; a record with another start time (a reused PID) or no record is not', () => {
    const me = currentOwner();
    expect(ownerAlive(me)).toBe(true);
    expect(ownerAlive({ pid: me.pid, startTime: String(Number(me.startTime) + 1) })).toBe(false);
    expect(ownerAlive(null)).toBe(false);
  });

  it('a zombie owner is dead although its PID and start time still match', async () => {
    // The shell starts `sleep 0.2` in the background and then becomes `sleep 30`, which never
    // reaps it: when the first sleep exits it stays a zombie until its parent goes.
    const parent = spawn('sh', ['-c', 'sleep 0.2 & echo $!; exec sleep 30'], { stdio: ['ignore', 'pipe', 'inherit'] });
    started.push(parent.pid!);
    const pid = await new Promise<number>((resolve, reject) => {
      parent.stdout!.once('data', (d: Buffer) => resolve(Number(String(d).trim())));
      parent.once('exit', () => reject(new Error('the shell exited before printing the PID')));
    });
    const owner = { pid, startTime: processStartTime(pid)! };
    expect(owner.startTime).toBeTruthy();
    expect(ownerAlive(owner)).toBe(true); // still sleeping
    // Bounded: the child sleeps 0.2 s; allow it 100 times that on a loaded machine.
    const deadline = Date.now() + 20_000;
    while (stateOf(pid) !== 'Z' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(stateOf(pid)).toBe('Z');
    expect(processStartTime(pid)).toBe(owner.startTime);
    expect(ownerAlive(owner)).toBe(false);
  });
});
