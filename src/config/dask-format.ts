/**
 * Dask's duration and byte-size text, read by the same rules as Dask itself
 * (`dask.utils.parse_timedelta`, `dask.utils.parse_bytes` and distributed's
 * `parse_memory_limit`), so a value that passes here is one Dask accepts on the VM, and a typo
 * fails at construction instead of when the scheduler or a worker starts.
 *
 * The value handed to Dask stays the caller's text: these functions only check it (and say what
 * it means, for messages and tests).
 */

/** Dask's duration units (`timedelta_sizes`), in seconds; matched case-insensitively. */
const DURATION_UNITS: Readonly<Record<string, number>> = (() => {
  const short: Record<string, number> = { s: 1, ms: 1e-3, us: 1e-6, ns: 1e-9, m: 60, h: 3600, d: 86_400, w: 604_800 };
  const long: Record<string, number> = {
    second: 1,
    minute: 60,
    hour: 3600,
    day: 86_400,
    week: 604_800,
    millisecond: 1e-3,
    microsecond: 1e-6,
    nanosecond: 1e-9,
  };
  const out: Record<string, number> = { ...short };
  for (const [k, v] of Object.entries(long)) {
    out[k] = v;
    out[`${k}s`] = v;
  }
  return Object.freeze(out);
})();

/** Dask's byte units (`byte_sizes` after its own expansion: `kb`, `k`, `kib`, `ki`, ...), lowercase. */
const BYTE_UNITS: Readonly<Record<string, number>> = (() => {
  const base: Record<string, number> = {
    kb: 1e3,
    mb: 1e6,
    gb: 1e9,
    tb: 1e12,
    pb: 1e15,
    kib: 2 ** 10,
    mib: 2 ** 20,
    gib: 2 ** 30,
    tib: 2 ** 40,
    pib: 2 ** 50,
    b: 1,
    '': 1,
  };
  const out: Record<string, number> = { ...base };
  // Dask adds the first letter of each decimal unit (`k`, `m`, `g`, `t`, `p`, `b`) and each binary unit without its `b` (`ki`, `mi`, ...).
  for (const [k, v] of Object.entries(base)) {
    if (k && !k.includes('i')) out[k[0]!] = v;
    if (k && k.includes('i')) out[k.slice(0, -1)] = v;
  }
  return Object.freeze(out);
})();

/**
 * Python's `float()` on the text Dask hands it, for the forms people write: digits with an
 * optional fraction and exponent. (`inf`, `nan` and `1_000`, which Python also reads, are
 * refused: no duration or size means them.)
 */
function pythonFloat(text: string): number | undefined {
  if (!/^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/.test(text)) return undefined;
  const n = Number(text);
  return Number.isFinite(n) ? n : undefined;
}

/** Splits Dask-style `<number><unit>` text where Dask does: at the last non-letter. */
function splitUnit(text: string): [string, string] {
  let i = text.length - 1;
  while (i >= 0 && /[A-Za-z]/.test(text[i]!)) i--;
  return [text.slice(0, i + 1), text.slice(i + 1)];
}

/**
 * Seconds in a Dask duration (`'2 hours'`, `'90s'`, `'500ms'`, `'1.5h'`, `'3600'`: a bare
 * number is seconds), or `undefined` when Dask would refuse it. Numbers are seconds.
 */
export function parseDaskDuration(value: string | number): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? value : undefined;
  // parse_timedelta: drop spaces; text that does not start with a digit gets a leading "1" ('hour' is one hour).
  let s = value.replace(/ /g, '');
  if (s === '') return undefined;
  if (!/^[0-9]/.test(s)) s = `1${s}`;
  const [prefix, suffix] = splitUnit(s);
  const n = pythonFloat(prefix);
  const unit = DURATION_UNITS[(suffix || 'seconds').toLowerCase()];
  if (n === undefined || unit === undefined) return undefined;
  return n * unit;
}

/** Bytes in a Dask size (`'4GiB'`, `'512 MB'`, `'1e9'`, `'100'`), or `undefined` when Dask's `parse_bytes` would refuse it. */
export function parseDaskBytes(value: string | number): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) ? Math.trunc(value) : undefined;
  // parse_bytes: drop spaces; text without any digit gets a leading "1" ('GB' is one gigabyte).
  let s = value.replace(/ /g, '');
  if (!/[0-9]/.test(s)) s = `1${s}`;
  const [prefix, suffix] = splitUnit(s);
  const n = pythonFloat(prefix);
  const unit = BYTE_UNITS[suffix.toLowerCase()];
  if (n === undefined || unit === undefined) return undefined;
  return Math.trunc(n * unit);
}

/**
 * What a worker's `--memory-limit` means, by distributed's `parse_memory_limit`: `'auto'` (a
 * share of the machine by threads), a number up to 1 (a fraction of the machine's memory), `0`
 * (no limit) or a byte size. `undefined` when Dask would refuse it, or it is negative.
 */
export function parseDaskMemoryLimit(value: string | number): { auto: true } | { fraction: number } | { bytes: number } | undefined {
  if (value === 'auto') return { auto: true };
  // parse_memory_limit tries float() first (Python's float() ignores surrounding whitespace).
  const n = typeof value === 'number' ? (Number.isFinite(value) ? value : undefined) : pythonFloat(value.trim());
  if (n !== undefined) {
    if (n < 0) return undefined;
    return n <= 1 && n > 0 ? { fraction: n } : { bytes: Math.trunc(n) };
  }
  if (typeof value !== 'string') return undefined;
  const bytes = parseDaskBytes(value);
  return bytes === undefined || bytes < 0 ? undefined : { bytes };
}
