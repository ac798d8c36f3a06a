/**
 * The measured process of the scale benchmark: it runs only the library (or the baseline
 * strategy) against a fake that lives in the parent process, so its peak RSS is the library's.
 * The parent sends one `run` message; this process answers with `phase` messages (wall-clock
 * start/end of each step, so the parent can attribute the fake's request log to it), the
 * library's own phase events, and `done` with `process.resourceUsage().maxRSS`.
 *
 * Every step is bounded by a timeout; after the last step (or a failure) the cluster is closed.
 */
const rssAtStartKb = Math.round(process.memoryUsage().rss / 1024);
import 'reflect-metadata';
import { installNetworkGuard, refused } from './guard';
import type { ChildTarget } from './clouds';
import { loadLibrary } from './lib';

installNetworkGuard();
// The parent holds the fake: without it there is nothing left to measure or to clean up.
process.on('disconnect', () => process.exit(1));

export interface ChildConfig {
  mode: 'library' | 'baseline';
  target: ChildTarget;
  n: number;
  /** The simulated boot delay (for timeouts only). */
  bootMs: number;
  /** Upper bound of one step (start, a scale, close). */
  stepTimeoutMs: number;
  /** Skip the scale-down/up steps. */
  noScale?: boolean;
  /** Root of the library version measured (see lib.ts). */
  libRoot: string;
  /** Load the built package (`dist/<cloud>.js` under libRoot), as users get it, instead of the sources. */
  built?: boolean;
}

export type ChildMessage =
  | { type: 'phase'; name: string; start: number; end: number; ok: boolean; error?: string; detail?: Record<string, unknown>; peakRssKb?: number }
  | { type: 'events'; phases: { phase: string; start: number; end?: number }[]; warnings: string[]; pacing: string[] }
  | { type: 'done'; maxRssKb: number; rssAfterImportKb: number; rssAtStartKb: number; refused: string[] };

function send(m: ChildMessage): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send) return resolve();
    process.send(m, undefined, {}, () => resolve());
  });
}

export function errorText(err: unknown): string {
  const e = err as Error & { code?: string };
  const text = e instanceof Error ? `${e.code ? `${e.code}: ` : ''}${e.message}` : String(err);
  return text.length > 600 ? `${text.slice(0, 600)}…` : text;
}

/**
 * The highest RSS sampled (every 50 ms) since the last `takePeak()`: which step needs the memory.
 * The process's own maxRSS (reported at the end) is the exact peak; this one can miss a spike
 * shorter than a sample.
 */
let peakKb = 0;
const sampleRss = () => {
  peakKb = Math.max(peakKb, Math.round(process.memoryUsage().rss / 1024));
};
setInterval(sampleRss, 50).unref();
function takePeak(): number {
  sampleRss();
  const p = peakKb;
  peakKb = 0;
  return p;
}

/** Runs `fn` within `ms`, reporting it as phase `name`. Resolves with its result or undefined. */
export async function step<T>(name: string, ms: number, fn: () => Promise<T>, detail?: (r: T) => Record<string, unknown>): Promise<{ ok: boolean; value?: T; error?: string }> {
  const start = Date.now();
  takePeak();
  let timer: NodeJS.Timeout | undefined;
  try {
    const value = await Promise.race([
      fn(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
      }),
    ]);
    await send({ type: 'phase', name, start, end: Date.now(), ok: true, peakRssKb: takePeak(), ...(detail ? { detail: detail(value) } : {}) });
    return { ok: true, value };
  } catch (err) {
    const error = errorText(err);
    await send({ type: 'phase', name, start, end: Date.now(), ok: false, error, peakRssKb: takePeak() });
    return { ok: false, error };
  } finally {
    if (timer) clearTimeout(timer);
  }
}

interface LibraryCluster {
  start(): Promise<unknown>;
  scale(n: number): Promise<void>;
  waitForWorkers(n: number, o?: { timeoutMs?: number }): Promise<unknown[]>;
  close(): Promise<void>;
}

type EventSink = (event: { type: string; phase?: string; at?: number; durationMs?: number; message?: string; code?: string }) => void;

