/**
 * A cluster's local directory (src/cluster/state.ts): what is written, with which modes, what is
 * never written (env values, bootstrap commands, credentials), and that a handle's credentials
 * read back are the cluster's own.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  checkClusterId,
  clusterDir,
  clustersRoot,
  listClusterStates,
  loadClusterState,
  removeClusterState,
  saveClusterState,
  savableOptions,
  type ClusterRecord,
} from '../../src/cluster/state';
import { DaskCloudError } from '../../src/errors';
import { Security } from '../../src/security';
import { have, pythonWithDask, realDask } from '../helpers/prereq';

const home = fs.mkdtempSync(path.join(os.tmpdir(), 'dc-state-'));
const env = { DASK_CLOUD_HOME: home };
afterAll(() => fs.rmSync(home, { recursive: true, force: true }));

function record(id: string, over: Partial<ClusterRecord> = {}): ClusterRecord {
  return {
    format: 1,
    id,
    kind: 'gcp',
    startedAt: new Date().toISOString(),
    schedulerAddress: 'tls://203.0.113.7:8786',
    dashboardLink: 'http://127.0.0.1:40123/status',
    tls: { requireEncryption: true, worker: true },
    options: { projectId: 'p', zone: 'europe-west4-a', nWorkers: 2 },
    envNames: ['API_TOKEN'],
    bootstrap: true,
    backend: { image: 'ghcr.io/dask/dask:2024.12.1-py3.12', expiresAt: 1_900_000_000 },
    ...over,
  };
}

describe('cluster directory', () => {
  it('lives under DASK_CLOUD_HOME, else the user config dir; ids cannot name another path', () => {
    expect(clustersRoot({ DASK_CLOUD_HOME: '/x' })).toBe('/x/clusters');
    expect(clustersRoot({ XDG_CONFIG_HOME: '/cfg' })).toBe('/cfg/dask-cloud/clusters');
    expect(clusterDir('dask-1a2b3c4d', env)).toBe(path.join(home, 'clusters', 'dask-1a2b3c4d'));
    for (const bad of ['../etc', 'dask-1a2b3c4d/..', 'Dask-1a2b3c4d', 'dask', '', 'dask-1a2b3c4z', 42]) {
      expect(() => checkClusterId(bad), String(bad)).toThrow(/is not a dask-cloud cluster id/);
    }
  });

  it('writes the client config, the worker pair and the record, private; reads the same credentials back', async () => {
    const sec = await Security.temporary();
    const dir = await saveClusterState(record('dask-00000001'), sec, env);
    expect((fs.statSync(dir).mode & 0o777).toString(8)).toBe('700');
    const modes = Object.fromEntries(fs.readdirSync(dir).map((f) => [f, (fs.statSync(path.join(dir, f)).mode & 0o777).toString(8)]));
    expect(modes).toEqual({ 'ca.pem': '644', 'client.pem': '644', 'client.key': '600', 'dask.yaml': '644', 'worker.pem': '644', 'worker.key': '600', 'cluster.record': '600' });
    // Never the scheduler's key: it is on the scheduler, and nothing here needs it.
    expect(fs.readdirSync(dir)).not.toContain('scheduler.key');
    const loaded = await loadClusterState('dask-00000001', 'gcp', env);
    const back = loaded.security as Security;
    expect(back.certPem('client')).toBe(sec.certPem('client'));
    expect(back.certPem('worker')).toBe(sec.certPem('worker'));
    expect(back.hasRole('worker')).toBe(true);
    expect(back.hasRole('scheduler')).toBe(false);
    expect(back.caCertPem).toBe(sec.caCertPem);
    expect(loaded.record).toEqual(record('dask-00000001', { startedAt: loaded.record.startedAt }));
    // A kind that does not match is refused.
    await expect(loadClusterState('dask-00000001', 'ec2', env)).rejects.toThrow(/is a gcp cluster, not ec2/);
    expect((await listClusterStates(env)).map((r) => r.id)).toContain('dask-00000001');
    await removeClusterState('dask-00000001', env);
    expect(fs.existsSync(dir)).toBe(false);
    const err = (await loadClusterState('dask-00000001', undefined, env).catch((e: unknown) => e)) as DaskCloudError;
    expect(err.code).toBe('E_NO_LOCAL_STATE');
  });

  it('a security: false cluster keeps its address only', async () => {
    const dir = await saveClusterState(record('dask-00000002', { tls: false, schedulerAddress: 'tcp://10.0.0.2:8786' }), false, env);
    expect(fs.readdirSync(dir).sort()).toEqual(['cluster.record', 'dask.yaml']);
    expect((await loadClusterState('dask-00000002', undefined, env)).security).toBe(false);
  });

  it('never saves env values, bootstrap commands, credentials or code-only objects', () => {
    const saved = savableOptions({
      nWorkers: 3,
      env: { API_TOKEN: 'planted-env-secret' },
      bootstrap: ['pip install --index-url https://u:planted-bootstrap@x y'],
      token: 'planted-token',
      credentials: { accessKeyId: 'AKIA', secretAccessKey: 'planted-aws' },
      authClient: { x: 1 },
      clientOptions: { key: 'planted' },
      security: false,
      signal: new AbortController().signal,
      onEvent: () => undefined,
      python: '/usr/bin/python3',
      endpoint: { apiEndpoint: '127.0.0.1', port: 8080, protocol: 'http' },
      when: new Date(),
    });
    expect(saved).toEqual({ nWorkers: 3, endpoint: { apiEndpoint: '127.0.0.1', port: 8080, protocol: 'http' } });
    expect(JSON.stringify(saved)).not.toMatch(/planted/);
  });

  it.runIf(have(realDask()))('DASK_CONFIG=<dir>: Dask reads dask.yaml and not the record', async () => {
    const sec = await Security.temporary();
    const dir = await saveClusterState(record('dask-00000003'), sec, env);
    const out = execFileSync(pythonWithDask()!, ['-c', "import dask, json; print(json.dumps([dask.config.get('scheduler-address'), dask.config.get('distributed.dashboard.link'), dask.config.get('format', None), dask.config.get('kind', None)]))"], {
      env: { ...process.env, DASK_CONFIG: dir },
      encoding: 'utf8',
    });
    expect(JSON.parse(out)).toEqual(['tls://203.0.113.7:8786', 'http://127.0.0.1:40123/status', null, null]);
  });
});
