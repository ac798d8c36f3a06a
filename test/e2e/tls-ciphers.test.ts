/**
 * TLS 1.2 cipher suites, against a real Dask scheduler: with dask-cloud's defaults both sides
 * speak AEAD suites only (ECDHE with AES-GCM or ChaCha20-Poly1305).
 *
 * - The scheduler (Python's ssl, configured through `Security.env`) refuses a TLS 1.2 client that
 *   offers only a CBC suite (SHA-1 or SHA-256 MAC); a scheduler told to allow one (the control)
 *   accepts the same client, so the refusal is the cipher setting's doing.
 * - Our client side (DaskComm, `clientTlsOptions()`) refuses a server that offers only a CBC
 *   suite; the same server with an AEAD suite is accepted (the control).
 *
 * Everything binds to and dials 127.0.0.1 only; every process is killed by its group id.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../src/net';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { DEFAULT_TLS12_CIPHERS, Security } from '../../src/security';
import { daskProcessSpec } from '../../src/dask/command';
import { SchedulerClient } from '../../src/dask';
import { encodeFrames } from '../../src/dask/frames';
import { encodeMessage } from '../../src/dask/protocol';
import { DaskCloudError } from '../../src/errors';
import { have, pythonWithDask, realDask } from '../helpers/prereq';

const enabled = have(realDask());
/** Bound of every wait here; the outcomes themselves arrive in milliseconds. */
const WAIT_MS = 60_000;
const CBC_SHA1 = 'ECDHE-ECDSA-AES128-SHA';
const CBC_SHA256 = 'ECDHE-ECDSA-AES128-SHA256';
const AEAD = 'ECDHE-ECDSA-AES128-GCM-SHA256';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'dc-tls-ciphers-'));
const procs: ChildProcess[] = [];

afterAll(async () => {
  for (const p of procs) {
    if (p.pid === undefined) continue;
    try {
      process.kill(-p.pid, 'SIGKILL'); // the group we created with `detached: true`
    } catch {
      /* already gone */
    }
  }
  fs.rmSync(root, { recursive: true, force: true });
});

/** A real `dask scheduler` on 127.0.0.1, launched from the same spec LocalCluster and the VMs use. */
async function startScheduler(name: string, security: Security): Promise<number> {
  const port = await freePort();
  const spec = daskProcessSpec({ role: 'scheduler', security, tlsDir: path.join(root, name), host: '127.0.0.1', port, dashboardAddress: false });
  for (const f of spec.files) {
    fs.mkdirSync(path.dirname(f.path), { recursive: true, mode: 0o700 });
    fs.writeFileSync(f.path, f.content, { mode: Number.parseInt(f.mode, 8) });
  }
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: root, PYTHONWARNINGS: 'ignore', ...spec.env };
  const proc = spawn(pythonWithDask()!, ['-m', 'dask', ...spec.args], { env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  procs.push(proc);
  let out = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  const deadline = Date.now() + WAIT_MS;
  while (!/Scheduler at:\s+tls:\/\/127\.0\.0\.1:\d+/.test(out)) {
    if (proc.exitCode !== null) throw new Error(`${name} exited with ${proc.exitCode}:\n${out}`);
    if (Date.now() > deadline) throw new Error(`${name} did not start within ${WAIT_MS} ms:\n${out}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return port;
}

type Outcome = { ok: true; cipher: string; protocol: string | null } | { ok: false; error: string };

/** A raw TLS 1.2 client with the cluster's client certificate, offering only `ciphers`. */
function probe(port: number, security: Security, ciphers: string): Promise<Outcome> {
  return new Promise((resolve) => {
    const o = security.clientTlsOptions();
    const sock = tls.connect({
      host: '127.0.0.1',
      port,
      ca: o.ca,
      cert: o.cert,
      key: o.key,
      minVersion: 'TLSv1.2',
      maxVersion: 'TLSv1.2',
      ciphers,
      checkServerIdentity: () => undefined,
    });
    const timer = setTimeout(() => finish({ ok: false, error: `no outcome within ${WAIT_MS} ms` }), WAIT_MS);
    const finish = (r: Outcome) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(r);
    };
    sock.once('secureConnect', () => finish({ ok: true, cipher: sock.getCipher().name, protocol: sock.getProtocol() }));
    sock.once('error', (err) => finish({ ok: false, error: err.message }));
  });
}

describe.runIf(enabled)('TLS 1.2 ciphers against a real Dask scheduler', () => {
  let strict: Security;
  let strictPort: number;
  let loose: Security;
  let loosePort: number;

  beforeAll(async () => {
    // Default ciphers; the control allows one CBC-SHA1 suite besides AEAD ones.
    strict = await Security.temporary({ clusterName: 'strict' });
    loose = await Security.temporary({ clusterName: 'loose', tlsCiphers: `${CBC_SHA1}:ECDHE+AESGCM` });
    [strictPort, loosePort] = await Promise.all([startScheduler('strict', strict), startScheduler('loose', loose)]);
  }, 2 * WAIT_MS);

  it('the default ships an explicit AEAD-only list to Dask', () => {
    expect(strict.env('scheduler', '/t').DASK_DISTRIBUTED__COMM__TLS__CIPHERS).toBe(DEFAULT_TLS12_CIPHERS);
    expect(DEFAULT_TLS12_CIPHERS.split(':').every((c) => /^ECDHE-(ECDSA|RSA)-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)$/.test(c))).toBe(true);
  });

  it('the scheduler refuses a TLS 1.2 client offering only CBC-SHA1 (or CBC-SHA256), and accepts AEAD', async () => {
    const sha1 = await probe(strictPort, strict, CBC_SHA1);
    expect(sha1.ok, JSON.stringify(sha1)).toBe(false);
    expect((sha1 as { error: string }).error).toMatch(/handshake failure|no shared cipher/i);
    // Python's own default would take this one (it only drops SHA-1): the explicit list does not.
    const sha256 = await probe(strictPort, strict, CBC_SHA256);
    expect(sha256.ok, JSON.stringify(sha256)).toBe(false);
    const aead = await probe(strictPort, strict, AEAD);
    expect(aead).toEqual({ ok: true, cipher: AEAD, protocol: 'TLSv1.2' });
  });

  it('control: a scheduler told to allow CBC-SHA1 accepts the same client', async () => {
    expect(await probe(loosePort, loose, CBC_SHA1)).toEqual({ ok: true, cipher: CBC_SHA1, protocol: 'TLSv1.2' });
  });

  it('our client negotiates an AEAD suite with the scheduler under TLS 1.2', async () => {
    const capped = await Security.temporary({ clusterName: 'capped', tlsMaxVersion: '1.2' });
    const port = await startScheduler('capped', capped);
    const client = await SchedulerClient.connect(`tls://127.0.0.1:${port}`, { security: capped, timeoutMs: WAIT_MS });
    try {
      expect(client.tlsInfo?.protocol).toBe('TLSv1.2');
      expect(DEFAULT_TLS12_CIPHERS.split(':')).toContain(client.tlsInfo?.cipher);
      expect((await client.identity()).type).toBe('Scheduler');
    } finally {
      await client.close();
    }
  });
});

