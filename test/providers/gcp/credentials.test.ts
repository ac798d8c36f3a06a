/**
 * Missing or unusable Google credentials: one CredentialsError before any other call, saying how
 * to set them up and where found ones came from, and never a crash of the host process.
 *
 * The child-process tests run with no credentials anywhere. google-auth-library would look for a
 * metadata server (169.254.169.254) in that case, so the child runs in a loopback-only network
 * namespace where `unshare -rn` works, and always with GCE_METADATA_HOST pointing at a loopback
 * trap that counts every probe: nothing can leave the machine, and the test proves none is made.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CREDENTIALS_FIX, findCredentials, gcloudAdcFile, onGoogleCloud } from '../../../providers/gcp/credentials';
import { CredentialsError } from '../../../src/errors';

const root = path.resolve(__dirname, '../../..');
const fixture = path.join(__dirname, 'fixtures/no-credentials.ts');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'gcp-creds-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Whether a loopback-only network namespace can be made here (unprivileged user namespace). */
const canUnshare = spawnSync('unshare', ['-rn', 'sh', '-c', 'ip link set lo up'], { timeout: 10_000 }).status === 0;

interface ChildResult {
  code: number | null;
  stdout: string;
  stderr: string;
  line?: { error?: { class?: string; code?: string; message?: string }; report?: { ok: boolean; checks: { id: string; status: string; message: string; fix?: string; code?: string }[] }; state: string; metadataConnections: number; requests: string[] };
}

/** Runs the fixture with no credentials in its environment, in a loopback-only namespace when possible. */
function runWithoutCredentials(mode: 'start' | 'preflight'): Promise<ChildResult> {
  const home = fs.mkdtempSync(path.join(tmp, 'home-'));
  const env: NodeJS.ProcessEnv = { ...process.env, HOME: home, CLOUDSDK_CONFIG: path.join(home, 'gcloud') };
  for (const k of ['GOOGLE_APPLICATION_CREDENTIALS', 'GOOGLE_CLOUD_PROJECT', 'GCLOUD_PROJECT', 'GCE_METADATA_HOST', 'GCE_METADATA_IP', 'METADATA_SERVER_DETECTION', 'K_SERVICE', 'FUNCTION_NAME', 'FUNCTION_TARGET', 'CLOUD_RUN_JOB']) delete env[k];
  const node = [process.execPath, '--import', 'tsx', fixture, mode];
  const [cmd, args] = canUnshare ? ['unshare', ['-rn', 'sh', '-c', 'ip link set lo up && exec "$@"', 'sh', ...node]] : [node[0]!, node.slice(1)];
  return new Promise((resolve) => {
    const child = spawn(cmd as string, args as string[], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 90_000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      const json = stdout.split('\n').find((l) => l.startsWith('{'));
      resolve({ code, stdout, stderr, line: json ? (JSON.parse(json) as ChildResult['line']) : undefined });
    });
  });
}

describe('GCP without credentials (child process, no route off the machine)', () => {
  it('item 12: start() throws one CredentialsError before any call, probes no metadata server, and the process does not crash', async () => {
    const r = await runWithoutCredentials('start');
    expect(r.line, `the child printed its outcome (a crash prints none):\n${r.stderr}`).toBeDefined();
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).not.toMatch(/Could not load the default credentials|unhandled|MetadataLookupWarning/i);
    expect(r.line!.error).toMatchObject({ class: 'CredentialsError', code: 'E_CREDENTIALS' });
    expect(r.line!.error!.message).toMatch(/no Google credentials found/);
    expect(r.line!.error!.message).toContain('gcloud auth application-default login');
    expect(r.line!.error!.message).toContain('GOOGLE_APPLICATION_CREDENTIALS');
    expect(r.line!.state).toBe('failed');
    expect(r.line!.requests).toEqual([]);
    expect(r.line!.metadataConnections).toBe(0);
  }, 120_000);

  it('preflight() reports the credentials check failed with its fix, the rest skipped; no call, no metadata probe', async () => {
    const r = await runWithoutCredentials('preflight');
    expect(r.line, r.stderr).toBeDefined();
    expect(r.code, r.stderr).toBe(0);
    const checks = Object.fromEntries(r.line!.report!.checks.map((c) => [c.id, c]));
    expect(checks.credentials).toMatchObject({ status: 'fail', code: 'E_CREDENTIALS', fix: CREDENTIALS_FIX });
    expect(['location', 'image', 'network', 'nat', 'quota', 'permissions'].map((id) => checks[id]!.status)).toEqual(['skip', 'skip', 'skip', 'skip', 'skip', 'skip']);
    expect(r.line!.requests).toEqual([]);
    expect(r.line!.metadataConnections).toBe(0);
  }, 120_000);
});

