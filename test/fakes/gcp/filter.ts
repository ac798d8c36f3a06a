/**
 * Compute `list` semantics: the `filter` expression subset Google documents for
 * `instances.list` / `firewalls.list`, `orderBy`, and `maxResults` + `pageToken` pagination.
 *
 * Filter grammar handled (https://cloud.google.com/compute/docs/reference/rest/v1/instances/list):
 * - one expression `FIELD OP VALUE`, or several each in parentheses, joined by whitespace or `AND`
 *   (`(labels.dask-cluster = abc) (status = RUNNING)`);
 * - OP: `=`, `!=`, `>`, `<`, `:` (substring; `:*` = field present), `eq` / `ne` (RE2 full match);
 * - VALUE bare, `"double"` or `'single'` quoted; FIELD a dotted path (`labels.dask-cluster`,
 *   `scheduling.preemptible`, `tags.items` matches any element).
 * `OR` / `NOT` are valid in Google's grammar but not modelled: they answer 400 saying so.
 */
import { badRequest, invalidField } from './errors';

type Op = '=' | '!=' | '>' | '<' | ':' | 'eq' | 'ne';
interface Term {
  field: string;
  op: Op;
  value: string;
}

/** Parses a filter into an AND of terms; throws Compute's 400 for what it cannot read. */
export function parseFilter(filter: string): Term[] {
  const src = filter.trim();
  if (!src) return [];
  const bad = () => invalidField('filter', filter, 'Invalid list filter expression.');
  if (!src.startsWith('(')) return [parseTerm(src, bad)];
  const terms: Term[] = [];
  let i = 0;
  while (i < src.length) {
    while (src[i] === ' ') i++;
    if (i >= src.length) break;
    const rest = src.slice(i);
    const conj = /^(AND|OR|NOT)\b\s*/.exec(rest);
    if (conj) {
      if (conj[1] !== 'AND') throw badRequest(`fake-gcp models only AND of filter expressions, not ${conj[1]}: '${filter}'`);
      i += conj[0].length;
      continue;
    }
    if (src[i] !== '(') throw bad();
    // Find the closing parenthesis, skipping quoted text.
    let j = i + 1;
    let quote: string | undefined;
    for (; j < src.length; j++) {
      const c = src[j];
      if (quote) {
        if (c === quote) quote = undefined;
      } else if (c === '"' || c === "'") quote = c;
      else if (c === ')') break;
    }
    if (j >= src.length) throw bad();
    terms.push(parseTerm(src.slice(i + 1, j), bad));
    i = j + 1;
  }
  return terms;
}

function parseTerm(text: string, bad: () => Error): Term {
  const m = /^\s*([A-Za-z_][\w.-]*?)\s*(!=|=|>|<|:|\s(?:eq|ne)\s)\s*("(?:[^"]*)"|'(?:[^']*)'|[^\s()"']+)\s*$/.exec(text);
  if (!m) throw bad();
  let value = m[3];
  if (/^["']/.test(value)) value = value.slice(1, -1);
  return { field: m[1], op: m[2].trim() as Op, value };
}

function lookup(resource: unknown, field: string): unknown {
  let cur: unknown = resource;
  for (const key of field.split('.')) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string, unknown>)[key];
  }
  return cur;
}

function compareOne(actual: unknown, t: Term): boolean {
  if (actual === undefined || actual === null) return t.op === '!=' || t.op === 'ne';
  const a = typeof actual === 'object' ? JSON.stringify(actual) : String(actual);
  switch (t.op) {
    case '=':
      return a === t.value;
    case '!=':
      return a !== t.value;
    case ':':
      return t.value === '*' ? true : typeof actual === 'string' ? a.includes(t.value) : a === t.value;
    case '>':
    case '<': {
      const [x, y] = isNum(a) && isNum(t.value) ? [Number(a), Number(t.value)] : [a, t.value];
      return t.op === '>' ? x > y : x < y;
    }
    case 'eq':
    case 'ne': {
      let re: RegExp;
      try {
        re = new RegExp(`^(?:${t.value})$`);
      } catch {
        throw invalidField('filter', t.value, 'Invalid regular expression.');
      }
      return re.test(a) === (t.op === 'eq');
    }
  }
}

function isNum(s: string): boolean {
  return s.trim() !== '' && Number.isFinite(Number(s));
}

/** True when the resource satisfies every term. Arrays match when any element does (`!=`/`ne`: none). */
export function matches(resource: unknown, terms: Term[]): boolean {
  return terms.every((t) => {
    const v = lookup(resource, t.field);
    if (!Array.isArray(v)) return compareOne(v, t);
    const negative = t.op === '!=' || t.op === 'ne';
    return negative ? v.every((x) => compareOne(x, t)) : v.some((x) => compareOne(x, t));
  });
}

// ---------------------------------------------------------------------------------------------
// Listing

const MAX_RESULTS = 500;

/**
 * A Compute list answer: `{ kind, id, items?, nextPageToken?, selfLink }`. Items are filtered,
 * ordered by name (Google's default) or `creationTimestamp desc`, then paged.
 */