describe('our client side refuses a server that offers only CBC under TLS 1.2', () => {
  /** A TLS 1.2 server holding the scheduler's certificate, offering only `ciphers`, answering Dask's handshake. */
  async function server(security: Security, ciphers: string): Promise<{ port: number; accepted: () => number; close: () => Promise<void> }> {
    const key = security.tlsFiles('scheduler', '/s').find((f) => f.path.endsWith('.key'))!.content;
    let accepted = 0;
    const sockets = new Set<net.Socket>();
    const srv = tls.createServer({
      ca: security.caCertPem,
      cert: security.certPem('scheduler'),
      key,
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: 'TLSv1.2',
      maxVersion: 'TLSv1.2',
      ciphers,
    });
    srv.on('connection', (sock) => {
      sockets.add(sock);
      sock.on('close', () => sockets.delete(sock));
    });
    srv.on('secureConnection', (sock) => {
      accepted++;
      // What a Dask server sends first: the client's connect completes on it.
      sock.write(encodeFrames(encodeMessage({ compression: null, python: [3, 11, 2], 'pickle-protocol': 5 })));
      sock.on('error', () => undefined);
    });
    srv.on('tlsClientError', () => undefined);
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    return {
      port: (srv.address() as net.AddressInfo).port,
      accepted: () => accepted,
      close: () =>
        new Promise<void>((r) => {
          srv.close(() => r());
          // close() waits for open connections: end ours.
          for (const sock of sockets) sock.destroy();
        }),
    };
  }

  it('SchedulerClient.connect fails with a typed error against CBC-SHA1 only; the AEAD control connects', async () => {
    const security = await Security.temporary();
    const cbc = await server(security, CBC_SHA1);
    const aead = await server(security, AEAD);
    try {
      const err = await SchedulerClient.connect(`tls://127.0.0.1:${cbc.port}`, { security, timeoutMs: WAIT_MS }).then(
        (c) => c.close().then(() => undefined),
        (e: unknown) => e,
      );
      expect(DaskCloudError.isInstance(err), String(err)).toBe(true);
      expect((err as DaskCloudError).message).toMatch(/cipher|handshake/i);
      expect(cbc.accepted()).toBe(0);

      const client = await SchedulerClient.connect(`tls://127.0.0.1:${aead.port}`, { security, timeoutMs: WAIT_MS });
      expect(client.tlsInfo).toEqual({ protocol: 'TLSv1.2', cipher: AEAD });
      await client.close();
      expect(aead.accepted()).toBe(1);
    } finally {
      await Promise.all([cbc.close(), aead.close()]);
    }
  });

  it('clientTlsOptions() carries the same refusal to a caller using node:tls directly', async () => {
    const security = await Security.temporary();
    const cbc = await server(security, CBC_SHA1);
    try {
      const outcome = await new Promise<string>((resolve) => {
        const sock = tls.connect({ host: '127.0.0.1', port: cbc.port, ...security.clientTlsOptions(), maxVersion: 'TLSv1.2', checkServerIdentity: () => undefined });
        sock.once('secureConnect', () => {
          sock.destroy();
          resolve('connected');
        });
        sock.once('error', (e) => resolve(`refused: ${e.message}`));
      });
      expect(outcome).toMatch(/^refused: .*(handshake failure|no shared cipher)/i);
      expect(cbc.accepted()).toBe(0);
    } finally {
      await cbc.close();
    }
  });
});
