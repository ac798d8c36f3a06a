/**
 * The built package: loads with `require` and `import`, loads no cloud SDK on import, and the
 * examples run under tsx and ts-node (CommonJS).
 */
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt } from '../notebook/project';

const root = path.resolve(__dirname, '../..');

/**
 * Runs node without blocking this worker: a synchronous child (ts-node compiles for a while on a
 * loaded machine) would hold the event loop past vitest's 60 s RPC timeout.
 */
async function node(args: string[]): Promise<string> {
  return (await promisify(execFile)(process.execPath, args, { cwd: root, encoding: 'utf8', timeout: 120_000 })).stdout;
}

describe('built package', () => {
  // Built when dist/ is older than the sources, taking turns with the other test files that build.
  beforeAll(() => ensureBuilt(240_000), 300_000);

  it('loads with require and loads no cloud SDK', async () => {
    const out = await node([
      '-e',
      `const d = require('dask-cloud');
       const sdk = Object.keys(require.cache).filter((k) => /@google-cloud|@aws-sdk|dots-wrapper/.test(k));
       console.log(JSON.stringify({ local: typeof d.LocalCluster, security: typeof d.Security.temporary, sdk: sdk.length }));`,
    ]);
    expect(JSON.parse(out)).toEqual({ local: 'function', security: 'function', sdk: 0 });
  });

  it('loads with import and shares one copy of the code with require', async () => {
    const out = await node([
      '--input-type=module',
      '-e',
      `import { LocalCluster, Security, DaskCloudError } from 'dask-cloud';
       import { createRequire } from 'node:module';
       const cjs = createRequire(import.meta.url)('dask-cloud');
       console.log(JSON.stringify({ same: cjs.LocalCluster === LocalCluster, sec: typeof Security.fromPem, err: typeof DaskCloudError }));`,
    ]);
    expect(JSON.parse(out)).toEqual({ same: true, sec: 'function', err: 'function' });
  });

  it('runs an example under tsx', async () => {
    const out = await node([path.join(root, 'node_modules/tsx/dist/cli.mjs'), 'examples/render-user-data.ts']);
    expect(out).toMatch(/worker user-data: +\d+ bytes raw/);
    expect(out).not.toContain('PRIVATE KEY-----\n');
  });

  it('runs an example under ts-node (CommonJS)', async () => {
    const out = await node([path.join(root, 'node_modules/ts-node/dist/bin.js'), 'examples/render-user-data.ts']);
    expect(out).toMatch(/scheduler user-data: +\d+ bytes raw/);
  });
});
