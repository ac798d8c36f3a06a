/** Tiny raw-HTTP client for the core tests (loopback only). */
import { request } from 'node:http';

export interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json(): any;
}

export function raw(
  url: string,
  opts: { method?: string; headers?: Record<string, string>; body?: string | object; form?: Record<string, string> } = {},
): Promise<RawResponse> {
  const u = new URL(url);
  if (u.hostname !== '127.0.0.1') throw new Error(`refusing to dial ${u.hostname}: loopback only`);
  let body: string | undefined;
  const headers: Record<string, string> = { ...(opts.headers ?? {}) };
  if (opts.form) {
    body = new URLSearchParams(opts.form).toString();
    headers['content-type'] = 'application/x-www-form-urlencoded; charset=utf-8';
  } else if (typeof opts.body === 'object') {
    body = JSON.stringify(opts.body);
    headers['content-type'] = 'application/json';
  } else body = opts.body;
  return new Promise((resolve, reject) => {
    const req = request(u, { agent: false, method: opts.method ?? (body === undefined ? 'GET' : 'POST'), headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json: () => JSON.parse(text) });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}
