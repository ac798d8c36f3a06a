/** Text the command line prints: tables, copy-paste lines, versions. No I/O here. */
import type { ClusterSummary } from '../cluster/vm';
import { formatVersionSet, type VersionReport, type VersionSet } from '../dask/versions';

/** Why a VM cluster runs the image it runs (the `image` event's `basis`), in words. */
export const IMAGE_BASIS = {
  explicit: 'dockerImage',
  requested: 'daskVersion/pythonVersion',
  client: "matches the local client's Dask and Python",
  pinned: 'the pinned default',
} as const;

/** Replace the body of every PEM private key with a marker. */
export function redactKeys(text: string): string {
  return text.replace(/(-----BEGIN [A-Z ]*PRIVATE KEY-----)[\s\S]*?(-----END [A-Z ]*PRIVATE KEY-----)/g, '$1 (elided) $2');
}

/** A word for a POSIX shell: as it is when safe, else single-quoted. */
export function shellQuote(text: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(text) ? text : `'${text.replace(/'/g, `'\\''`)}'`;
}

/**
 * The line that runs a Python client against the cluster's directory, with the interpreter the
 * library found (which imports distributed), not whatever `python3` is first on PATH.
 */
export function tryItLine(dir: string, python: string | undefined): string {
  return `DASK_CONFIG=${shellQuote(dir)} ${shellQuote(python ?? 'python3')} -c ${shellQuote('from distributed import Client; print(Client())')}`;
}

/** `client dask 2024.12.1, …; scheduler the same; 2 workers the same` (or what each runs). */
export function versionsLine(report: VersionReport): string {
  const same = (set: VersionSet) => report.client !== undefined && formatVersionSet(set) === formatVersionSet(report.client);
  const workers = Object.values(report.workers);
  const workersText =
    workers.length === 0
      ? 'no workers'
      : workers.every((w) => formatVersionSet(w) === formatVersionSet(report.scheduler))
        ? `${workers.length} worker(s) ${same(report.scheduler) ? 'the same' : 'as the scheduler'}`
        : `workers differ: ${workers.map((w) => formatVersionSet(w)).join(' | ')}`;
  const parts = [
    report.client === undefined ? 'client unknown (no local Python with Dask)' : `client ${formatVersionSet(report.client)}`,
    `scheduler ${same(report.scheduler) ? 'the same' : formatVersionSet(report.scheduler)}`,
    workersText,
  ];
  return `${parts.join('; ')}${report.mismatches.length > 0 ? ` (${report.mismatches.length} mismatch${report.mismatches.length === 1 ? '' : 'es'}: ${report.mismatches.map((m) => m.package).join(', ')})` : ''}`;
}

/** The `ls` table: one row per cluster; times in UTC, expiry also as time left. */
export function formatClusterTable(rows: ClusterSummary[], now = Date.now()): string {
  const when = (d: Date | undefined): string => (d ? d.toISOString().slice(0, 16).replace('T', ' ') : '-');
  const left = (d: Date | undefined): string => {
    if (!d) return '-';
    const minutes = Math.round((d.getTime() - now) / 60_000);
    if (minutes <= 0) return `${when(d)} (passed)`;
    return `${when(d)} (in ${minutes >= 120 ? `${Math.floor(minutes / 60)} h` : `${minutes} min`})`;
  };
  const table = [
    ['ID', 'KIND', 'LOCATION', 'STATE', 'WORKERS', 'ADDRESS', 'CREATED (UTC)', 'EXPIRES (UTC)'],
    ...rows.map((c) => [c.id, c.kind, c.location ?? '-', c.state, String(c.counts.workers), c.address ?? '-', when(c.created), left(c.expires)]),
  ];
  const widths = table[0]!.map((_, i) => Math.max(...table.map((r) => r[i]!.length)));
  return table.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ')).join('\n');
}

/** `key  value` rows with the keys padded to one width. */
export function rows(entries: Array<[string, string]>, indent = ''): string {
  const width = Math.max(...entries.map(([k]) => k.length));
  return entries.map(([k, v]) => `${indent}${k.padEnd(width)}  ${v}`).join('\n');
}
