/**
 * What `dask-cloud start` shows while a cluster starts: on a terminal a live task list (listr2)
 * with each phase's elapsed time, workers registered / asked and the library's pacing notes;
 * elsewhere (a pipe, CI, --json) plain lines on stderr, one per phase start and end and per
 * pacing note.
 *
 * The renderer is fed events on a fake terminal stream (every event kind, pacing included: the
 * local provider never paces); the CLI runs once with pipes and once on a pseudo-terminal from
 * util-linux `script`, with local processes only (loopback).
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { ClusterEvent } from '../../src/cluster/events';
import { createProgress, isLiveTerminal, launchedLine, LiveProgress, plainLine, REGISTERED_LINE_MS, START_PHASES } from '../../src/cli/progress';
import { eventually } from '../helpers/eventually';
import { have, realDask } from '../helpers/prereq';
import { spawnTsx, type SpawnedScript } from '../helpers/spawn';

const root = path.resolve(__dirname, '../..');
const CLI = path.join(root, 'src/cli.ts');
const ANSI = /\x1b\[[0-9;?]*[A-Za-z]/g;

const dirs: string[] = [];
const children: SpawnedScript[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill('SIGKILL');
});
afterAll(async () => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));

async function tempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  dirs.push(dir);
  return dir;
}

/** A terminal as a stream: what was drawn on it, as text. */
class FakeTerminal extends Writable {
  readonly isTTY = true;
  readonly columns = 100;
  readonly rows = 40;
  text = '';
  override _write(chunk: Buffer | string, _enc: BufferEncoding, done: () => void): void {
    this.text += chunk.toString();
    done();
  }
  plain(): string {
    return this.text.replace(ANSI, '');
  }
}

const id = 'dask-0123abcd';
const at = (): number => Date.now();
const phase = (type: 'phase-start' | 'phase-end', p: ClusterEvent extends infer E ? (E extends { phase: infer P } ? P : never) : never, durationMs = 0): ClusterEvent =>
  type === 'phase-start' ? { type, clusterId: id, phase: p, at: at() } : { type, clusterId: id, phase: p, at: at(), durationMs };
const pacing: ClusterEvent = {
  type: 'pacing',
  clusterId: id,
  provider: 'ec2',
  operation: 'RunInstances',
  message: 'holding 40 creates at 2/s (the account rate limit)',
  remaining: 40,
  perSecond: 2,
  at: at(),
};
const launched = (role: 'scheduler' | 'worker', n = 0): ClusterEvent => ({ type: 'member-launched', clusterId: id, role, memberId: `m-${role}-${n}`, name: `${id}-${role === 'worker' ? `worker-${n}` : 'scheduler'}`, at: at() });

