/**
 * Which published Dask image matches a client: `ghcr.io/dask/dask:<release>-py<X.Y>`.
 *
 * The table below is read from the dask-docker repository's history (the build workflow's
 * `release` and Python matrix at each release tag; the unsuffixed `<release>` tag is the build
 * of the default Python: 3.8 up to 2023.5.0, 3.10 since 2023.5.1). ghcr.io carries the images
 * from 2022.2.1 on. Releases that dask-docker never built (2022.10.1, 2023.12.0, 2024.6.1,
 * 2024.10.0 to 2024.12.0, 2025.9.0, 2026.1.0 and the backports 2025.3.1, 2025.9.2, 2025.9.3,
 * 2026.1.3) are absent on purpose. A release published after the table was written is unknown
 * here: give `dockerImage` (or `daskVersion`) explicitly for it.
 */

/** Where the images live. */
export const DASK_IMAGE_REPOSITORY = 'ghcr.io/dask/dask';

/** The image every VM runs when no local client says otherwise. */
export const PINNED_DASK_RELEASE = '2025.11.0';
export const PINNED_PYTHON = '3.10';

interface Era {
  /** Python minors with an image, oldest first. */
  pythons: readonly string[];
  /** The Python of the unsuffixed tag. */
  default: string;
  releases: readonly string[];
}

/** Consecutive releases sharing one Python matrix. */
const ERAS: readonly Era[] = [
  { pythons: ['3.8', '3.9'], default: '3.8', releases: ['2022.2.1', '2022.3.0', '2022.4.0', '2022.4.1', '2022.4.2', '2022.5.0'] },
  {
    pythons: ['3.8', '3.9', '3.10'],
    default: '3.8',
    releases: [
      '2022.5.1', '2022.5.2', '2022.6.0', '2022.6.1', '2022.7.0', '2022.7.1', '2022.8.0', '2022.8.1', '2022.9.0', '2022.9.1',
      '2022.9.2', '2022.10.0', '2022.10.2', '2022.11.0', '2022.11.1', '2022.12.0', '2022.12.1', '2023.1.0', '2023.1.1',
      '2023.2.0', '2023.2.1', '2023.3.0',
    ],
  },
  { pythons: ['3.8', '3.9', '3.10', '3.11'], default: '3.8', releases: ['2023.3.1', '2023.3.2', '2023.4.0', '2023.4.1', '2023.5.0'] },
  {
    pythons: ['3.9', '3.10', '3.11'],
    default: '3.10',
    releases: [
      '2023.5.1', '2023.6.0', '2023.6.1', '2023.7.0', '2023.7.1', '2023.8.0', '2023.8.1', '2023.9.0', '2023.9.1', '2023.9.2',
      '2023.9.3', '2023.10.0', '2023.10.1', '2023.11.0', '2023.12.1', '2024.1.0', '2024.1.1', '2024.2.0',
    ],
  },
  {
    pythons: ['3.9', '3.10', '3.11', '3.12'],
    default: '3.10',
    releases: [
      '2024.2.1', '2024.3.0', '2024.3.1', '2024.4.0', '2024.4.1', '2024.4.2', '2024.5.0', '2024.5.1', '2024.5.2', '2024.6.0',
      '2024.6.2', '2024.7.0', '2024.7.1', '2024.8.0',
    ],
  },
  {
    pythons: ['3.10', '3.11', '3.12'],
    default: '3.10',
    releases: [
      '2024.8.1', '2024.8.2', '2024.9.0', '2024.9.1', '2024.12.1', '2025.1.0', '2025.2.0', '2025.3.0', '2025.4.0', '2025.4.1',
      '2025.5.0', '2025.5.1', '2025.7.0', '2025.9.1', '2025.10.0', '2025.11.0', '2025.12.0',
    ],
  },
  { pythons: ['3.10', '3.11', '3.12', '3.13'], default: '3.10', releases: ['2026.1.1', '2026.1.2', '2026.3.0'] },
  { pythons: ['3.10', '3.11', '3.12', '3.13', '3.14'], default: '3.10', releases: ['2026.6.0', '2026.7.0', '2026.7.1'] },
];

const BY_RELEASE = new Map<string, Era>(ERAS.flatMap((era) => era.releases.map((r) => [r, era] as const)));

/** Every release with images, oldest first. */
export const DASK_IMAGE_RELEASES: readonly string[] = ERAS.flatMap((e) => e.releases);

