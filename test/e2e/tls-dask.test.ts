/**
 * Generated TLS material against real Dask: a scheduler and a worker started from
 * `daskProcessSpec` (the one source of truth for commands) with files written to a temp dir;
 * Python clients that must compute, and clients the *scheduler* must refuse.
 *
 * Everything binds to and dials 127.0.0.1 only. Every process started here runs in its own
 * process group and is killed by that id in afterAll, whatever happened.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { baseEnv, freePort, startGroup, stopGroup, writeFiles, type Started } from '../helpers/procs';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { Security, type TlsRole } from '../../src/security';
import { createCa, issueLeaf, validityWindow } from '../../src/security/generate';
import { daskProcessSpec, protocolFor } from '../../src/dask/command';
import { have, pythonWithDask, realDask } from '../helpers/prereq';

const enabled = have(realDask());
const WAIT_MS = 60_000;
const DAY = 24 * 60 * 60 * 1000;

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'dc-tls-e2e-'));
const home = path.join(root, 'home');
fs.mkdirSync(home);

const started: Started[] = [];

afterAll(async () => {
  await Promise.all(started.map(stopGroup));
  fs.rmSync(root, { recursive: true, force: true });
});

function startDask(name: string, args: string[], env: Record<string, string>): Started {
  const s = startGroup(name, pythonWithDask()!, ['-m', 'dask', ...args], home, env);
  started.push(s);
  return s;
}

async function waitForOutput(p: Started, re: RegExp): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  while (!re.test(p.output())) {
    if (p.proc.exitCode !== null) throw new Error(`${p.name} exited with ${p.proc.exitCode} before printing ${re}:\n${p.output()}`);
    if (Date.now() > deadline) throw new Error(`${p.name}: no ${re} within ${WAIT_MS} ms:\n${p.output()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

interface Cluster {
  address: string;
  dir: string;
  scheduler: Started;
  worker: Started;
}

/** One scheduler and one worker with the given security, everything on 127.0.0.1. */
async function startCluster(name: string, security: Security | false): Promise<Cluster> {
  const dir = path.join(root, name);
  const [port, dashboard] = await Promise.all([freePort(), freePort()]);
  const sSpec = daskProcessSpec({
    role: 'scheduler',
    security,
    tlsDir: path.join(dir, 'scheduler'),
    host: '127.0.0.1',
    port,
    dashboardAddress: `127.0.0.1:${dashboard}`,
  });
  writeFiles(sSpec.files);
  const scheduler = startDask(`${name}-scheduler`, sSpec.args, sSpec.env);
  await waitForOutput(scheduler, /Scheduler at:\s+\w+:\/\/127\.0\.0\.1:\d+/);
  const address = `${protocolFor(security)}://127.0.0.1:${port}`;
  const wSpec = daskProcessSpec({
    role: 'worker',
    security,
    tlsDir: path.join(dir, 'worker'),
    schedulerAddress: address,
    host: '127.0.0.1',
    name: `${name}-w1`,
    nthreads: 1,
  });
  writeFiles(wSpec.files);
  const worker = startDask(`${name}-worker`, wSpec.args, wSpec.env);
  await waitForOutput(worker, /Registered to:/);
  return { address, dir, scheduler, worker };
}

interface PyResult {
  code: number | null;
  stdout: string;
  stderr: string;
  json: Record<string, unknown>;
}

function python(script: string, arg: unknown, env: Record<string, string> = {}, timeoutMs = 45_000): Promise<PyResult> {
  return new Promise((resolve) => {
    execFile(
      pythonWithDask()!,
      ['-c', script, JSON.stringify(arg)],
      { env: baseEnv(home, env), timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 4 << 20 },
      (err, stdout, stderr) => {
        const last = stdout.trim().split('\n').pop() ?? '';
        let json: Record<string, unknown> = {};
        try {
          json = JSON.parse(last);
        } catch {
          json = { unparsable: last };
        }
        resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr, json });
      },
    );
  });
}

/** A Dask Client that submits x+1. `address` null → taken from Dask config (DASK_CONFIG). */
const CLIENT_PY = `
import json, sys
from distributed import Client
from distributed.security import Security
a = json.loads(sys.argv[1])
kw = {}
if a.get('security'):
    kw['security'] = Security(**a['security'])
try:
    with Client(a.get('address'), timeout='10s', **kw) as c:
        r = c.submit(lambda x: x + 1, 1).result(timeout=30)
        n = len(c.scheduler_info()['workers'])
    print(json.dumps({'ok': True, 'result': r, 'workers': n}))
except Exception as e:
    print(json.dumps({'ok': False, 'error': type(e).__name__ + ': ' + str(e)}))
`;