describe('the progress display', () => {
  it('plain lines: one when each phase starts and ends, one per pacing note, workers registered / asked', () => {
    const state = { workers: () => '2 / 2 workers registered' };
    expect(plainLine(phase('phase-start', 'network'), state)).toBe('  network ...');
    expect(plainLine(phase('phase-end', 'network', 105.6), state)).toBe('  network done (106 ms)');
    expect(plainLine(phase('phase-end', 'ready', 4000), state)).toBe('  ready done (4000 ms): 2 / 2 workers registered');
    expect(plainLine(pacing, state)).toBe('  pacing RunInstances: holding 40 creates at 2/s (the account rate limit)');
    expect(plainLine(launched('worker', 1), state)).toBe(`  launched worker ${id}-worker-1`);
  });

  it('plain lines of a thousand workers: one line per create of workers, workers registered at most once every 5 s', async () => {
    const out = new FakeTerminal();
    const progress = createProgress({ json: false, stderr: Object.assign(out, { isTTY: false }) as never, stdout: new FakeTerminal() as never, env: {} });
    progress.asked(1000);
    progress.event(launched('scheduler'));
    for (let i = 0; i < 250; i++) progress.event(launched('worker', i));
    await Promise.resolve(); // the core reports a create's members one after another, in one go
    for (let i = 250; i < 1000; i++) progress.event(launched('worker', i));
    progress.event(phase('phase-start', 'ready'));
    const t0 = Date.now();
    const registered = (count: number, after: number): ClusterEvent => ({ type: 'workers-registered', clusterId: id, count, wanted: 1000, at: t0 + after });
    progress.event(registered(0, 0));
    progress.event(registered(100, 500));
    progress.event(registered(400, REGISTERED_LINE_MS - 1));
    progress.event(registered(700, REGISTERED_LINE_MS));
    progress.event(registered(1000, REGISTERED_LINE_MS + 500)); // all: the workers-ready line says it
    progress.event({ type: 'workers-ready', clusterId: id, count: 1000, at: t0 + REGISTERED_LINE_MS + 500 });
    expect(out.text.split('\n')).toEqual([
      `  launched scheduler ${id}-scheduler`,
      `  launched 250 workers: ${id}-worker-0 … ${id}-worker-249`,
      `  launched 750 workers: ${id}-worker-250 … ${id}-worker-999`,
      '  ready ...',
      '  workers: 0 / 1000 workers registered',
      '  workers: 700 / 1000 workers registered',
      '  workers: 1000 / 1000 workers registered',
      '',
    ]);
    expect(launchedLine([`${id}-worker-0`])).toBe(`  launched worker ${id}-worker-0`);
    expect(launchedLine(['a', 'b', 'c'])).toBe('  launched 3 workers: a, b, c');
    // A launch line is not held back past the tick it came in.
    const late = new FakeTerminal();
    const alone = createProgress({ json: true, stderr: late as never, stdout: new FakeTerminal() as never, env: {} });
    alone.event(launched('worker', 7));
    await Promise.resolve();
    expect(late.text).toBe(`  launched worker ${id}-worker-7\n`);
  });

  it('chooses the live list only for a terminal with a width, outside CI, without --json', async () => {
    const tty = { isTTY: true, columns: 80 };
    expect(isLiveTerminal(tty, {})).toBe(true);
    expect(isLiveTerminal(tty, { CI: 'true' })).toBe(false);
    expect(isLiveTerminal(tty, { TERM: 'dumb' })).toBe(false);
    expect(isLiveTerminal({ isTTY: true, columns: 0 }, {})).toBe(false);
    expect(isLiveTerminal({ isTTY: false, columns: 80 }, {})).toBe(false);
    const out = new FakeTerminal();
    const err = new FakeTerminal();
    expect(createProgress({ json: true, stdout: out as never, stderr: err as never, env: {} })).not.toBeInstanceOf(LiveProgress);
    expect(createProgress({ json: false, stdout: out as never, stderr: err as never, env: { CI: 'true' } })).not.toBeInstanceOf(LiveProgress);
    const live = createProgress({ json: false, stdout: out as never, stderr: err as never, env: {} });
    expect(live).toBeInstanceOf(LiveProgress);
    await live.settle();
  });

  it('live list: a row per phase with its elapsed time, skipped phases, workers registered / asked and the pacing note', async () => {
    const term = new FakeTerminal();
    const other = new FakeTerminal();
    const progress = new LiveProgress(term as never, other as never);
    progress.asked(2);
    progress.event(phase('phase-start', 'credentials'));
    progress.event(phase('phase-end', 'credentials', 650));
    // validate and preflight never start: they were not needed.
    progress.event(phase('phase-start', 'network'));
    progress.event(pacing);
    await eventually(() => term.plain().includes('pacing RunInstances: holding 40 creates at 2/s'), 'the pacing note under the running row');
    await eventually(() => /network and firewall \(\d+ ms\)/.test(term.plain()), 'the running row with its time');
    // Something else writing meanwhile waits until the list is done, instead of breaking it.
    other.write('written elsewhere meanwhile\n');
    progress.event(phase('phase-end', 'network', 120));
    progress.event(phase('phase-start', 'scheduler'));
    progress.event(launched('scheduler'));
    progress.event(phase('phase-end', 'scheduler', 300));
    progress.event(launched('worker', 0));
    progress.event(launched('worker', 1));
    progress.event(phase('phase-start', 'ready'));
    await eventually(() => term.plain().includes('0 / 2 workers registered'), 'workers registered / asked while they register');
    progress.event({ type: 'workers-registered', clusterId: id, count: 1, wanted: 2, at: at() });
    await eventually(() => term.plain().includes('1 / 2 workers registered'), 'the count so far, redrawn');
    progress.event({ type: 'workers-ready', clusterId: id, count: 2, at: at() });
    progress.event(phase('phase-end', 'ready', 4200));
    progress.event(phase('phase-start', 'versions'));
    progress.event({ type: 'warning', clusterId: id, message: 'client and cluster differ', at: at() });
    progress.event(phase('phase-end', 'versions', 40));
    await progress.settle();
    const text = term.plain();
    // The last frame: every row final.
    const last = text.slice(text.lastIndexOf('credentials ('));
    expect(last).toMatch(/credentials \(650 ms\)/);
    expect(last).toMatch(/check the user-data: not needed/);
    expect(last).toMatch(/read-only checks of the account: not needed/);
    expect(last).toMatch(/network and firewall \(120 ms\)/);
    expect(last).toMatch(/launch the scheduler and workers \(300 ms\)/);
    expect(last).toMatch(/scheduler ready, workers registering \(4\.2 s\): 2 \/ 2 workers registered/);
    expect(last).toMatch(/compare versions \(40 ms\)/);
    // Lines without a row come under the list once it is done; the other stream's writes are let through.
    expect(text.indexOf('  warning: client and cluster differ')).toBeGreaterThan(text.lastIndexOf('compare versions'));
    expect(other.text).toContain('written elsewhere meanwhile');
    expect(term.text).toMatch(/\x1b\[\d*A/); // redrawn in place
    // After the start, events are plain lines.
    progress.event(phase('phase-start', 'close'));
    expect(term.plain().trimEnd().endsWith('  close ...')).toBe(true);
  });

  it('live list: a failed start ends the list at the running phase, without waiting for phases that never come', async () => {
    const term = new FakeTerminal();
    const progress = new LiveProgress(term as never, new FakeTerminal() as never);
    progress.event(phase('phase-start', 'credentials'));
    progress.event(phase('phase-end', 'credentials', 10));
    progress.event(phase('phase-start', 'network'));
    progress.event({ type: 'rollback', clusterId: id, reason: 'quota', at: at() });
    await progress.settle(new Error('quota exceeded'));
    expect(term.plain()).toMatch(/network and firewall/);
    expect(term.plain()).toContain('  rolling back: deleting what was created');
  });
});

describe.runIf(have(realDask()))('dask-cloud start shows its progress', () => {
  it('through a pipe: plain lines on stderr, each phase started then done, workers registered / asked, no escape codes', async () => {
    const dir = await tempDir('dc-progress-');
    const cmd = spawnTsx(CLI, ['local', '--workers', '2', '--client-config', dir], { CI: '' });
    children.push(cmd);
    await cmd.until('Ctrl-C', 90_000);
    const lines = cmd.stderr().split('\n');
    for (const p of ['credentials', 'network', 'scheduler', 'ready', 'versions'] as const) {
      const started = lines.indexOf(`  ${p} ...`);
      const done = lines.findIndex((l) => new RegExp(`^ {2}${p} done \\(\\d+ ms\\)`).test(l));
      expect([p, started >= 0, done > started], cmd.stderr()).toEqual([p, true, true]);
    }
    expect(lines).toContain('  workers: 2 / 2 workers registered');
    expect(cmd.stderr()).toMatch(/^ {2}ready done \(\d+ ms\): 2 \/ 2 workers registered$/m);
    expect(cmd.output()).not.toMatch(ANSI);
    cmd.child.kill('SIGINT');
    expect(await cmd.exited).toBe(0);
  });

  const hasScript = (() => {
    try {
      execFileSync('script', ['--version'], { stdio: 'ignore' });
      return true;
    } catch {
      return false;
    }
  })();

  it.runIf(have({ ok: hasScript, reason: 'util-linux script (apt-get install util-linux) gives the CLI a pseudo-terminal' }))(
    'on a terminal (a pseudo-terminal from script): the live list, redrawn in place, then the copy-paste lines; Ctrl-C still closes',
    async () => {
      const dir = await tempDir('dc-progress-tty-');
      const pidFile = path.join(dir, 'pid');
      // The pty gets a size (a fresh one has none, and the CLI then prints plain lines); CI is
      // unset in the CLI's environment, where it would also mean plain lines.
      const inner = `stty cols 100 rows 40; echo $$ > ${pidFile}; exec env -u CI TERM=xterm-256color ${process.execPath} --import tsx ${CLI} local --workers 2 --client-config ${dir}/client`;
      const script = spawn('script', ['-qfec', inner, '/dev/null'], { cwd: root, stdio: ['pipe', 'pipe', 'pipe'] });
      let out = '';
      script.stdout.on('data', (b: Buffer) => (out += b.toString()));
      script.stderr.on('data', (b: Buffer) => (out += b.toString()));
      const exited = new Promise<number | null>((r) => script.on('exit', (code) => r(code)));
      try {
        const t0 = Date.now();
        await eventually(() => out.includes('Ctrl-C stops the cluster'), 'the cluster to run', 90_000);
        const toRunning = Date.now() - t0;
        const text = out.replace(ANSI, '');
        expect(text).toMatch(/network and firewall \(\d+(\.\d)? m?s\)/);
        expect(text).toMatch(/scheduler ready, workers registering \(\d+(\.\d)? m?s\): 2 \/ 2 workers registered/);
        expect(text).toMatch(/check the user-data: not needed/);
        expect(out).toMatch(/\x1b\[\d*A/); // redrawn in place
        expect(text).not.toMatch(/^ {2}ready done \(/m); // no plain lines on a terminal
        expect(text).toMatch(/client config in .*\/client: DASK_CONFIG=/);
        process.kill(Number((await readFile(pidFile, 'utf8')).trim()), 'SIGINT');
        let timer: NodeJS.Timeout | undefined;
        const code = await Promise.race([exited, new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), 3 * toRunning)))]);
        clearTimeout(timer);
        expect(code, out).toBe(0);
        expect(out).toContain('closed');
      } finally {
        if (script.exitCode === null) script.kill('SIGKILL');
      }
    },
    120_000,
  );
});

// START_PHASES is the order the cluster runs them: a phase missing there would never get a row.
it('the live list has a row for every phase of a start', () => {
  expect(START_PHASES).toEqual(['credentials', 'validate', 'preflight', 'network', 'scheduler', 'ready', 'versions']);
});
