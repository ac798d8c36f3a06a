import { loadNet } from '../lazy';
import { ValidationError } from '../errors';

/** A parsed Dask comm address. `host` carries no brackets, even for IPv6. */
export interface DaskAddress {
  protocol: 'tls' | 'tcp';
  host: string;
  port: number;
}

/**
 * Parse `tls://host:port` or `tcp://host:port` (IPv6 as `tls://[::1]:8786`).
 *
 * The protocol is required: Dask would read a bare `host:port` as plain tcp, and silently
 * dropping TLS is not a default we want. Throws `ValidationError` on anything else.
 */
export function parseAddress(address: string): DaskAddress {
  const bad = (why: string): ValidationError =>
    new ValidationError(`invalid scheduler address ${JSON.stringify(address)}: ${why}`, { option: 'address' });
  if (typeof address !== 'string') throw bad('not a string');
  const m = /^([a-z0-9+.-]+):\/\/(.*)$/i.exec(address.trim());
  if (!m) throw bad('expected tls://HOST:PORT or tcp://HOST:PORT');
  const protocol = m[1]!.toLowerCase();
  if (protocol !== 'tls' && protocol !== 'tcp') throw bad(`protocol ${protocol}:// is not supported (use tls:// or tcp://)`);
  const rest = m[2]!;

  let host: string;
  let portText: string;
  if (rest.startsWith('[')) {
    const close = rest.indexOf(']');
    if (close < 0) throw bad('unclosed [ in IPv6 host');
    host = rest.slice(1, close);
    if (loadNet().isIP(host) !== 6) throw bad(`${host} in brackets is not an IPv6 address`);
    if (rest[close + 1] !== ':') throw bad('missing :PORT after the IPv6 host');
    portText = rest.slice(close + 2);
  } else {
    const colon = rest.lastIndexOf(':');
    if (colon < 0) throw bad('missing :PORT');
    host = rest.slice(0, colon);
    portText = rest.slice(colon + 1);
    if (host.includes(':')) throw bad('IPv6 hosts must be written in brackets, e.g. tls://[::1]:8786');
    if (host.length === 0) throw bad('missing host');
    if (!/^[a-z0-9._-]+$/i.test(host)) throw bad(`host ${JSON.stringify(host)} is not a hostname or IP address`);
  }
  if (!/^[0-9]{1,5}$/.test(portText)) throw bad(`port ${JSON.stringify(portText)} is not a number`);
  const port = Number(portText);
  if (port < 1 || port > 65535) throw bad(`port ${port} is out of range 1-65535`);
  return { protocol, host, port };
}

/** Inverse of {@link parseAddress}: brackets IPv6 hosts. */
export function formatAddress(a: DaskAddress): string {
  const host = loadNet().isIP(a.host) === 6 ? `[${a.host}]` : a.host;
  return `${a.protocol}://${host}:${a.port}`;
}