/**
 * A raw TLS client (Python ssl) that reports how far it got: handshake, then whether the Dask
 * server's own handshake message arrived. Only that arrival means "accepted": with TLS 1.3 a
 * refused client certificate shows up on the first read, not in the handshake.
 * mode 'tls11' allows only TLS 1.0/1.1 on the client (with SECLEVEL=0 so that the *client* can
 * speak it); 'control11' first proves that against a local server that accepts TLS 1.1.
 */
const PROBE_PY = `
import json, socket, ssl, sys, threading
a = json.loads(sys.argv[1])
res = {}
def client_ctx():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(a['ca'])
    if a.get('cert'):
        ctx.load_cert_chain(a['cert'], a['key'])
    if a.get('strict'):
        ctx.verify_flags |= ssl.VERIFY_X509_STRICT | getattr(ssl, 'VERIFY_X509_PARTIAL_CHAIN', 0)
    if a.get('tls11'):
        ctx.set_ciphers('DEFAULT:@SECLEVEL=0')
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    return ctx
def probe(port):
    out = {}
    try:
        ctx = client_ctx()
        out['strict'] = bool(ctx.verify_flags & ssl.VERIFY_X509_STRICT)
        raw = socket.create_connection(('127.0.0.1', port), timeout=10)
        s = ctx.wrap_socket(raw)
        out['handshake'] = True
        out['version'] = s.version()
        data = b''
        while len(data) < 8:
            chunk = s.recv(8 - len(data))
            if not chunk:
                break
            data += chunk
        out['received'] = len(data)
        s.close()
    except ssl.SSLError as e:
        out['error'] = 'SSLError ' + str(e.reason)
    except OSError as e:
        out['error'] = type(e).__name__ + ' ' + str(e)
    return out
if a.get('control11'):
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(a['serverCert'], a['serverKey'])
    sctx.set_ciphers('DEFAULT:@SECLEVEL=0')
    sctx.minimum_version = ssl.TLSVersion.TLSv1
    srv = socket.create_server(('127.0.0.1', 0))
    def serve():
        c, _ = srv.accept()
        try:
            s = sctx.wrap_socket(c, server_side=True)
            s.sendall(b'12345678')
            s.close()
        except Exception:
            pass
    threading.Thread(target=serve, daemon=True).start()
    res['control'] = probe(srv.getsockname()[1])
res['scheduler'] = probe(a['port'])
print(json.dumps(res))
`;

/** Plaintext to a TLS port: send a Dask-looking frame header and see whether any Dask reply comes. */
const PLAIN_PY = `
import json, socket, sys
a = json.loads(sys.argv[1])
res = {}
try:
    s = socket.create_connection(('127.0.0.1', a['port']), timeout=5)
    s.sendall(b'\\x00' * 24)
    data = s.recv(64)
    res['received'] = len(data)
except OSError as e:
    res['error'] = type(e).__name__ + ' ' + str(e)
print(json.dumps(res))
`;

function accepted(r: Record<string, unknown> | undefined): boolean {
  return r !== undefined && typeof r.received === 'number' && r.received >= 8;
}

