/**
 * A logging proxy between the AWS SDK and moto. moto's own request log has no action names, so
 * the proxy reads each request's `Action` (EC2's Query protocol: a form-encoded POST body), passes
 * the request on unchanged, and records the answer's status and EC2 error code. The log has the
 * shape of FakeServer's (`received`, `calls(op)`, `operations()`), so tests assert exact call
 * sequences and "no mutating call" the same way against moto as against our fake.
 *
 * Every request is also checked against EC2's published contract (the one FakeEc2 enforces), in
 * record mode: moto decides what it accepts; a violation fails the test through
 * `assertNoContractViolations`, as with the fake.
 */
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { randomUUID } from 'node:crypto';
import { Contract, type ContractViolation } from '../fakes/core/contract';

/** One request that passed through, in FakeServer's `ReceivedCall` shape where it overlaps. */
export interface MotoCall {
  /** The EC2 action (`RunInstances`), or undefined for non-EC2 requests (moto's own API). */
  operation: string | undefined;
  method: string;
  path: string;
  /** Form fields as sent, flattened (`TagSpecification.1.Tag.1.Key`). */
  params: Record<string, string>;
  /** The form rebuilt as nested values (from the contract), as FakeServer's `normalized`. */
  normalized?: Record<string, unknown>;
  /** HTTP status of moto's answer (0 while in flight, 502 when moto did not answer). */
  status: number;
  /** `<Code>` of an EC2 error answer. */
  errorCode?: string;
  /** `<Message>` of an EC2 error answer. */
  errorMessage?: string;
  /** Answered by the proxy's `refuse` hook: moto never saw it. */
  refused?: boolean;
  /** moto's answer (XML), for what it handed out (e.g. the addresses in RunInstances). */
  response?: string;
  at: number;
}

/** An answer moto could not give: an HTML 500 (an unimplemented filter or a crash) or no answer. */
export interface MotoFailure {
  operation: string | undefined;
  status: number;
  body: string;
}

const BODY_LIMIT = 64 * 1024 * 1024;

function readAll(stream: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    stream.on('data', (c: Buffer) => {
      size += c.length;
      if (size > BODY_LIMIT) {
        stream.destroy(new Error('body too large for the moto proxy'));
        return;
      }
      chunks.push(c);
    });
    stream.on('end', () => resolve(Buffer.concat(chunks)));
    stream.on('error', reject);
  });
}

function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function xmlField(xml: string, name: string): string | undefined {
  const m = new RegExp(`<${name}>([\\s\\S]*?)</${name}>`).exec(xml);
  const cdata = m?.[1] !== undefined ? /^<!\[CDATA\[([\s\S]*)\]\]>$/.exec(m[1]) : null;
  if (cdata) return cdata[1];
  return m?.[1]?.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&amp;/g, '&');
}

export class LoggingProxy {
  /** Every request, in the order received. */
  readonly received: MotoCall[] = [];
  /** Requests that broke EC2's published contract (cleared by assertNoContractViolations). */
  readonly contractViolations: ContractViolation[] = [];
  /** Answers that are not EC2 answers: moto crashed or has no implementation (HTML 500), or did not answer. */
  readonly handlerErrors: MotoFailure[] = [];

  /**
   * Called with each request once it is logged and before it is passed on to moto (a test that
   * kills a client at its k-th mutating request hooks in here; the request still takes effect).
   */
  onRequest: ((call: MotoCall) => void) | undefined;
  /** Called with each call once moto's answer is recorded, before it goes back to the client. */
  onResponse: ((call: MotoCall) => void | Promise<void>) | undefined;
  /**
   * Fault injection in front of moto: an error returned here is answered in EC2's error shape and
   * the request never reaches moto (so a retry cannot duplicate anything there).
   */
  refuse: ((call: MotoCall) => { status: number; code: string; message: string } | undefined) | undefined;

  readonly #target: { host: string; port: number };
  readonly #contract = new Contract('ec2');
  readonly #sockets = new Set<Socket>();
  #server: Server | undefined;
  #port: number | undefined;

  constructor(target: { host: string; port: number }) {
    this.#target = target;
  }

