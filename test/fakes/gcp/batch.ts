/**
 * Compute Engine's HTTP batch endpoint, `POST /batch/compute/v1`
 * (https://cloud.google.com/compute/docs/api/how-tos/batch).
 *
 * Request: `Content-Type: multipart/mixed; boundary=B`; each part has `Content-Type:
 * application/http`, an optional `Content-ID`, a blank line, then a whole HTTP request whose
 * request line names a path only (`GET /compute/v1/projects/p/...` with or without ` HTTP/1.1`),
 * its headers, a blank line and its body. The outer request's headers (but its `Content-*` ones)
 * and query parameters apply to every inner request that does not set them itself.
 *
 * Answer: 200, `multipart/mixed` with one part per call in the order of the request, each
 * `Content-Type: application/http`, `Content-ID: response-ID` (`<response-ID>` for `<ID>`) when the
 * call had one, and a whole HTTP response (`HTTP/1.1 404 Not Found`, headers, blank line, body).
 * Inner calls run concurrently through the server's pipeline (contract, faults, handler). A batch
 * that cannot be taken apart is answered as a whole: 400 in Compute's error shape.
 */
import { randomBytes } from 'node:crypto';
import { STATUS_CODES, type IncomingHttpHeaders } from 'node:http';
import type { BatchEndpoint, FakeRequest, FakeResponse, RawHttpRequest, RawHttpResponse } from '../core';
import { badRequest } from './errors';

/** The Compute v1 discovery document's `batchPath`. */
export const BATCH_PATH = '/batch/compute/v1';
/** "You're limited to 1000 calls in a single batch request." */
export const BATCH_MAX_CALLS = 1000;

/** One call unwrapped from a batch. */
export interface BatchPart {
  contentId?: string;
  request: RawHttpRequest;
}

/** The endpoint FakeGcp hands to its FakeServer. */
export const computeBatch: BatchEndpoint = {
  path: BATCH_PATH,
  operation: 'compute.batch',
  async handle(req, runInner) {
    const parts = parseBatch(req);
    // The server may run the calls in any order: all at once here. Answers keep the request's order.
    const answers = await Promise.all(parts.map((p) => runInner(p.request)));
    return composeBatch(parts.map((p, i) => ({ contentId: p.contentId, response: answers[i] })));
  },
};

/** Takes a batch request apart; throws a 400 FakeApiError when it cannot. */
export function parseBatch(req: FakeRequest): BatchPart[] {
  const boundary = boundaryOf(String(req.headers['content-type'] ?? ''));
  const text = req.body.toString('latin1');
  const delimiter = new RegExp(`(?:^|\\r?\\n)--${escapeRegExp(boundary)}(--)?[ \\t]*(?:\\r?\\n|$)`, 'g');
  const found = [...text.matchAll(delimiter)];
  const close = found.findIndex((m) => m[1] === '--');
  if (close < 0) throw badRequest(`Malformed multipart body: no closing delimiter --${boundary}--.`);
  if (close === 0) throw badRequest('The batch request contains no parts.');
  if (close > BATCH_MAX_CALLS) throw badRequest(`A batch request may contain at most ${BATCH_MAX_CALLS} calls; this one has ${close}.`);
  const parts: BatchPart[] = [];
  for (let i = 0; i < close; i++) {
    const start = found[i].index! + found[i][0].length;
    parts.push(parsePart(text.slice(start, found[i + 1].index), i + 1, req));
  }
  return parts;
}