export function listResponse(
  all: Record<string, unknown>[],
  query: Record<string, string | string[]>,
  meta: { kind: string; id: string; selfLink: string },
): Record<string, unknown> {
  const q = (k: string) => (Array.isArray(query[k]) ? (query[k] as string[])[0] : (query[k] as string | undefined));
  const terms = parseFilter(q('filter') ?? '');
  let items = all.filter((r) => matches(r, terms));
  const orderBy = (q('orderBy') ?? 'name').trim();
  if (orderBy === 'name') items.sort((a, b) => String(a.name).localeCompare(String(b.name)));
  else if (orderBy === 'creationTimestamp desc') items.sort((a, b) => String(b.creationTimestamp).localeCompare(String(a.creationTimestamp)) || Number(BigInt(String(b.id)) - BigInt(String(a.id))));
  else throw invalidField('orderBy', orderBy, "Only 'name' and 'creationTimestamp desc' are supported.");

  const maxText = q('maxResults');
  const max = maxText === undefined || Number(maxText) === 0 ? MAX_RESULTS : Number(maxText);
  if (max > MAX_RESULTS) throw invalidField('maxResults', maxText, `Must be less than or equal to ${MAX_RESULTS}`);
  let offset = 0;
  const token = q('pageToken');
  if (token) {
    const decoded = decodeToken(token);
    if (decoded === undefined || decoded.f !== (q('filter') ?? '') || decoded.o !== orderBy) throw invalidField('pageToken', token, 'Invalid page token.');
    offset = decoded.n;
  }
  const page = items.slice(offset, offset + max);
  const out: Record<string, unknown> = { kind: meta.kind, id: meta.id };
  if (page.length) out.items = page;
  if (offset + max < items.length) out.nextPageToken = encodeToken({ n: offset + max, f: q('filter') ?? '', o: orderBy });
  out.selfLink = meta.selfLink;
  return out;
}

interface PageToken {
  n: number;
  f: string;
  o: string;
}

function encodeToken(t: PageToken): string {
  return Buffer.from(JSON.stringify(t)).toString('base64url');
}

function decodeToken(s: string): PageToken | undefined {
  try {
    const t = JSON.parse(Buffer.from(s, 'base64url').toString('utf8')) as PageToken;
    return Number.isInteger(t.n) && t.n >= 0 ? t : undefined;
  } catch {
    return undefined;
  }
}

/** A parsed field selection: each selected name, with the selection inside it (`true`: all of it). */
type Selection = Map<string, Selection | true>;

/**
 * Parses a partial-response field selection, as sent in the `fields` parameter or the
 * `X-Goog-FieldMask` header: names separated by `,`; `a/b` or `a.b` selects `b` inside `a`;
 * `a(b,c)` selects several fields inside `a`. Throws Compute's 400 for what it cannot read.
 */
export function parseFieldSelection(text: string): Selection {
  const bad = () => invalidField('fields', text, 'Invalid field selection.');
  let i = 0;
  const list = (): Selection => {
    const out: Selection = new Map();
    for (;;) {
      const m = /^[A-Za-z_*][A-Za-z0-9_]*/.exec(text.slice(i));
      if (!m) throw bad();
      const path = [m[0]];
      i += m[0].length;
      while (text[i] === '/' || text[i] === '.') {
        i++;
        const next = /^[A-Za-z_*][A-Za-z0-9_]*/.exec(text.slice(i));
        if (!next) throw bad();
        path.push(next[0]);
        i += next[0].length;
      }
      let inner: Selection | true = true;
      if (text[i] === '(') {
        i++;
        inner = list();
        if (text[i] !== ')') throw bad();
        i++;
      }
      // a/b/c(d) is a(b(c(d))); selections of the same name merge.
      let into = out;
      for (const [k, name] of path.entries()) {
        const last = k === path.length - 1;
        const prev = into.get(name);
        if (last) into.set(name, prev === true || inner === true ? true : merge(prev ?? new Map(), inner));
        else {
          if (prev === true) break;
          const sub: Selection = prev ?? new Map();
          into.set(name, sub);
          into = sub;
        }
      }
      if (text[i] !== ',') return out;
      i++;
    }
  };
  const merge = (a: Selection, b: Selection): Selection => {
    for (const [k, v] of b) {
      const prev = a.get(k);
      a.set(k, prev === true || v === true ? true : merge(prev ?? new Map(), v));
    }
    return a;
  };
  const sel = list();
  if (i !== text.length) throw bad();
  return sel;
}

/** Keeps only the selected fields of a JSON value (arrays: of each element; `*`: every key of a map). */
export function applyFieldSelection(value: unknown, sel: Selection | true): unknown {
  if (sel === true || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map((v) => applyFieldSelection(v, sel));
  const obj = value as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  const any = sel.get('*');
  for (const key of Object.keys(obj)) {
    const s = sel.get(key) ?? any;
    if (s !== undefined) out[key] = applyFieldSelection(obj[key], s);
  }
  return out;
}

/**
 * The partial response a request asked for with `fields` or `X-Goog-FieldMask` (the Compute
 * API's "partial response"), else the body unchanged.
 */
export function partialResponse(
  body: Record<string, unknown>,
  req: { query: Record<string, string | string[]>; headers: Record<string, string | string[] | undefined> },
  seen?: (fields: string) => void,
): Record<string, unknown> {
  const first = (v: string | string[] | undefined) => (Array.isArray(v) ? v[0] : v);
  const text = first(req.query.fields) ?? first(req.headers['x-goog-fieldmask']);
  if (text === undefined || text.trim() === '') return body;
  seen?.(text);
  return applyFieldSelection(body, parseFieldSelection(text.replace(/\s+/g, ''))) as Record<string, unknown>;
}
