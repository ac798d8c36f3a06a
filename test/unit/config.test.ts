/**
 * Option resolution: defaults < config file < DASK_CLOUD_* environment < constructor options,
 * with bad values caught by the same validation as constructor options, before any cloud call.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { configFilePath, resolveOptions, toEnvName } from '../../src/config';
import { ValidationError } from '../../src/errors';
import { LocalCluster } from '../../providers/local';
import { EC2Cluster } from '../../providers/ec2';

const dir = mkdtempSync(path.join(os.tmpdir(), 'dc-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function configFile(text: string): string {
  const file = path.join(dir, `c${Math.random().toString(16).slice(2)}.yaml`);
  writeFileSync(file, text);
  return file;
}

describe('resolveOptions', () => {
  it('layers the file, then the environment, then the caller, the kind section over the shared one', () => {
    const file = configFile('cluster:\n  nWorkers: 4\n  idleTimeout: 2 hours\n  name: shared\ngcp:\n  zone: europe-west4-a\n  name: fromgcp\nec2:\n  region: eu-west-1\n');
    const env = { DASK_CLOUD_CONFIG: file, DASK_CLOUD_N_WORKERS: '6', DASK_CLOUD_GCP_PROJECT_ID: 'proj-env', DASK_CLOUD_EC2_REGION: 'us-east-2', DASK_CLOUD_INGRESS_CIDRS: '["203.0.113.0/24"]' };
    const gcp = resolveOptions('gcp', { nWorkers: 2, zone: undefined as string | undefined }, env);
    expect(gcp).toEqual({ nWorkers: 2, idleTimeout: '2 hours', name: 'fromgcp', zone: 'europe-west4-a', projectId: 'proj-env', ingressCidrs: ['203.0.113.0/24'] });
    const ec2 = resolveOptions('ec2', {}, env);
    expect(ec2).toMatchObject({ nWorkers: 6, region: 'us-east-2', name: 'shared' });
    expect(ec2).not.toHaveProperty('projectId');
  });

  it('names variables in SCREAMING_SNAKE_CASE and finds the file where XDG says', () => {
    expect(toEnvName('nWorkers')).toBe('N_WORKERS');
    expect(toEnvName('schedulerTimeoutMs')).toBe('SCHEDULER_TIMEOUT_MS');
    expect(configFilePath({ XDG_CONFIG_HOME: '/cfg' })).toBe('/cfg/dask-cloud/config.yaml');
    expect(configFilePath({ DASK_CLOUD_CONFIG: '/x.yaml' })).toBe('/x.yaml');
  });

  it('refuses secrets in a file, code-only options in the environment, unknown sections and a missing named file', () => {
    expect(() => resolveOptions('digitalocean', {}, { DASK_CLOUD_CONFIG: configFile('digitalocean:\n  token: dop_v1_secret\n') })).toThrow(/does not belong in a file/);
    expect(() => resolveOptions('local', {}, { DASK_CLOUD_CONFIG: configFile('clusters:\n  nWorkers: 1\n') })).toThrow(/unknown section "clusters"/);
    expect(() => resolveOptions('local', {}, { DASK_CLOUD_CONFIG: configFile('cluster: [1, 2]\n') })).toThrow(/must be a mapping/);
    expect(() => resolveOptions('local', {}, { DASK_CLOUD_CONFIG: path.join(dir, 'nope.yaml') })).toThrow(ValidationError);
    expect(() => resolveOptions('local', {}, { DASK_CLOUD_SECURITY: 'false' })).toThrow(/cannot be set through an environment variable/);
  });

  it('a missing default file is fine; the error message of a bad file names it', () => {
    expect(resolveOptions('local', { nWorkers: 1 }, { XDG_CONFIG_HOME: path.join(dir, 'none') })).toEqual({ nWorkers: 1 });
    const bad = configFile('cluster: {nWorkers: [\n');
    expect(() => resolveOptions('local', {}, { DASK_CLOUD_CONFIG: bad })).toThrow(new RegExp(`${bad.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is not valid YAML`));
  });
});

describe('clusters read their configuration', () => {
  it('a bad value from the environment fails the constructor like a bad option', () => {
    vi.stubEnv('DASK_CLOUD_N_WORKERS', '-3');
    try {
      expect(() => new LocalCluster()).toThrow(/nWorkers must be a non-negative integer, got -3/);
    } finally {
      vi.unstubAllEnvs();
    }
  });

  it('EC2Cluster takes its region from the config file when the caller gives none', () => {
    const file = configFile('ec2:\n  region: ap-southeast-2\n');
    vi.stubEnv('DASK_CLOUD_CONFIG', file);
    vi.stubEnv('AWS_REGION', '');
    vi.stubEnv('AWS_DEFAULT_REGION', '');
    try {
      expect(() => new EC2Cluster({ nWorkers: 1, closeOnSignals: false })).not.toThrow();
      vi.stubEnv('DASK_CLOUD_CONFIG', configFile('ec2:\n  nWorkers: 1\n'));
      expect(() => new EC2Cluster({ nWorkers: 1 })).toThrow(/region/);
    } finally {
      vi.unstubAllEnvs();
    }
  });
});
