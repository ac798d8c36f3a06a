/**
 * The client side of Compute's batch format (providers/gcp/batch.ts): what goes out, and how an
 * answer is read back into the order of the calls.
 */
import { describe, expect, it } from 'vitest';
import { BATCH_MAX, decodeBatch, encodeBatch } from '../../../providers/gcp/batch';

describe('GCP batch codec', () => {
  it('encodes each call as an application/http part with its Content-ID, path only, JSON body when given', () => {
    const { contentType, body } = encodeBatch(
      [
        { method: 'DELETE', path: '/compute/v1/projects/p/zones/z/instances/a?requestId=1' },
        { method: 'POST', path: '/compute/v1/projects/p/global/firewalls', body: { name: 'r' } },
      ],
      'BOUND',
    );
    expect(contentType).toBe('multipart/mixed; boundary=BOUND');
    expect(body).toBe(
      [
        '--BOUND',
        'Content-Type: application/http',
        'Content-ID: <item-0>',
        '',
        'DELETE /compute/v1/projects/p/zones/z/instances/a?requestId=1 HTTP/1.1',
        '',
        '',
        '--BOUND',
        'Content-Type: application/http',
        'Content-ID: <item-1>',
        '',
        'POST /compute/v1/projects/p/global/firewalls HTTP/1.1',
        'Content-Type: application/json; charset=UTF-8',
        '',
        '{"name":"r"}',
        '--BOUND--',
        '',
      ].join('\r\n'),
    );
  });

  it('refuses more calls than one batch may carry, and a path outside /compute/v1', () => {
    const call = { method: 'GET' as const, path: '/compute/v1/projects/p' };
    expect(() => encodeBatch(Array.from({ length: BATCH_MAX + 1 }, () => call))).toThrow(/at most 1000 calls, got 1001/);
    expect(() => encodeBatch([{ method: 'GET', path: 'https://compute.googleapis.com/compute/v1/projects/p' }])).toThrow(/must start with \/compute\/v1\//);
  });

  it('reads answers back into the order of the calls by Content-ID, whatever order they came in', () => {
    const part = (id: string, status: string, body: string) =>
      ['--b_1', 'Content-Type: application/http', `Content-ID: <response-item-${id}>`, '', `HTTP/1.1 ${status}`, 'Content-Type: application/json; charset=UTF-8', '', body].join('\r\n');
    const text = ['preamble', part('1', '404 Not Found', '{"error":{"code":404}}'), part('0', '200 OK', '{"name":"op-0"}'), '--b_1--', ''].join('\r\n');
    expect(decodeBatch('multipart/mixed; boundary="b_1"', text, 3)).toEqual([
      { status: 200, body: '{"name":"op-0"}' },
      { status: 404, body: '{"error":{"code":404}}' },
      { status: 0, body: '' },
    ]);
  });

  it('matches by position when a part has no Content-ID, and accepts bare LF line ends', () => {
    const text = '--x\nContent-Type: application/http\n\nHTTP/1.1 200 OK\n\n{}\n--x\nContent-Type: application/http\n\nHTTP/1.1 503 Service Unavailable\n\n\n--x--\n';
    expect(decodeBatch('multipart/mixed; boundary=x', text, 2)).toEqual([
      { status: 200, body: '{}' },
      { status: 503, body: '' },
    ]);
  });

  it('throws on an answer that is not a batch answer', () => {
    expect(() => decodeBatch('application/json', '{}', 1)).toThrow(/not multipart\/mixed \(Content-Type: application\/json\)/);
    expect(() => decodeBatch('multipart/mixed; boundary=x', '--x\r\n\r\nnot http\r\n--x--', 1)).toThrow(/not an HTTP response/);
    expect(() => decodeBatch('multipart/mixed; boundary=x', '--x\r\nContent-ID: <response-item-5>\r\n\r\nHTTP/1.1 200 OK\r\n\r\n{}\r\n--x--', 2)).toThrow(/not an HTTP response to one of its calls/);
  });
});