/** The Python minors that have an image of `release` (empty when the release has none). */
export function imagePythons(release: string): readonly string[] {
  return BY_RELEASE.get(release)?.pythons ?? [];
}

type Triple = [number, number, number];

/** `2022.01.0` → [2022, 1, 0]; `2023.3.2.1` → [2023, 3, 2] (a fourth part is dropped); else undefined. */
export function parseRelease(version: string): Triple | undefined {
  const m = /^(\d{4})\.(\d{1,2})\.(\d+)(?:\.\d+)?(?:[+.-].*)?$/.exec(version.trim());
  if (!m) return undefined;
  return [Number(m[1]), Number(m[2]), Number(m[3])];
}

/** `3.13.5` or `3.13` → `3.13`; else undefined. */
export function pythonMinor(version: string): string | undefined {
  const m = /^(\d+)\.(\d+)(?:\.|$)/.exec(version.trim());
  return m ? `${Number(m[1])}.${Number(m[2])}` : undefined;
}

function compare(a: Triple, b: Triple): number {
  return a[0] - b[0] || a[1] - b[1] || a[2] - b[2];
}

function minorValue(python: string): number {
  const [major = 0, minor = 0] = python.split('.').map(Number);
  return major * 1000 + minor;
}

export interface ImageChoice {
  /** The full reference, e.g. `ghcr.io/dask/dask:2024.12.1-py3.12`. */
  image: string;
  /** The Dask release the image runs. */
  dask: string;
  /** Its Python minor. */
  python: string;
  /** Whether the image runs exactly the requested Dask release and Python minor. */
  exact: boolean;
  /** What differs from the request, one sentence each (empty when exact). */
  differences: string[];
}

/**
 * The image for a client running Dask `dask` on Python `python` (either may carry a patch or
 * a Debian suffix: `2022.12.1+ds.1`, `3.11.2`).
 *
 * - Exact: `<release>-py<X.Y>` when that image was published.
 * - Same release, another Python: the nearest Python minor it was built for.
 * - A release never published: the nearest published release of the same year and month
 *   (later patches first: they were hotfixes), then with the client's Python or the nearest.
 * - Nothing of that month: the nearest published release before or after by date. Dask's wire
 *   protocol changes between such releases, so this is marked clearly as a different Dask.
 * Returns undefined only when `dask` is not a Dask version at all.
 */
export function chooseDaskImage(request: { dask: string; python?: string }): ImageChoice | undefined {
  const wanted = parseRelease(request.dask);
  if (!wanted) return undefined;
  const want = wanted.join('.');
  const py = request.python === undefined ? undefined : pythonMinor(request.python);
  const differences: string[] = [];

  let release = want;
  const newest = DASK_IMAGE_RELEASES[DASK_IMAGE_RELEASES.length - 1]!;
  if (!BY_RELEASE.has(release) && compare(wanted, parseRelease(newest)!) > 0) {
    // Newer than this table: dask-docker has published every regular release since 2022 under the
    // same scheme, with the newest era's Pythons. Assumed, and said.
    const era = ERAS[ERAS.length - 1]!;
    const python = py !== undefined && era.pythons.includes(py) ? py : era.default;
    differences.push(`Dask ${want} is newer than the releases this dask-cloud knows (up to ${newest}); assuming ${DASK_IMAGE_REPOSITORY}:${want}-py${python} is published (set dockerImage if it is not)`);
    if (py !== undefined && python !== py) differences.push(`Python ${py} is not among the newest images' (${era.pythons.join(', ')}); using ${python}`);
    return { image: `${DASK_IMAGE_REPOSITORY}:${want}-py${python}`, dask: want, python, exact: false, differences };
  }
  if (!BY_RELEASE.has(release)) {
    const sameMonth = DASK_IMAGE_RELEASES.filter((r) => {
      const t = parseRelease(r)!;
      return t[0] === wanted[0] && t[1] === wanted[1];
    });
    const later = sameMonth.filter((r) => compare(parseRelease(r)!, wanted) > 0);
    const earlier = sameMonth.filter((r) => compare(parseRelease(r)!, wanted) < 0);
    if (later.length > 0) release = later[0]!;
    else if (earlier.length > 0) release = earlier[earlier.length - 1]!;
    else release = nearestByDate(wanted);
    const sameMonthNote = sameMonth.length > 0 ? 'the nearest release of the same month' : 'the nearest published release: its wire protocol may differ, so computations can fail';
    differences.push(`Dask ${want} has no published image; using ${release} (${sameMonthNote})`);
  }

  const era = BY_RELEASE.get(release)!;
  let python = py ?? era.default;
  if (py !== undefined && !era.pythons.includes(py)) {
    const nearest = [...era.pythons].sort((a, b) => Math.abs(minorValue(a) - minorValue(py)) - Math.abs(minorValue(b) - minorValue(py)) || minorValue(b) - minorValue(a))[0]!;
    differences.push(`no image of Dask ${release} runs Python ${py}; using Python ${nearest} (images exist for ${era.pythons.join(', ')}): functions pickled on one Python minor may not load on another`);
    python = nearest;
  }
  return { image: `${DASK_IMAGE_REPOSITORY}:${release}-py${python}`, dask: release, python, exact: differences.length === 0, differences };
}

