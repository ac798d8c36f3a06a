/**
 * Comparing the Dask a client computes with against the Dask a cluster runs.
 *
 * A Python client only works with a scheduler of the same Dask protocol generation: a 2024.12
 * client fails its first computation on a 2025.11 scheduler, a 2025.11 client cannot even open
 * `Client()` on a 2024.12 one. Dask itself compares the versions only when `Client()` connects,
 * as a warning that is easy to miss; the cluster compares them right after start, where a
 * mismatch can still be fixed (or, with `strictVersions`, rolled back).
 */
import type { DaskVersions } from './python';

/** The packages compared, with what a difference means. */
export const VERSION_CHECKS = [
  { name: 'dask', meaning: 'task graphs are built by the client and run by the cluster; their format changes between releases' },
  { name: 'distributed', meaning: "client and scheduler speak Dask's wire protocol, which changes between releases: Client() or the first computation can fail" },
  { name: 'python', meaning: 'functions and objects are pickled on one Python and unpickled on the other; across minor versions that can fail' },
  { name: 'cloudpickle', meaning: 'functions pickled by one cloudpickle release may not load with another' },
  { name: 'msgpack', meaning: 'every message is msgpack-framed; a different major version can break the connection' },
] as const;

export type CheckedPackage = (typeof VERSION_CHECKS)[number]['name'];

/** Versions of one side, by package (null: not installed or not reported). */
export type VersionSet = Record<CheckedPackage, string | null>;

export interface VersionMismatch {
  package: CheckedPackage;
  client: string | null;
  /** Each distinct cluster version with the members running it (`scheduler`, worker addresses). */
  cluster: Array<{ version: string | null; members: string[] }>;
  meaning: string;
}

export interface VersionReport {
  client: VersionSet | undefined;
  scheduler: VersionSet;
  workers: Record<string, VersionSet>;
  mismatches: VersionMismatch[];
}

/** The client's versions from the interpreter probe. */
export function clientVersionSet(v: DaskVersions): VersionSet {
  return {
    dask: v.packages.dask,
    distributed: v.packages.distributed,
    python: v.python,
    cloudpickle: v.packages.cloudpickle,
    msgpack: v.packages.msgpack,
  };
}

/**
 * A scheduler's or worker's answer to Dask's `versions` handler:
 * `{host: {python: '3.11.2.final.0', ...}, packages: {dask, distributed, msgpack, ...}}`.
 */
export function remoteVersionSet(raw: unknown): VersionSet {
  const r = (typeof raw === 'object' && raw !== null ? raw : {}) as { host?: Record<string, unknown>; packages?: Record<string, unknown> };
  const str = (x: unknown): string | null => (typeof x === 'string' && x !== '' && x !== 'None' ? x : null);
  const python = str(r.host?.python);
  return {
    dask: str(r.packages?.dask),
    distributed: str(r.packages?.distributed),
    // `3.11.2.final.0` → `3.11.2`
    python: python === null ? null : python.split('.').slice(0, 3).join('.'),
    cloudpickle: str(r.packages?.cloudpickle),
    msgpack: str(r.packages?.msgpack),
  };
}

/**
 * The part of a version that must agree: the release for dask and distributed (a Debian or
 * local suffix such as `+ds.1` is packaging, not code), major.minor for Python and cloudpickle
 * (patch releases keep the pickle format), the major for msgpack (Dask accepts any msgpack
 * from 0.6 on; the framing only changed across majors).
 */
export function comparable(pkg: CheckedPackage, version: string | null): string | null {
  if (version === null) return null;
  const base = version.split('+')[0]!.trim();
  const parts = base.split('.');
  switch (pkg) {
    case 'dask':
    case 'distributed':
      return parts.slice(0, 3).map((p) => String(Number.parseInt(p, 10))).join('.');
    case 'python':
    case 'cloudpickle':
      return parts.slice(0, 2).join('.');
    case 'msgpack':
      return parts[0] ?? null;
  }
}

/** Mismatches between the client and every member; none when the client is unknown. */
export function compareVersions(client: VersionSet | undefined, scheduler: VersionSet, workers: Record<string, VersionSet>): VersionReport {
  const mismatches: VersionMismatch[] = [];
  const members: Array<[string, VersionSet]> = [['scheduler', scheduler], ...Object.entries(workers)];
  for (const { name, meaning } of VERSION_CHECKS) {
    // Without a client the members are still compared with the scheduler (a mixed cluster).
    const reference = client !== undefined ? comparable(name, client[name]) : comparable(name, scheduler[name]);
    const groups = new Map<string | null, string[]>();
    for (const [member, set] of members) {
      const v = set[name];
      groups.set(v, [...(groups.get(v) ?? []), member]);
    }
    const differs = [...groups.keys()].some((v) => comparable(name, v) !== reference);
    if (differs) {
      mismatches.push({
        package: name,
        client: client?.[name] ?? null,
        cluster: [...groups].map(([version, m]) => ({ version, members: m })),
        meaning,
      });
    }
  }
  return { client, scheduler, workers, mismatches };
}

/** One line per mismatch, for warnings and errors. */
export function describeMismatches(report: VersionReport): string {
  return report.mismatches
    .map((m) => {
      const where = m.cluster.map((c) => `${c.version ?? 'missing'} on ${membersText(c.members)}`).join(', ');
      return `${m.package}: client ${m.client ?? 'missing'}, cluster ${where} (${m.meaning})`;
    })
    .join('; ');
}

/** `the scheduler and 2 workers`. */
function membersText(members: string[]): string {
  const scheduler = members.includes('scheduler');
  const workers = members.length - (scheduler ? 1 : 0);
  return [scheduler ? 'the scheduler' : '', workers > 0 ? `${workers} worker${workers === 1 ? '' : 's'}` : ''].filter(Boolean).join(' and ');
}

/** `dask 2024.12.1, distributed 2024.12.1, python 3.13.5, cloudpickle 3.1.0, msgpack 1.0.8`. */
export function formatVersionSet(set: VersionSet): string {
  return VERSION_CHECKS.map(({ name }) => `${name} ${set[name] ?? 'missing'}`).join(', ');
}