/** The multipart/mixed answer: one `application/http` part per call, in order. */
export function composeBatch(results: { contentId?: string; response: RawHttpResponse }[]): FakeResponse {
  const boundary = `batch_${randomBytes(12).toString('hex')}`;
  const chunks: Buffer[] = [];
  for (const { contentId, response } of results) {
    const partHead = ['Content-Type: application/http', ...(contentId === undefined ? [] : [`Content-ID: ${responseId(contentId)}`])];
    const httpHead = [
      `HTTP/1.1 ${response.status} ${STATUS_CODES[response.status] ?? ''}`.trimEnd(),
      ...Object.entries(response.headers).map(([k, v]) => `${k}: ${v}`),
    ];
    chunks.push(Buffer.from(`--${boundary}\r\n${partHead.join('\r\n')}\r\n\r\n${httpHead.join('\r\n')}\r\n\r\n`, 'latin1'), response.payload, Buffer.from('\r\n'));
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return { status: 200, headers: { 'content-type': `multipart/mixed; boundary=${boundary}` }, body: Buffer.concat(chunks) };
}

// ---------------------------------------------------------------------------------------------

/** RFC 2046 §5.1.1: 1–70 characters of a restricted set, not ending in a space. */
const BOUNDARY = /^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$/;

function boundaryOf(contentType: string): string {
  const [mediaType, ...params] = contentType.split(';');
  if (mediaType.trim().toLowerCase() !== 'multipart/mixed') {
    throw badRequest(`A batch request must be multipart/mixed, not '${mediaType.trim()}'.`);
  }
  for (const p of params) {
    const eq = p.indexOf('=');
    if (eq < 0 || p.slice(0, eq).trim().toLowerCase() !== 'boundary') continue;
    const value = p.slice(eq + 1).trim().replace(/^"(.*)"$/, '$1');
    if (!BOUNDARY.test(value)) throw badRequest(`Invalid multipart boundary '${value}'.`);
    return value;
  }
  throw badRequest('The multipart/mixed Content-Type of a batch request needs a boundary parameter.');
}

/** One part: its MIME headers, then the inner HTTP request. */
function parsePart(part: string, n: number, outer: FakeRequest): BatchPart {
  const mime = splitHead(part);
  const type = (mime.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
  if (type !== 'application/http') throw badRequest(`Part ${n} of the batch has Content-Type '${type}'; every part must be application/http.`);
  const inner = splitHead(mime.rest, true);
  const [requestLine = ''] = inner.lines;
  const m = /^([A-Za-z]+) +(\S+)(?: +HTTP\/\d(?:\.\d)?)? *$/.exec(requestLine);
  if (!m) throw badRequest(`Part ${n} of the batch has no valid request line: '${requestLine}'.`);
  const target = m[2];
  if (!target.startsWith('/')) throw badRequest(`Part ${n} of the batch names '${target}': a batched request gives the path only; full URLs are not allowed.`);
  const headers: IncomingHttpHeaders = {};
  for (const [k, v] of Object.entries(outer.headers)) if (!k.startsWith('content-')) headers[k] = v;
  Object.assign(headers, inner.headers);
  // An inner body that is only the line break before the next delimiter is no body.
  const body = Buffer.from(/^\s*$/.test(inner.rest) ? '' : inner.rest, 'latin1');
  return { contentId: mime.headers['content-id'], request: { method: m[1].toUpperCase(), url: withOuterQuery(target, outer.url), headers, body } };
}

/**
 * Lines up to the first blank line, their headers (lower-cased names; after the start line when
 * there is one), and what follows the blank line.
 */
function splitHead(text: string, startLine = false): { lines: string[]; headers: Record<string, string>; rest: string } {
  const blank = /\r?\n\r?\n/.exec(text);
  const head = blank ? text.slice(0, blank.index) : text.replace(/\r?\n$/, '');
  const rest = blank ? text.slice(blank.index + blank[0].length) : '';
  const lines = head.split(/\r?\n/);
  const headers: Record<string, string> = {};
  for (const line of startLine ? lines.slice(1) : lines) {
    const colon = line.indexOf(':');
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return { lines, headers, rest };
}

/** The outer request's query parameters, for those the inner request does not set. */
function withOuterQuery(target: string, outer: URL): string {
  if (!outer.search) return target;
  const url = new URL(target, 'http://batch.invalid');
  const own = new Set(url.searchParams.keys());
  for (const [k, v] of outer.searchParams) if (!own.has(k)) url.searchParams.append(k, v);
  return url.pathname + url.search;
}

/** `item1` → `response-item1`; `<item1:x@y>` → `<response-item1:x@y>` (the page's example). */
function responseId(contentId: string): string {
  const bracketed = /^<(.*)>$/.exec(contentId);
  return bracketed ? `<response-${bracketed[1]}>` : `response-${contentId}`;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
