/**
 * Compute's HTTP batch format (https://cloud.google.com/compute/docs/api/how-tos/batch): up to
 * 1,000 calls in one `POST /batch/compute/v1`, a `multipart/mixed` body whose parts are whole HTTP
 * requests (path only), answered by a `multipart/mixed` body of whole HTTP responses. Each inner
 * call still counts against the quotas as one request; what a batch saves is the round trips.
 * The REST client sends them (`ComputeRest.batch`, through `GcpApi.batch`).
 */
import { randomUUID } from 'node:crypto';

/** Calls one batch may carry (the documented limit). */
export const BATCH_MAX = 1000;

/** The batch endpoint's path (the API's `batchPath`). */
export const BATCH_PATH = '/batch/compute/v1';

/** One call inside a batch: a path under `/compute/v1/`, with its query string. */
export interface BatchCall {
  method: 'GET' | 'POST' | 'DELETE' | 'PATCH';
  path: string;
  body?: unknown;
}

/** One call's answer: its HTTP status and body text. */
export interface BatchAnswer {
  status: number;
  body: string;
}

/** The request body and its Content-Type. Part i carries `Content-ID: <item-i>`. */
export function encodeBatch(calls: readonly BatchCall[], boundary = `batch_${randomUUID().replace(/-/g, '')}`): { contentType: string; body: string } {
  if (calls.length > BATCH_MAX) throw new RangeError(`a Compute batch carries at most ${BATCH_MAX} calls, got ${calls.length}`);
  const parts = calls.map((c, i) => {
    if (!c.path.startsWith('/compute/v1/')) throw new RangeError(`a batch call's path must start with /compute/v1/, got ${c.path}`);
    const json = c.body === undefined ? undefined : JSON.stringify(c.body);
    const inner = [`${c.method} ${c.path} HTTP/1.1`, ...(json === undefined ? [] : ['Content-Type: application/json; charset=UTF-8']), '', json ?? ''];
    return [`--${boundary}`, 'Content-Type: application/http', `Content-ID: <item-${i}>`, '', ...inner].join('\r\n');
  });
  return { contentType: `multipart/mixed; boundary=${boundary}`, body: `${parts.join('\r\n')}\r\n--${boundary}--\r\n` };
}

/**
 * The answers, in the order of the calls (matched by `Content-ID: <response-item-i>`; by position
 * when a part has none). A call without an answer gets status 0. Throws on a body that is not a
 * batch answer.
 */
export function decodeBatch(contentType: string, text: string, count: number): BatchAnswer[] {
  const m = /boundary=(?:"([^"]+)"|([^;\s]+))/i.exec(contentType);
  const boundary = m?.[1] ?? m?.[2];
  if (!/^multipart\/mixed/i.test(contentType) || boundary === undefined) throw new Error(`the batch answer is not multipart/mixed (Content-Type: ${contentType || 'none'})`);
  const answers: BatchAnswer[] = Array.from({ length: count }, () => ({ status: 0, body: '' }));
  const chunks = text.split(`--${boundary}`).slice(1);
  let position = 0;
  for (const chunk of chunks) {
    if (chunk.startsWith('--')) break;
    const [partHead, response] = splitHead(chunk.replace(/^\r?\n/, ''));
    const id = /^content-id:\s*<?response-item-(\d+)>?\s*$/im.exec(partHead)?.[1];
    const index = id === undefined ? position : Number(id);
    position++;
    const [responseHead, body] = splitHead(response);
    const status = /^HTTP\/\d(?:\.\d)?\s+(\d{3})/.exec(responseHead)?.[1];
    if (status === undefined || index >= count) throw new Error('the batch answer holds a part that is not an HTTP response to one of its calls');
    answers[index] = { status: Number(status), body: body.replace(/\r?\n$/, '') };
  }
  return answers;
}

/** Splits at the first blank line: [headers, rest]. */
function splitHead(text: string): [string, string] {
  const m = /\r?\n\r?\n/.exec(text);
  return m ? [text.slice(0, m.index), text.slice(m.index + m[0].length)] : [text, ''];
}