describe.skipIf(!enabled)('mutual TLS with real Dask', () => {
  let sec: Security;
  let cluster: Cluster;
  let otherDir: string;
  const clientFiles = (dir: string) => ({ ca: path.join(dir, 'ca.pem'), cert: path.join(dir, 'client.pem'), key: path.join(dir, 'client.key') });

  beforeAll(async () => {
    sec = await Security.temporary({ clusterName: 'e2e' });
    cluster = await startCluster('tls', sec);
    // Another cluster's client material: a valid certificate from a different CA.
    const other = await Security.temporary({ clusterName: 'intruder' });
    otherDir = path.join(root, 'other-client');
    writeFiles(other.tlsFiles('client', otherDir));
  }, 2 * WAIT_MS);

  it('writes each process only its own key, 0600', () => {
    const listing = (d: string) => fs.readdirSync(path.join(cluster.dir, d)).sort();
    expect(listing('scheduler')).toEqual(['ca.pem', 'scheduler.key', 'scheduler.pem']);
    expect(listing('worker')).toEqual(['ca.pem', 'worker.key', 'worker.pem']);
    for (const [d, role] of [['scheduler', 'scheduler'], ['worker', 'worker']] as const) {
      expect(fs.statSync(path.join(cluster.dir, d, `${role}.key`)).mode & 0o777).toBe(0o600);
      expect(fs.statSync(path.join(cluster.dir, d, `${role}.pem`)).mode & 0o777).toBe(0o644);
    }
    expect(cluster.address).toMatch(/^tls:\/\/127\.0\.0\.1:\d+$/);
  });

  it('a Python Client with only DASK_CONFIG (writeClientConfig) computes', async () => {
    const written = await sec.writeClientConfig(path.join(root, 'client-config'), { schedulerAddress: cluster.address });
    expect(fs.statSync(written.keyFile).mode & 0o777).toBe(0o600);
    expect(fs.statSync(written.dir).mode & 0o777).toBe(0o700);
    const r = await python(CLIENT_PY, { address: null }, { DASK_CONFIG: written.dir });
    expect(r.json, r.stderr).toEqual({ ok: true, result: 2, workers: 1 });
  });

  it('a Python Client with explicit client credentials computes', async () => {
    const dir = path.join(root, 'explicit-client');
    writeFiles(sec.tlsFiles('client', dir));
    const f = clientFiles(dir);
    const r = await python(CLIENT_PY, {
      address: cluster.address,
      security: { tls_ca_file: f.ca, tls_client_cert: f.cert, tls_client_key: f.key, require_encryption: true },
    });
    expect(r.json, r.stderr).toEqual({ ok: true, result: 2, workers: 1 });
  });

  it('the generated chain passes Python with VERIFY_X509_STRICT (the Python 3.13 default)', async () => {
    const dir = path.join(root, 'strict-client');
    writeFiles(sec.tlsFiles('client', dir));
    const r = await python(PROBE_PY, { port: Number(cluster.address.split(':').pop()), strict: true, ...clientFiles(dir) });
    expect(r.json.scheduler, r.stderr).toMatchObject({ strict: true, handshake: true });
    expect(accepted(r.json.scheduler as Record<string, unknown>)).toBe(true);
  });

  it('the scheduler refuses a client without a certificate', async () => {
    const dir = path.join(root, 'strict-client');
    const port = Number(cluster.address.split(':').pop());
    const r = await python(PROBE_PY, { port, ca: path.join(dir, 'ca.pem') });
    const probe = r.json.scheduler as Record<string, unknown>;
    expect(accepted(probe), JSON.stringify(r.json)).toBe(false);
    expect(String(probe.error)).toMatch(/CERTIFICATE_REQUIRED|HANDSHAKE_FAILURE/);
  });

  it('the scheduler refuses a certificate from another CA', async () => {
    const port = Number(cluster.address.split(':').pop());
    // The client trusts the right CA, so only the scheduler can be the one saying no.
    const f = { ...clientFiles(otherDir), ca: path.join(cluster.dir, 'scheduler', 'ca.pem') };
    const raw = await python(PROBE_PY, { port, ...f });
    const probe = raw.json.scheduler as Record<string, unknown>;
    expect(accepted(probe), JSON.stringify(raw.json)).toBe(false);
    // An alert from the scheduler (TLS 1.3: after the client's side of the handshake completed).
    expect(String(probe.error)).toMatch(/UNKNOWN_CA|CERTIFICATE_UNKNOWN|BAD_CERTIFICATE/);

    const client = await python(CLIENT_PY, {
      address: cluster.address,
      security: { tls_ca_file: f.ca, tls_client_cert: f.cert, tls_client_key: f.key, require_encryption: true },
    });
    expect(client.json.ok, JSON.stringify(client.json)).toBe(false);
  });

  it('the scheduler refuses a plaintext tcp:// client', async () => {
    const port = Number(cluster.address.split(':').pop());
    const client = await python(CLIENT_PY, { address: `tcp://127.0.0.1:${port}` });
    expect(client.json.ok, JSON.stringify(client.json)).toBe(false);
    const raw = await python(PLAIN_PY, { port });
    // Either the server hangs up or stays silent: it never answers in plaintext.
    expect((raw.json.received as number | undefined) ?? 0).toBe(0);
  });

  it('the scheduler refuses TLS 1.1 (the client side is shown able to speak it)', async () => {
    const port = Number(cluster.address.split(':').pop());
    const dir = path.join(root, 'strict-client');
    const r = await python(PROBE_PY, {
      port,
      tls11: true,
      control11: true,
      serverCert: path.join(cluster.dir, 'scheduler', 'scheduler.pem'),
      serverKey: path.join(cluster.dir, 'scheduler', 'scheduler.key'),
      ...clientFiles(dir),
    });
    expect(r.json.control, JSON.stringify(r.json)).toMatchObject({ handshake: true, version: 'TLSv1.1', received: 8 });
    const probe = r.json.scheduler as Record<string, unknown>;
    expect(probe.handshake).toBeUndefined();
    // An alert *from the server*: it received our TLS 1.1 ClientHello and said no.
    expect(String(probe.error)).toMatch(/TLSV1_ALERT_PROTOCOL_VERSION/);
  });

  it('the cluster still serves a good client after the refusals', async () => {
    const r = await python(CLIENT_PY, { address: null }, { DASK_CONFIG: path.join(root, 'client-config') });
    expect(r.json, r.stderr).toEqual({ ok: true, result: 2, workers: 1 });
    expect(cluster.scheduler.proc.exitCode).toBeNull();
    expect(cluster.worker.proc.exitCode).toBeNull();
  });
});

