/**
 * A real browser for tests: Debian's Chromium, headless, loads one URL and returns the DOM after
 * its scripts ran (`--dump-dom` with `--virtual-time-budget`), optionally writing a screenshot.
 *
 * Network safety: Chromium talks to Google's hosts on its own (update checks, time, accounts;
 * even with --disable-background-networking), and pages name CDNs (Dask's info pages load their
 * CSS from cdnjs). So every run gets its own proxy on 127.0.0.1, a sinkhole that records the first
 * line of each request and closes it, and a resolver that answers nothing but loopback names.
 * Chromium bypasses proxies for loopback addresses by default, so only pages on 127.0.0.1 load;
 * everything else ends at the sinkhole and is reported in `blocked`, never leaving the machine.
 *
 * Chromium runs in its own process group, killed by that id (SIGKILL) when the run is over or its
 * time is up, whatever happened: it forks a zygote, a GPU process and renderers.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Prereq } from './prereq';

/** Where Debian's `chromium` package puts the browser (DASK_CLOUD_CHROMIUM overrides it). */
export const CHROMIUM = process.env.DASK_CLOUD_CHROMIUM || '/usr/bin/chromium';

export const chromium = (): Prereq => ({
  ok: existsSync(CHROMIUM),
  reason: `no Chromium at ${CHROMIUM}; install Debian's with \`apt-get install -y --no-install-recommends chromium\` (~25 s, 25 packages, ~414 MB)`,
});

export interface LoadPageOptions {
  /** Virtual time the page's scripts get before the DOM is taken, in ms. Default 5 000. */
  virtualTimeBudgetMs?: number;
  /** Kill Chromium when it has not finished after this, in ms. Default 60 000. */
  timeoutMs?: number;
  /** Also write a PNG screenshot here. */
  screenshot?: string;
  /** Viewport for the screenshot. Default 1280x900. */
  windowSize?: { width: number; height: number };
}

export interface LoadedPage {
  /** The serialised DOM after the virtual time budget. */
  dom: string;
  /** The screenshot written, when one was asked for and Chromium wrote it. */
  screenshot?: string;
  /** First request lines that went for anything other than loopback and were stopped at the sinkhole. */
  blocked: string[];
  /** Chromium's stderr (its own diagnostics). */
  stderr: string;
}

/** A proxy on 127.0.0.1 that accepts, notes the request line, and hangs up. */
async function sinkhole(): Promise<{ port: number; blocked: string[]; close(): Promise<void> }> {
  const blocked: string[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    socket.setTimeout(5_000, () => socket.destroy());
    socket.once('data', (chunk: Buffer) => {
      blocked.push(chunk.toString('latin1').split('\r\n')[0].replace(/\?.*(?= HTTP)/, '?…'));
      socket.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    blocked,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/**
 * Loads `url` (which must be on 127.0.0.1 or localhost) in headless Chromium and returns its DOM.
 * Throws when Chromium exits non-zero or does not finish within `timeoutMs`.
 */
export async function loadPage(url: string, options: LoadPageOptions = {}): Promise<LoadedPage> {
  const host = new URL(url).hostname;
  if (host !== '127.0.0.1' && host !== 'localhost' && host !== '[::1]') throw new Error(`loadPage only loads loopback pages, not ${url}`);
  const budget = options.virtualTimeBudgetMs ?? 5_000;
  const timeoutMs = options.timeoutMs ?? 60_000;
  const size = options.windowSize ?? { width: 1280, height: 900 };
  const profile = mkdtempSync(path.join(os.tmpdir(), 'dc-chromium-'));
  const sink = await sinkhole();
  const args = [
    '--headless',
    // Tests run as root, where Chromium's sandbox cannot start.
    '--no-sandbox',
    '--disable-gpu',
    '--disable-dev-shm-usage',
    '--disable-quic',
    '--no-first-run',
    '--no-default-browser-check',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--disable-default-apps',
    '--disable-extensions',
    '--disable-breakpad',
    `--user-data-dir=${profile}`,
    // Everything that is not loopback goes to the sinkhole, IP literals included (see the module doc).
    `--proxy-server=http://127.0.0.1:${sink.port}`,
    '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1',
    `--virtual-time-budget=${budget}`,
    `--window-size=${size.width},${size.height}`,
    ...(options.screenshot ? [`--screenshot=${options.screenshot}`] : []),
    '--dump-dom',
    url,
  ];
  const child = spawn(CHROMIUM, args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, DBUS_SESSION_BUS_ADDRESS: 'disabled:' } });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  const killGroup = (): void => {
    if (child.pid === undefined) return;
    try {
      process.kill(-child.pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  };
  let timer: NodeJS.Timeout | undefined;
  try {
    const result = await Promise.race([
      new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
        child.once('error', reject);
        child.once('close', (code, signal) => resolve({ code, signal }));
      }),
      new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), timeoutMs))),
    ]);
    if (result === 'timeout') throw new Error(`Chromium did not finish loading ${url} within ${timeoutMs} ms; stderr:\n${stderr.slice(-4_000)}`);
    if (result.code !== 0) throw new Error(`Chromium exited with ${result.code ?? result.signal} loading ${url}; stderr:\n${stderr.slice(-4_000)}`);
    const shot = options.screenshot && existsSync(options.screenshot) ? options.screenshot : undefined;
    return { dom: stdout, screenshot: shot, blocked: [...sink.blocked], stderr };
  } finally {
    clearTimeout(timer);
    // Renderers or the zygote may outlive the browser process: the whole group goes.
    killGroup();
    await sink.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

/** Where a test keeps a screenshot after the run (its path is printed in the test output). */
export function screenshotPath(name: string): string {
  const dir = path.join(os.tmpdir(), 'dask-cloud-screenshots');
  fs.mkdirSync(dir, { recursive: true });
  return path.join(dir, `${name}-${Date.now()}.png`);
}
