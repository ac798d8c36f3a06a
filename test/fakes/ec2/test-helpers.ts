/** Shared setup for the EC2 fake's tests: a started fake, a real SDK client, a recording booter. */
import { EC2Client } from '@aws-sdk/client-ec2';
import { expect } from 'vitest';
import { assertNoContractViolations, type BootRequest, type BootedVm, type FirewallRule, type VmBooter } from '../core';
import { FakeEc2, type FakeEc2Options } from './fake-ec2';
import { imageIdFor } from './catalog';

export const DEBIAN_12 = imageIdFor('debian-12-amd64-20250115-1997');
export const DEBIAN_12_ARM = imageIdFor('debian-12-arm64-20250115-1997');

export interface Started {
  fake: FakeEc2;
  client: EC2Client;
}

/** Starts fakes and clients, and tears all of them down (checking the contract) in `teardown()`. */
export class Harness {
  private readonly started: Started[] = [];

  async start(opts: FakeEc2Options = {}, client: { maxAttempts?: number } = {}): Promise<Started> {
    const fake = await FakeEc2.start(opts);
    const s = { fake, client: new EC2Client(fake.clientConfig(client)) };
    this.started.push(s);
    return s;
  }

  async teardown(): Promise<void> {
    const all = this.started.splice(0);
    try {
      assertNoContractViolations(...all.map((s) => s.fake));
      for (const s of all) expect(s.fake.server.handlerErrors).toEqual([]);
    } finally {
      for (const s of all) s.client.destroy();
      await Promise.all(all.map((s) => s.fake.stop()));
    }
  }
}

/** Runs `fn` and returns the error it throws (fails the test if it does not throw). */
export async function caught(fn: () => Promise<unknown>): Promise<Error & { $metadata?: { httpStatusCode?: number; attempts?: number }; $fault?: string }> {
  try {
    await fn();
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected the call to fail');
}

export class RecordedVm implements BootedVm {
  readonly exited: Promise<void>;
  console = '';
  stopped = false;
  private resolveExit!: () => void;

  constructor(
    readonly request: BootRequest,
    private readonly booter: RecordingBooter,
  ) {
    this.exited = new Promise((r) => (this.resolveExit = r));
    this.console = `[    0.000000] booting ${request.id}\ncloud-init: user-data ${request.userData.length} bytes\n`;
  }

  /** While set, console reads wait for it (a slow read of the guest's console). */
  consoleGate: Promise<void> | undefined;

  async consoleOutput(): Promise<string> {
    await this.consoleGate;
    return this.console;
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.booter.stops.push(this.request.id);
    this.resolveExit();
  }

  /** The guest runs `shutdown -h now`. */
  powerOff(): void {
    this.resolveExit();
  }
}

/** A VmBooter that records what the fake asked of it. */
export class RecordingBooter implements VmBooter {
  readonly boots: BootRequest[] = [];
  readonly firewalls: { id: string; rules: FirewallRule[] }[] = [];
  readonly stops: string[] = [];
  readonly vms = new Map<string, RecordedVm>();

  async boot(vm: BootRequest): Promise<BootedVm> {
    this.boots.push(vm);
    const recorded = new RecordedVm(vm, this);
    this.vms.set(vm.id, recorded);
    return recorded;
  }

  setFirewall(id: string, rules: FirewallRule[]): void {
    this.firewalls.push({ id, rules });
  }

  /** The firewall a VM has now (from boot or its last setFirewall). */
  current(id: string): FirewallRule[] | undefined {
    const last = [...this.firewalls].reverse().find((f) => f.id === id);
    return last?.rules ?? this.boots.find((b) => b.id === id)?.firewall;
  }
}

/** Lets promise chains (boot → setFirewall) settle. */
export async function settle(): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
}

export function inCidr(ip: string, cidr: string): boolean {
  const toInt = (a: string) => a.split('.').reduce((acc, x) => acc * 256 + Number(x), 0);
  const [base, bits] = cidr.split('/');
  const size = 2 ** (32 - Number(bits));
  return Math.floor(toInt(ip) / size) === Math.floor(toInt(base) / size);
}
