/**
 * Comparing the client's versions with the cluster's (src/dask/versions.ts): what counts as a
 * difference, and how it is reported.
 */
import { describe, expect, it } from 'vitest';
import { comparable, compareVersions, describeMismatches, remoteVersionSet, type VersionSet } from '../../src/dask/versions';
import { versionsLine } from '../../src/cli';

const debian: VersionSet = { dask: '2022.12.1+dfsg', distributed: '2022.12.1+ds.1', python: '3.11.2', cloudpickle: '2.2.0', msgpack: '1.0.3' };
const trixie: VersionSet = { dask: '2024.12.1+dfsg', distributed: '2024.12.1+ds', python: '3.13.5', cloudpickle: '3.1.0', msgpack: '1.0.3' };

describe('remoteVersionSet', () => {
  it("reads Dask's versions answer", () => {
    const raw = {
      host: { python: '3.11.2.final.0', 'python-bits': 64, OS: 'Linux' },
      packages: { dask: '2022.12.1+dfsg', distributed: '2022.12.1+ds.1', msgpack: '1.0.3', cloudpickle: '2.2.0', tornado: '6.2', toolz: '0.12.0', numpy: null },
    };
    expect(remoteVersionSet(raw)).toEqual(debian);
  });
  it('missing or odd fields are null, never a throw', () => {
    expect(remoteVersionSet(undefined)).toEqual({ dask: null, distributed: null, python: null, cloudpickle: null, msgpack: null });
    expect(remoteVersionSet({ host: { python: 7 }, packages: { dask: 'None', msgpack: '' } }).dask).toBeNull();
  });
});

describe('compareVersions', () => {
  it('the same versions: no mismatch, whatever the packaging suffix or Python patch', () => {
    const client = { ...debian, dask: '2022.12.1', distributed: '2022.12.1', python: '3.11.9' };
    expect(compareVersions(client, debian, { 'tls://10.0.0.3:4000': debian }).mismatches).toEqual([]);
  });

  it('a 2022.12.1 client against a 2024.12.1 cluster: dask, distributed, python and cloudpickle, each with its meaning', () => {
    const report = compareVersions(debian, trixie, { 'tls://10.0.0.3:4000': trixie, 'tls://10.0.0.4:4000': trixie });
    expect(report.mismatches.map((m) => m.package)).toEqual(['dask', 'distributed', 'python', 'cloudpickle']);
    expect(report.mismatches[0]).toMatchObject({ client: '2022.12.1+dfsg', cluster: [{ version: '2024.12.1+dfsg', members: ['scheduler', 'tls://10.0.0.3:4000', 'tls://10.0.0.4:4000'] }] });
    const text = describeMismatches(report);
    expect(text).toMatch(/^dask: client 2022\.12\.1\+dfsg, cluster 2024\.12\.1\+dfsg on the scheduler and 2 workers \(task graphs/);
    expect(text).toMatch(/python: client 3\.11\.2, cluster 3\.13\.5 on the scheduler and 2 workers \(functions and objects are pickled/);
  });

  it('msgpack differs only across majors; cloudpickle across minors', () => {
    expect(compareVersions({ ...debian, msgpack: '1.1.0' }, debian, {}).mismatches).toEqual([]);
    expect(compareVersions({ ...debian, msgpack: '0.6.2' }, debian, {}).mismatches.map((m) => m.package)).toEqual(['msgpack']);
    expect(compareVersions({ ...debian, cloudpickle: '2.2.1' }, debian, {}).mismatches).toEqual([]);
    expect(compareVersions({ ...debian, cloudpickle: '3.0.0' }, debian, {}).mismatches.map((m) => m.package)).toEqual(['cloudpickle']);
  });

  it('one worker on other versions is named, even when the client matches the scheduler', () => {
    const report = compareVersions(debian, debian, { 'tls://a:1': debian, 'tls://b:1': trixie });
    const dask = report.mismatches.find((m) => m.package === 'dask')!;
    expect(dask.cluster).toEqual([
      { version: '2022.12.1+dfsg', members: ['scheduler', 'tls://a:1'] },
      { version: '2024.12.1+dfsg', members: ['tls://b:1'] },
    ]);
  });

  it('without a client, members are compared with the scheduler', () => {
    expect(compareVersions(undefined, debian, { 'tls://a:1': debian }).mismatches).toEqual([]);
    expect(compareVersions(undefined, debian, { 'tls://a:1': trixie }).mismatches.map((m) => m.package)).toEqual(['dask', 'distributed', 'python', 'cloudpickle']);
  });

  it('comparable parts', () => {
    expect(comparable('dask', '2024.01.0+dfsg')).toBe('2024.1.0');
    expect(comparable('python', '3.13.5')).toBe('3.13');
    expect(comparable('msgpack', '1.0.8')).toBe('1');
    expect(comparable('cloudpickle', null)).toBeNull();
  });
});

describe('the CLI versions line', () => {
  it('says "the same" when everything matches', () => {
    const report = compareVersions(debian, debian, { 'tls://a:1': debian, 'tls://b:1': debian });
    expect(versionsLine(report)).toBe(
      'client dask 2022.12.1+dfsg, distributed 2022.12.1+ds.1, python 3.11.2, cloudpickle 2.2.0, msgpack 1.0.3; scheduler the same; 2 worker(s) the same',
    );
  });
  it('names the cluster versions and the mismatched packages otherwise', () => {
    const report = compareVersions(debian, trixie, { 'tls://a:1': trixie });
    expect(versionsLine(report)).toBe(
      'client dask 2022.12.1+dfsg, distributed 2022.12.1+ds.1, python 3.11.2, cloudpickle 2.2.0, msgpack 1.0.3; ' +
        'scheduler dask 2024.12.1+dfsg, distributed 2024.12.1+ds, python 3.13.5, cloudpickle 3.1.0, msgpack 1.0.3; 1 worker(s) as the scheduler ' +
        '(4 mismatches: dask, distributed, python, cloudpickle)',
    );
  });
});