describe('where credentials come from (local files and environment only)', () => {
  const noBios = path.join(tmp, 'no-bios');

  it('the authClient option, then clientOptions, then GOOGLE_APPLICATION_CREDENTIALS, then gcloud ADC, then Google Cloud', () => {
    const home = fs.mkdtempSync(path.join(tmp, 'home-'));
    const env: NodeJS.ProcessEnv = { HOME: home };
    expect(findCredentials({ authClient: {} }, env, noBios)).toEqual({ kind: 'authClient', description: 'the authClient option' });
    expect(findCredentials({ clientOptions: { credentials: { client_email: 'x', private_key: 'y' } } }, env, noBios).description).toBe('clientOptions.credentials');

    const key = path.join(tmp, 'key.json');
    // What a key file holds is never repeated: only its path and its type.
    fs.writeFileSync(key, JSON.stringify({ type: 'service_account', private_key: 'SECRET-KEY-MATERIAL', client_email: 'a@b' }));
    const fromEnv = findCredentials({}, { ...env, GOOGLE_APPLICATION_CREDENTIALS: key }, noBios);
    expect(fromEnv).toEqual({ kind: 'environment', description: `GOOGLE_APPLICATION_CREDENTIALS (${key}, service_account)` });
    expect(JSON.stringify(fromEnv)).not.toContain('SECRET');

    const adc = gcloudAdcFile(env)!;
    expect(adc).toBe(path.join(home, '.config', 'gcloud', 'application_default_credentials.json'));
    fs.mkdirSync(path.dirname(adc), { recursive: true });
    fs.writeFileSync(adc, JSON.stringify({ type: 'authorized_user', refresh_token: 'SECRET-REFRESH', client_secret: 'SECRET' }));
    const fromGcloud = findCredentials({}, env, noBios);
    expect(fromGcloud).toEqual({ kind: 'gcloud', description: `gcloud application-default credentials (${adc}, authorized_user)` });
    fs.rmSync(adc);

    const bios = path.join(tmp, 'bios_vendor');
    fs.writeFileSync(bios, 'Google\n');
    expect(onGoogleCloud({}, bios)).toBe(process.platform === 'linux');
    expect(onGoogleCloud({ K_SERVICE: 'svc' }, noBios)).toBe(true);
    if (process.platform === 'linux') expect(findCredentials({}, env, bios)).toEqual({ kind: 'metadata', description: 'the metadata server (this machine runs on Google Cloud)' });
  });

  it('nothing anywhere, an unreadable or a malformed key file: a CredentialsError with the fix, naming the place', () => {
    const home = fs.mkdtempSync(path.join(tmp, 'home-'));
    const none = (() => {
      try {
        findCredentials({}, { HOME: home }, noBios);
      } catch (e) {
        return e as CredentialsError;
      }
      throw new Error('expected a CredentialsError');
    })();
    expect(CredentialsError.isInstance(none)).toBe(true);
    expect(none.details.fix).toBe(CREDENTIALS_FIX);
    expect(none.message).toContain(path.join(home, '.config', 'gcloud', 'application_default_credentials.json'));
    expect(none.message).toContain('no metadata server was asked');

    const bad = path.join(tmp, 'bad.json');
    fs.writeFileSync(bad, 'not json SECRET');
    expect(() => findCredentials({}, { HOME: home, GOOGLE_APPLICATION_CREDENTIALS: bad }, noBios)).toThrow(/GOOGLE_APPLICATION_CREDENTIALS names .*bad\.json, which is not a JSON credentials file$/);
    expect(() => findCredentials({}, { HOME: home, GOOGLE_APPLICATION_CREDENTIALS: path.join(tmp, 'missing.json') }, noBios)).toThrow(/which cannot be read \(ENOENT\)/);
  });
});