  /** `http://127.0.0.1:PORT` of the proxy (what the SDK is pointed at). */
  get endpoint(): string {
    if (this.#port === undefined) throw new Error('moto proxy is not listening');
    return `http://127.0.0.1:${this.#port}`;
  }

  async start(): Promise<void> {
    const server = createServer((req, res) => {
      this.#handle(req, res).catch((err: unknown) => {
        if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
        res.end(`moto proxy: ${(err as Error).message}`);
      });
    });
    server.on('connection', (s) => {
      this.#sockets.add(s);
      s.on('close', () => this.#sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    this.#server = server;
    this.#port = (server.address() as AddressInfo).port;
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readAll(req);
    const url = new URL(req.url ?? '/', 'http://proxy.invalid');
    const method = (req.method ?? 'GET').toUpperCase();
    const text = body.toString('utf8');
    const isForm = String(req.headers['content-type'] ?? '').includes('application/x-www-form-urlencoded');
    const form: Record<string, string> = isForm ? Object.fromEntries(new URLSearchParams(text)) : {};
    const query = Object.fromEntries(url.searchParams);
    const params = { ...query, ...form };
    const operation = params.Action || undefined;
    const call: MotoCall = { operation, method, path: url.pathname, params, status: 0, at: Date.now() };
    this.received.push(call);
    if (operation !== undefined) {
      const result = this.#contract.validate({ method, path: url.pathname, query, form: params, bodyLength: body.length });
      if (result.normalized) call.normalized = result.normalized;
      this.contractViolations.push(...result.violations);
    }
    this.onRequest?.(call);
    const refusal = this.refuse?.(call);
    if (refusal) {
      call.status = refusal.status;
      call.errorCode = refusal.code;
      call.errorMessage = refusal.message;
      call.refused = true;
      const xml = `<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>${refusal.code}</Code><Message>${escapeXml(refusal.message)}</Message></Error></Errors><RequestID>${randomUUID()}</RequestID></Response>`;
      res.writeHead(refusal.status, { 'content-type': 'text/xml;charset=UTF-8', 'content-length': String(Buffer.byteLength(xml)) });
      res.end(xml);
      return;
    }

    const answer = await new Promise<{ status: number; headers: IncomingMessage['headers']; body: Buffer }>((resolve, reject) => {
      const out = httpRequest(
        { host: this.#target.host, port: this.#target.port, method, path: req.url, headers: { ...req.headers, host: `${this.#target.host}:${this.#target.port}` } },
        (r) => {
          readAll(r).then((b) => resolve({ status: r.statusCode ?? 502, headers: r.headers, body: b }), reject);
        },
      );
      out.on('error', reject);
      out.end(body);
    }).catch((err: unknown) => {
      call.status = 502;
      this.handlerErrors.push({ operation, status: 502, body: `moto did not answer: ${(err as Error).message}` });
      throw err;
    });

    call.status = answer.status;
    const answerText = answer.body.toString('utf8');
    call.response = answerText;
    if (answer.status >= 400) {
      call.errorCode = xmlField(answerText, 'Code');
      call.errorMessage = xmlField(answerText, 'Message');
      // An EC2 error always carries a <Code>; anything else is moto failing, not EC2 refusing.
      if (call.errorCode === undefined) this.handlerErrors.push({ operation, status: answer.status, body: answerText.slice(0, 2_000) });
    }
    await this.onResponse?.(call);
    const headers = { ...answer.headers };
    delete headers['transfer-encoding'];
    headers['content-length'] = String(answer.body.length);
    res.writeHead(answer.status, headers);
    res.end(answer.body);
  }

  /** Logged calls of one operation (or all calls when omitted). */
  calls(operation?: string): MotoCall[] {
    return operation === undefined ? [...this.received] : this.received.filter((c) => c.operation === operation);
  }

  /** EC2 operation names in the order received (moto's own API calls, e.g. reset, are left out). */
  operations(): (string | undefined)[] {
    return this.received.filter((c) => c.operation !== undefined).map((c) => c.operation);
  }

  /** Clears the request log, violations and failures. */
  clearLog(): void {
    this.received.length = 0;
    this.contractViolations.length = 0;
    this.handlerErrors.length = 0;
  }

  async stop(): Promise<void> {
    const server = this.#server;
    if (!server) return;
    this.#server = undefined;
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
