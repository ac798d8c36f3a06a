/** IPv4 arithmetic and route checks for the simulated cloud. */
import { SimError, run } from './exec';
import { SIM_BLOCK } from './state';

export function ipToInt(ip: string): number {
  const parts = ip.split('.').map((p) => Number(p));
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) {
    throw new SimError(`not an IPv4 address: ${JSON.stringify(ip)}`);
  }
  return ((parts[0]! << 24) >>> 0) + (parts[1]! << 16) + (parts[2]! << 8) + parts[3]!;
}

export function intToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export function parseCidr(cidr: string): { base: number; bits: number } {
  const [a, b] = cidr.split('/');
  const bits = b === undefined ? 32 : Number(b);
  if (!Number.isInteger(bits) || bits < 0 || bits > 32) throw new SimError(`bad CIDR ${cidr}`);
  const mask = bits === 0 ? 0 : (~0 << (32 - bits)) >>> 0;
  return { base: (ipToInt(a!) & mask) >>> 0, bits };
}

export function inCidr(ip: string, cidr: string): boolean {
  const { base, bits } = parseCidr(cidr);
  const mask = bits === 0 ? 0 : (~0 << (32 - bits)) >>> 0;
  return ((ipToInt(ip) & mask) >>> 0) === base;
}

export interface RouteInfo {
  dst: string;
  dev?: string;
  gateway?: string;
  prefsrc?: string;
  type?: string;
}

/**
 * `ip route get ADDR` in a namespace (or the root namespace when `ns` is null). Returns null when
 * the kernel has no route (unreachable / blackhole): nothing could leave towards ADDR.
 */
export async function routeGet(ns: string | null, addr: string): Promise<RouteInfo | null> {
  const args = [...(ns ? ['-n', ns] : []), '-j', 'route', 'get', addr];
  const r = await run('ip', args, { timeoutMs: 5_000, check: false });
  if (r.code !== 0) return null;
  const parsed = JSON.parse(r.stdout) as RouteInfo[];
  const route = parsed[0] ?? null;
  if (route && (route.type === 'blackhole' || route.type === 'unreachable' || route.type === 'prohibit')) return null;
  return route;
}

/**
 * Refuses to let anything dial `addr` from namespace `ns` (null = root namespace) unless the
 * address is in our block and the kernel routes it to a directly attached link of ours (no gateway).
 * `allowedDevs`, when given, is the set of interfaces the route must use.
 */
export async function assertLocalRoute(ns: string | null, addr: string, allowedDevs?: string[]): Promise<RouteInfo> {
  if (!inCidr(addr, SIM_BLOCK)) {
    throw new SimError(`refusing to dial ${addr}: outside the simulated cloud's block ${SIM_BLOCK}`);
  }
  const route = await routeGet(ns, addr);
  const where = ns ?? 'the root namespace';
  if (!route) throw new SimError(`refusing to dial ${addr} from ${where}: no route (it would not be reachable)`);
  if (route.gateway) {
    throw new SimError(`refusing to dial ${addr} from ${where}: it is routed via gateway ${route.gateway} (dev ${route.dev})`);
  }
  if (allowedDevs && !allowedDevs.includes(route.dev ?? '')) {
    throw new SimError(`refusing to dial ${addr} from ${where}: routed via ${route.dev}, not one of ${allowedDevs.join(', ')}`);
  }
  return route;
}

/** Throws unless namespace `ns` has no default route (IPv4). */
export async function assertNoDefaultRoute(ns: string): Promise<void> {
  const r = await run('ip', ['-n', ns, '-4', 'route', 'show', 'default'], { timeoutMs: 5_000 });
  if (r.stdout.trim() !== '') throw new SimError(`namespace ${ns} has a default route (${r.stdout.trim()}): refusing to use it`);
}
