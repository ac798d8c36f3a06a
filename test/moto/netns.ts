/**
 * The network-safety check of the moto project. moto hands out 54.x public and 172.31.x private
 * addresses and the library under test dials them (scheduler readiness), so these tests may only
 * run in a network namespace that has nothing but loopback (scripts/in-loopback-netns.sh makes
 * one). `assertLoopbackOnly()` refuses to go on anywhere else.
 */
import { execFileSync } from 'node:child_process';
import { networkInterfaces } from 'node:os';

/** Addresses moto hands out, and one of each other kind that must not be reachable either. */
export const MUST_BE_UNREACHABLE = ['54.1.2.3', '172.31.0.5', '10.0.0.1', '8.8.8.8'];

/** Why this process may not dial moto's addresses, or undefined when it is in a loopback-only namespace. */
export function loopbackOnlyProblem(): string | undefined {
  const links = Object.keys(networkInterfaces()).filter((name) => name !== 'lo');
  if (links.length > 0) return `interfaces other than lo: ${links.join(', ')}`;
  let routes: Array<{ dev?: string; dst?: string; table?: string }>;
  try {
    routes = JSON.parse(execFileSync('ip', ['-j', 'route', 'show', 'table', 'all'], { encoding: 'utf8', timeout: 10_000 })) as typeof routes;
  } catch (err) {
    return `cannot read the routing table (${(err as Error).message})`;
  }
  const foreign = routes.filter((r) => r.dev !== 'lo');
  if (foreign.length > 0) return `routes not on lo: ${foreign.map((r) => `${r.dst ?? '?'} dev ${r.dev ?? '?'}`).join('; ')}`;
  for (const addr of MUST_BE_UNREACHABLE) {
    try {
      const route = execFileSync('ip', ['route', 'get', addr], { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'pipe'] });
      return `${addr} is routable: ${route.trim()}`;
    } catch (err) {
      // The wanted outcome: "RTNETLINK answers: Network is unreachable".
      const stderr = String((err as { stderr?: unknown }).stderr ?? '');
      if (!/Network is unreachable/.test(stderr)) return `ip route get ${addr} failed in an unexpected way: ${stderr.trim() || (err as Error).message}`;
    }
  }
  return undefined;
}

/** Throws unless this process is in a namespace with only loopback (see the file comment). */
export function assertLoopbackOnly(): void {
  const problem = loopbackOnlyProblem();
  if (problem !== undefined) {
    throw new Error(
      `refusing to run the moto tests: this network namespace is not loopback-only (${problem}). ` +
        'moto hands out 54.x and 172.31.x addresses that the library dials: run them through ' +
        'scripts/in-loopback-netns.sh (npm test does), e.g. `scripts/in-loopback-netns.sh npx vitest run --project moto`',
    );
  }
}