describe.skipIf(!enabled)('expired client certificate against real Dask', () => {
  let cluster: Cluster;
  let goodDir: string;
  let expiredDir: string;

  beforeAll(async () => {
    // temporary() drops its CA key, so this cluster's material comes from the same minting
    // functions with the CA kept for one extra, expired, client certificate.
    const now = Date.now();
    const opts = { keyAlgorithm: 'ecdsa-p256' as const, validity: validityWindow(1, 5, now), clusterName: 'expiry' };
    const ca = await createCa(opts);
    const leaves = {} as Record<TlsRole, { certPem: string; keyPem: string }>;
    for (const role of ['scheduler', 'worker', 'client'] as const) leaves[role] = await issueLeaf(ca, role, opts);
    const expired = await issueLeaf(ca, 'client', {
      keyAlgorithm: 'ecdsa-p256',
      validity: { notBefore: new Date(now - 3 * DAY), notAfter: new Date(now - DAY) },
    });
    const sec = Security.fromPem({
      tlsCa: ca.certPem,
      tlsSchedulerCert: leaves.scheduler.certPem,
      tlsSchedulerKey: leaves.scheduler.keyPem,
      tlsWorkerCert: leaves.worker.certPem,
      tlsWorkerKey: leaves.worker.keyPem,
      tlsClientCert: leaves.client.certPem,
      tlsClientKey: leaves.client.keyPem,
    });
    cluster = await startCluster('expiry', sec);
    goodDir = path.join(root, 'expiry-good');
    writeFiles(sec.tlsFiles('client', goodDir));
    expiredDir = path.join(root, 'expiry-expired');
    writeFiles([
      { path: path.join(expiredDir, 'ca.pem'), content: ca.certPem, mode: '0644' },
      { path: path.join(expiredDir, 'client.pem'), content: expired.certPem, mode: '0644' },
      { path: path.join(expiredDir, 'client.key'), content: expired.keyPem, mode: '0600' },
    ]);
  }, 2 * WAIT_MS);

  const creds = (dir: string) => ({
    tls_ca_file: path.join(dir, 'ca.pem'),
    tls_client_cert: path.join(dir, 'client.pem'),
    tls_client_key: path.join(dir, 'client.key'),
    require_encryption: true,
  });

  it('a valid client certificate from the same CA computes', async () => {
    const r = await python(CLIENT_PY, { address: cluster.address, security: creds(goodDir) });
    expect(r.json, r.stderr).toEqual({ ok: true, result: 2, workers: 1 });
  });

  it('the scheduler refuses the expired one', async () => {
    const port = Number(cluster.address.split(':').pop());
    const raw = await python(PROBE_PY, {
      port,
      ca: path.join(expiredDir, 'ca.pem'),
      cert: path.join(expiredDir, 'client.pem'),
      key: path.join(expiredDir, 'client.key'),
    });
    const probe = raw.json.scheduler as Record<string, unknown>;
    expect(accepted(probe), JSON.stringify(raw.json)).toBe(false);
    expect(String(probe.error)).toMatch(/CERTIFICATE_EXPIRED/);
    const client = await python(CLIENT_PY, { address: cluster.address, security: creds(expiredDir) });
    expect(client.json.ok, JSON.stringify(client.json)).toBe(false);
  });
});

describe.skipIf(!enabled)('security: false against real Dask', () => {
  let cluster: Cluster;
  beforeAll(async () => {
    cluster = await startCluster('plain', false);
  }, 2 * WAIT_MS);

  it('plain tcp:// scheduler and worker compute, with no TLS files written', async () => {
    expect(cluster.address).toMatch(/^tcp:\/\//);
    expect(fs.existsSync(path.join(cluster.dir, 'scheduler'))).toBe(false);
    const r = await python(CLIENT_PY, { address: cluster.address });
    expect(r.json, r.stderr).toEqual({ ok: true, result: 2, workers: 1 });
  });
});
