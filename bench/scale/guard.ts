/**
 * Network safety for the benchmark's child process (FACTS.md: no traffic off this machine). Every
 * address the fakes hand out is on loopback, so nothing should ever dial elsewhere; this makes
 * sure of it: a TCP connection to anything but 127/8, ::1 or `localhost`, and any DNS look-up of
 * another name, fails locally before a packet is sent, and is counted.
 */
// The modules themselves (not namespace copies), so their functions can be replaced.
import dns = require('node:dns');
import net = require('node:net');

export const refused: string[] = [];

function loopbackHost(host: string | undefined): boolean {
  if (host === undefined || host === '' || host === 'localhost') return true;
  const h = host.replace(/^\[|\]$/g, '');
  if (net.isIPv4(h)) return h.startsWith('127.');
  if (net.isIPv6(h)) return h === '::1' || /^::ffff:127\./i.test(h);
  return false;
}

function refuse(what: string): Error {
  refused.push(what);
  const err = new Error(`network guard: refusing ${what} (only loopback may be dialled)`) as NodeJS.ErrnoException;
  err.code = 'ECONNREFUSED';
  return err;
}

let installed = false;

export function installNetworkGuard(): void {
  if (installed) return;
  installed = true;
  const proto = net.Socket.prototype as unknown as { connect: (...args: unknown[]) => net.Socket };
  const original = proto.connect;
  proto.connect = function guardedConnect(this: net.Socket, ...args: unknown[]): net.Socket {
    const first = args[0];
    let host: string | undefined;
    let isPath = false;
    if (Array.isArray(first)) {
      // Node's internal normalized form: [options, callback].
      const o = first[0] as { host?: string; path?: string } | undefined;
      host = o?.host;
      isPath = typeof o?.path === 'string';
    } else if (first !== null && typeof first === 'object') {
      const o = first as { host?: string; path?: string };
      host = o.host;
      isPath = typeof o.path === 'string';
    } else if (typeof first === 'string' && !/^\d+$/.test(first)) {
      isPath = true; // a Unix socket path
    } else if (typeof args[1] === 'string') {
      host = args[1];
    }
    if (!isPath && !loopbackHost(host)) {
      const err = refuse(`a connection to ${host}`);
      process.nextTick(() => this.destroy(err));
      return this;
    }
    return original.apply(this, args);
  };
  const lookup = dns.lookup as unknown as (...args: unknown[]) => void;
  (dns as unknown as { lookup: unknown }).lookup = function guardedLookup(hostname: string, ...rest: unknown[]): void {
    if (!loopbackHost(hostname)) {
      const cb = rest[rest.length - 1];
      const err = refuse(`a DNS look-up of ${hostname}`);
      if (typeof cb === 'function') process.nextTick(() => (cb as (e: Error) => void)(err));
      return;
    }
    lookup.call(dns, hostname, ...rest);
  };
  const plookup = dns.promises.lookup;
  (dns.promises as unknown as { lookup: unknown }).lookup = async (hostname: string, ...rest: unknown[]) => {
    if (!loopbackHost(hostname)) throw refuse(`a DNS look-up of ${hostname}`);
    return (plookup as (...a: unknown[]) => unknown)(hostname, ...rest);
  };
}