async function makeCluster(t: ChildTarget, n: number, timeoutMs: number, onEvent: EventSink, root: string, built: boolean): Promise<LibraryCluster> {
  const load = <T>(rel: string, entry: string): T => (built ? loadLibrary<T>(root, `dist/${entry}.js`) : loadLibrary<T>(root, rel));
  const common = { nWorkers: n, onEvent: onEvent as never, schedulerTimeoutMs: timeoutMs, workersTimeoutMs: timeoutMs };
  switch (t.cloud) {
    case 'gcp': {
      const { GCPCluster } = load<typeof import('../../providers/gcp')>('providers/gcp', 'gcp');
      const { OAuth2Client } = await import('google-auth-library');
      const authClient = new OAuth2Client();
      authClient.setCredentials({ access_token: 'fake-gcp-token', expiry_date: Date.now() + 365 * 24 * 3_600_000 });
      return new GCPCluster({ ...common, projectId: t.project, zone: t.zone, endpoint: { apiEndpoint: '127.0.0.1', port: t.port, protocol: 'http' }, authClient: authClient as never });
    }
    case 'ec2': {
      const { EC2Cluster } = load<typeof import('../../providers/ec2')>('providers/ec2', 'ec2');
      return new EC2Cluster({ ...common, region: t.region, endpoint: t.endpoint, credentials: t.credentials });
    }
    case 'digitalocean': {
      const { DropletCluster } = load<typeof import('../../providers/digitalocean')>('providers/digitalocean', 'digitalocean');
      return new DropletCluster({ ...common, token: t.token, endpoint: t.endpoint });
    }
  }
}

async function runLibrary(cfg: ChildConfig): Promise<number> {
  const phases: { phase: string; start: number; end?: number }[] = [];
  const warnings: string[] = [];
  const pacing: string[] = [];
  const onEvent: EventSink = (e) => {
    if (e.type === 'phase-start' && e.phase) phases.push({ phase: e.phase, start: e.at ?? Date.now() });
    else if (e.type === 'phase-end' && e.phase) {
      const open = [...phases].reverse().find((p) => p.phase === e.phase && p.end === undefined);
      if (open) open.end = e.at ?? Date.now();
    } else if (e.type === 'warning') warnings.push(`${e.code ?? ''} ${e.message ?? ''}`.trim());
    else if (e.type === 'pacing') pacing.push(e.message ?? JSON.stringify(e));
  };
  const waitMs = cfg.stepTimeoutMs;
  let rssAfterImportKb = 0;
  let cluster: LibraryCluster | undefined;
  const made = await step('construct', 60_000, async () => {
    cluster = await makeCluster(cfg.target, cfg.n, waitMs, onEvent, cfg.libRoot, cfg.built === true);
    rssAfterImportKb = Math.round(process.memoryUsage().rss / 1024);
  });
  if (made.ok && cluster) {
    const c = cluster;
    const started = await step('start', waitMs, () => c.start());
    if (started.ok && !cfg.noScale) {
      const half = Math.floor(cfg.n / 2);
      const down = await step('scale-down', waitMs, () => c.scale(half));
      if (down.ok) {
        const up = await step('scale-up', waitMs, () => c.scale(cfg.n));
        if (up.ok) await step('up-ready', waitMs, () => c.waitForWorkers(cfg.n, { timeoutMs: waitMs }), (w) => ({ workers: w.length }));
      }
    }
    await step('close', waitMs, () => c.close());
  }
  await send({ type: 'events', phases, warnings: [...new Set(warnings)].slice(0, 20), pacing: [pacing.length ? `${pacing.length} pacing events; first: ${pacing[0]}; last: ${pacing[pacing.length - 1]}` : ''].filter(Boolean) });
  return rssAfterImportKb;
}

process.once('message', (msg: { type: 'run'; cfg: ChildConfig }) => {
  void (async () => {
    let rssAfterImportKb = 0;
    try {
      if (msg.cfg.mode === 'baseline') {
        const { runBaseline } = await import('./baseline');
        rssAfterImportKb = await runBaseline(msg.cfg, step);
      } else {
        rssAfterImportKb = await runLibrary(msg.cfg);
      }
    } catch (err) {
      await send({ type: 'phase', name: 'harness', start: Date.now(), end: Date.now(), ok: false, error: errorText(err) });
    }
    await send({ type: 'done', maxRssKb: process.resourceUsage().maxRSS, rssAfterImportKb, rssAtStartKb, refused: [...refused] });
    process.exit(0);
  })();
});
