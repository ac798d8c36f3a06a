/**
 * The image a client's Dask and Python pick (src/dask/images.ts), against dask-docker's
 * published tags: `<release>-py<X.Y>` for the Pythons of each release's build matrix.
 */
import { describe, expect, it } from 'vitest';
import { chooseDaskImage, decideDaskImage, DASK_IMAGE_RELEASES, imagePythons, parseRelease, pinnedDaskImage, pythonMinor } from '../../src/dask/images';
import { DEFAULT_DASK_IMAGE } from '../../src/cloud-init';

const R = 'ghcr.io/dask/dask';

describe('chooseDaskImage', () => {
  // [client dask, client python, image, exact]
  const pairs: Array<[string, string, string, boolean]> = [
    // Exact: release and Python minor published.
    ['2025.11.0', '3.12.7', `${R}:2025.11.0-py3.12`, true],
    ['2024.12.1', '3.10.16', `${R}:2024.12.1-py3.10`, true],
    ['2023.5.1', '3.9.18', `${R}:2023.5.1-py3.9`, true],
    ['2026.7.1', '3.14.0', `${R}:2026.7.1-py3.14`, true],
    // Debian's packages: a packaging suffix, and Python 3.11, which 2022.12.1 has no image for.
    ['2022.12.1+ds.1', '3.11.2', `${R}:2022.12.1-py3.10`, false],
    // Debian trixie: 2024.12.1 on Python 3.13 (images of 2024.12.1 stop at 3.12).
    ['2024.12.1+ds', '3.13.5', `${R}:2024.12.1-py3.12`, false],
    // Too old a Python for the release: the lowest published one.
    ['2024.8.1', '3.9.2', `${R}:2024.8.1-py3.10`, false],
    // Never published: the next release of the same month (a hotfix).
    ['2023.12.0', '3.11.5', `${R}:2023.12.1-py3.11`, false],
    // A backport with no image: the highest published release of its month.
    ['2025.9.3', '3.12.1', `${R}:2025.9.1-py3.12`, false],
    // A month with no image at all: the nearest published release.
    ['2024.11.2', '3.12.4', `${R}:2024.12.1-py3.12`, false],
    // Zero-padded spelling of a release.
    ['2022.05.0', '3.9.1', `${R}:2022.5.0-py3.9`, true],
    // Newer than the table: the scheme is assumed to continue, and that is said.
    ['2026.11.0', '3.13.1', `${R}:2026.11.0-py3.13`, false],
  ];

  for (const [dask, python, image, exact] of pairs) {
    it(`dask ${dask} on Python ${python} → ${image}${exact ? '' : ' (says what differs)'}`, () => {
      const choice = chooseDaskImage({ dask, python })!;
      expect(choice.image).toBe(image);
      expect(choice.exact).toBe(exact);
      expect(choice.differences.length === 0).toBe(exact);
    });
  }

  it('says which way it differs: the Python, the release, or both', () => {
    expect(chooseDaskImage({ dask: '2022.12.1', python: '3.11' })!.differences).toEqual([
      expect.stringMatching(/^no image of Dask 2022\.12\.1 runs Python 3\.11; using Python 3\.10 \(images exist for 3\.8, 3\.9, 3\.10\)/),
    ]);
    const both = chooseDaskImage({ dask: '2024.10.0', python: '3.13' })!;
    expect(both.differences[0]).toMatch(/^Dask 2024\.10\.0 has no published image; using 2024\.9\.1 \(the nearest published release: its wire protocol may differ/);
    expect(both.differences[1]).toMatch(/runs Python 3\.13; using Python 3\.12/);
  });

  it('without a Python, the release default (3.8 up to 2023.5.0, 3.10 after)', () => {
    expect(chooseDaskImage({ dask: '2023.5.0' })!.image).toBe(`${R}:2023.5.0-py3.8`);
    expect(chooseDaskImage({ dask: '2023.5.1' })!.image).toBe(`${R}:2023.5.1-py3.10`);
  });

  it('a version that names no release gives undefined', () => {
    for (const v of ['main', '2.30.0', '', '2024']) expect(chooseDaskImage({ dask: v, python: '3.12' })).toBeUndefined();
  });

  it('the table: releases strictly increasing, every one with its Python list, the pinned default among them', () => {
    const triples = DASK_IMAGE_RELEASES.map((r) => parseRelease(r)!);
    for (let i = 1; i < triples.length; i++) {
      const [a, b] = [triples[i - 1]!, triples[i]!];
      expect(a[0] * 1e6 + a[1] * 1e3 + a[2] < b[0] * 1e6 + b[1] * 1e3 + b[2], `${DASK_IMAGE_RELEASES[i - 1]} < ${DASK_IMAGE_RELEASES[i]}`).toBe(true);
    }
    for (const r of DASK_IMAGE_RELEASES) expect(imagePythons(r).length).toBeGreaterThan(1);
    // Releases dask-docker never built are absent.
    for (const r of ['2022.10.1', '2023.12.0', '2024.6.1', '2024.10.0', '2024.11.2', '2024.12.0', '2025.9.0', '2026.1.0']) expect(imagePythons(r)).toEqual([]);
    expect(pinnedDaskImage().image).toBe(DEFAULT_DASK_IMAGE);
    expect(imagePythons(pinnedDaskImage().dask)).toContain(pinnedDaskImage().python);
  });

  it('parses versions as Dask and Python report them', () => {
    expect(parseRelease('2022.12.1+ds.1')).toEqual([2022, 12, 1]);
    expect(parseRelease('2023.3.2.1')).toEqual([2023, 3, 2]);
    expect(parseRelease('2025.1.0.dev12+g3fa1')).toEqual([2025, 1, 0]);
    expect(pythonMinor('3.13.5')).toBe('3.13');
    expect(pythonMinor('3.10')).toBe('3.10');
    expect(pythonMinor('x')).toBeUndefined();
  });
});

describe('decideDaskImage: what the cluster and the user-data command run', () => {
  const client = { dask: '2024.12.1+ds', python: '3.13.5' };
  it('dockerImage as given, whatever the client', () => {
    expect(decideDaskImage({ dockerImage: 'example.com/dask:mine' }, client)).toEqual({ image: 'example.com/dask:mine', basis: 'explicit', differences: [] });
  });
  it("the client's Dask and Python by default ('auto' too), saying what differs", () => {
    for (const daskVersion of [undefined, 'auto']) {
      const d = decideDaskImage({ daskVersion }, client);
      expect([d.image, d.basis]).toEqual([`${R}:2024.12.1-py3.12`, 'client']);
      expect(d.differences).toEqual([expect.stringContaining('runs Python 3.13; using Python 3.12')]);
    }
  });
  it("a requested release takes the client's Python; a requested Python the client's release", () => {
    expect(decideDaskImage({ daskVersion: '2025.3.0' }, { dask: '2022.12.1', python: '3.11.2' })).toEqual({ image: `${R}:2025.3.0-py3.11`, basis: 'requested', differences: [] });
    expect(decideDaskImage({ pythonVersion: '3.10' }, client)).toEqual({ image: `${R}:2024.12.1-py3.10`, basis: 'requested', differences: [] });
    expect(decideDaskImage({ daskVersion: '2025.3.0', pythonVersion: '3.12' }, undefined).image).toBe(`${R}:2025.3.0-py3.12`);
  });
  it('no local Dask: the pinned image, and which client to install', () => {
    const d = decideDaskImage({}, undefined);
    expect([d.image, d.basis]).toEqual([pinnedDaskImage().image, 'pinned']);
    expect(d.differences[0]).toContain('pip install "distributed==2025.11.0"');
    // A source checkout's version names no release: the pin, said.
    expect(decideDaskImage({}, { dask: '0+unknown', python: '3.12.1' }).differences[0]).toContain('names no release');
  });
});