/** The published release closest in time to `wanted`, by month; of equals, the later (it carries the fixes). */
function nearestByDate(wanted: Triple): string {
  const months = (t: Triple) => t[0] * 12 + t[1];
  let best = DASK_IMAGE_RELEASES[0]!;
  let bestDistance = Infinity;
  for (const r of DASK_IMAGE_RELEASES) {
    const t = parseRelease(r)!;
    const distance = Math.abs(months(t) - months(wanted));
    if (distance < bestDistance || (distance === bestDistance && compare(t, parseRelease(best)!) > 0)) {
      best = r;
      bestDistance = distance;
    }
  }
  return best;
}

/** The pinned default, as a choice. */
export function pinnedDaskImage(): ImageChoice {
  // The unsuffixed tag is the build of the default Python (3.10 since 2023.5.1).
  return { image: `${DASK_IMAGE_REPOSITORY}:${PINNED_DASK_RELEASE}`, dask: PINNED_DASK_RELEASE, python: PINNED_PYTHON, exact: true, differences: [] };
}

/** How a VM cluster's image was decided (the `image` event's `basis`). */
export type ImageBasis = 'explicit' | 'requested' | 'client' | 'pinned';

export interface ImageDecision {
  image: string;
  basis: ImageBasis;
  /** Where the image differs from what was asked, one sentence each. */
  differences: string[];
}

/** What of a local client's versions the image choice reads (undefined: no local Python with Dask). */
export function imageClient(versions: { packages: { dask?: string | null }; python: string } | undefined): { dask?: string | null; python?: string } | undefined {
  return versions === undefined ? undefined : { dask: versions.packages.dask, python: versions.python };
}

/**
 * The image a VM cluster runs, from its options and the local client's Dask and Python (undefined
 * when no local Python with Dask was found): `dockerImage` as given; else the image of the
 * requested `daskVersion`/`pythonVersion`, the missing half taken from the client; else the
 * client's; else the pinned default. The cluster and the `user-data` command both decide here.
 */
export function decideDaskImage(
  options: { dockerImage?: string; daskVersion?: string; pythonVersion?: string },
  client: { dask?: string | null; python?: string } | undefined,
): ImageDecision {
  if (options.dockerImage !== undefined) return { image: options.dockerImage, basis: 'explicit', differences: [] };
  const askedDask = options.daskVersion !== undefined && options.daskVersion !== 'auto' ? options.daskVersion : undefined;
  const requested = askedDask !== undefined || options.pythonVersion !== undefined;
  const clientDask = client?.dask ?? undefined;
  if (!requested && clientDask === undefined) {
    const pinned = pinnedDaskImage();
    return {
      image: pinned.image,
      basis: 'pinned',
      differences: [
        `no local Python with Dask was found, so the image cannot follow your client: it runs Dask ${pinned.dask} on Python ${pinned.python}. Compute from a client with the same versions (python -m pip install "distributed==${pinned.dask}" on Python ${pinned.python}), or set the python option`,
      ],
    };
  }
  const dask = askedDask ?? clientDask ?? PINNED_DASK_RELEASE;
  const choice = chooseDaskImage({ dask, python: options.pythonVersion ?? client?.python });
  if (choice === undefined) {
    // The client's Dask reports a version that is no release (a source checkout): keep the pin.
    return { image: pinnedDaskImage().image, basis: 'pinned', differences: [`the local Dask reports version ${JSON.stringify(dask)}, which names no release: using the pinned image; set daskVersion or dockerImage`] };
  }
  return { image: choice.image, basis: requested ? 'requested' : 'client', differences: choice.differences };
}
