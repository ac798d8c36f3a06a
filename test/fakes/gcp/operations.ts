/**
 * Compute operations (zonal and global): `compute#operation` resources that go PENDING → RUNNING →
 * DONE, carry `error.errors[]` when the work failed, answer `get` at once and `wait` when DONE or
 * after two minutes (like Google), and back `requestId` idempotency.
 */
import { randomBytes } from 'node:crypto';
import type { Clock, IdAllocator } from '../core';
import { API, timestamp } from './catalog';
import { badRequest, notFound } from './errors';

export type OperationStatus = 'PENDING' | 'RUNNING' | 'DONE';

/** Where an operation lives: `zones/us-central1-a` or `global`. */
export type OperationScope = { zone: string } | 'global';

/** An error as it appears in `operation.error.errors[]`. */
export interface OperationError {
  code: string;
  message: string;
  /** HTTP status the synchronous equivalent would have had (`httpErrorStatusCode`). Default 400. */
  httpStatus?: number;
}

/** Google's `wait` returns after at most about two minutes even when the operation is not DONE. */
export const WAIT_MAX_MS = 120_000;

/** How long Google remembers a requestId (at least 60 minutes). */
const REQUEST_ID_TTL_MS = 60 * 60_000;

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const HTTP_MESSAGES: Record<number, string> = { 400: 'BAD REQUEST', 403: 'FORBIDDEN', 404: 'NOT FOUND', 409: 'CONFLICT', 412: 'PRECONDITION FAILED', 429: 'TOO MANY REQUESTS', 500: 'INTERNAL SERVER ERROR', 503: 'SERVICE UNAVAILABLE' };

export class Operation {
  /** The wire resource (mutated as the operation progresses). */
  readonly wire: Record<string, unknown>;
  private readonly waiters: (() => void)[] = [];

  constructor(
    private readonly clock: Clock,
    readonly scope: OperationScope,
    wire: Record<string, unknown>,
  ) {
    this.wire = wire;
  }

  get name(): string {
    return this.wire.name as string;
  }

  get status(): OperationStatus {
    return this.wire.status as OperationStatus;
  }

  /** PENDING → RUNNING (no-op once running or done). */
  run(): void {
    if (this.status !== 'PENDING') return;
    this.wire.status = 'RUNNING';
    this.wire.startTime = timestamp(this.clock.now());
  }

  /** → DONE, with errors if the work failed. Idempotent. */
  finish(errors: OperationError[] = []): void {
    if (this.status === 'DONE') return;
    this.run();
    this.wire.status = 'DONE';
    this.wire.progress = 100;
    this.wire.endTime = timestamp(this.clock.now());
    if (errors.length) {
      const http = errors[0].httpStatus ?? 400;
      this.wire.error = { errors: errors.map((e) => ({ code: e.code, message: e.message })) };
      this.wire.httpErrorStatusCode = http;
      this.wire.httpErrorMessage = HTTP_MESSAGES[http] ?? 'ERROR';
    }
    for (const w of this.waiters.splice(0)) w();
  }

  /** Resolves when DONE or after `maxMs` of the clock, whichever comes first. */
  waitDone(maxMs: number): Promise<void> {
    if (this.status === 'DONE') return Promise.resolve();
    return new Promise((resolve) => {
      let cancel: () => void = () => {};
      const done = () => {
        cancel();
        resolve();
      };
      this.waiters.push(done);
      cancel = this.clock.setTimeout(() => {
        const i = this.waiters.indexOf(done);
        if (i >= 0) this.waiters.splice(i, 1);
        resolve();
      }, maxMs);
    });
  }
}

export interface StartOperation {
  scope: OperationScope;
  operationType: string;
  /** Full URL of the target (`.../instances/NAME`). */
  targetLink: string;
  targetId?: string;
  extra?: Record<string, unknown>;
}

/** All operations of the fake's project, plus the requestId memory. */
export class Operations {
  private readonly byKey = new Map<string, Operation>();
  private readonly requestIds = new Map<string, { op: Operation; at: number }>();

  constructor(
    private readonly project: string,
    private readonly clock: Clock,
    private readonly ids: IdAllocator,
  ) {}

  /** Creates a PENDING operation that turns RUNNING on the next clock tick. */
  start(s: StartOperation): Operation {
    const now = this.clock.now();
    const name = `operation-${now}-${hex(13)}-${hex(8)}-${hex(8)}`;
    const scopeLink = s.scope === 'global' ? `${API}/projects/${this.project}/global` : `${API}/projects/${this.project}/zones/${s.scope.zone}`;
    const wire: Record<string, unknown> = {
      kind: 'compute#operation',
      id: this.ids.nextUint64(),
      name,
      ...(s.scope === 'global' ? {} : { zone: scopeLink }),
      operationType: s.operationType,
      targetLink: s.targetLink,
      ...(s.targetId ? { targetId: s.targetId } : {}),
      status: 'PENDING',
      user: `dask-cloud-tests@${this.project}.iam.gserviceaccount.com`,
      progress: 0,
      insertTime: timestamp(now),
      selfLink: `${scopeLink}/operations/${name}`,
      ...(s.extra ?? {}),
    };
    const op = new Operation(this.clock, s.scope, wire);
    this.byKey.set(key(s.scope, name), op);
    this.clock.setTimeout(() => op.run(), 0);
    return op;
  }

  /** The operation, or Compute's 404. */
  get(scope: OperationScope, name: string): Operation {
    const op = this.byKey.get(key(scope, name));
    if (!op) {
      const where = scope === 'global' ? 'global' : `zones/${scope.zone}`;
      throw notFound(`projects/${this.project}/${where}/operations/${name}`);
    }
    return op;
  }

  all(): Operation[] {
    return [...this.byKey.values()];
  }

  /**
   * requestId idempotency: the same requestId (a UUID, as Google requires) within the hour returns
   * the first request's operation and does nothing new. `create` runs only for a new requestId,
   * and only a request that produced an operation is remembered.
   */
  idempotent(requestId: string | undefined, create: () => Operation): Operation {
    if (requestId === undefined || requestId === '') return create();
    if (!UUID_RE.test(requestId) || /^0{8}-0{4}-0{4}-0{4}-0{12}$/.test(requestId)) {
      throw badRequest(`Invalid value for field 'requestId': '${requestId}'. The request ID must be a valid UUID with the exception that zero UUID is not supported.`, 'invalid');
    }
    const seen = this.requestIds.get(requestId);
    if (seen && this.clock.now() - seen.at < REQUEST_ID_TTL_MS) return seen.op;
    const op = create();
    this.requestIds.set(requestId, { op, at: this.clock.now() });
    return op;
  }
}

function key(scope: OperationScope, name: string): string {
  return `${scope === 'global' ? 'global' : scope.zone}/${name}`;
}

function hex(n: number): string {
  return randomBytes(Math.ceil(n / 2)).toString('hex').slice(0, n);
}
