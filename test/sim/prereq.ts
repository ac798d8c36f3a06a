/** Prerequisites of the simulated cloud, in the `have(...)` style of test/helpers/prereq.ts. */
import { execFileSync } from 'node:child_process';
import type { Prereq } from '../helpers/prereq';
import { imageStatus } from './image';

function works(cmd: string, args: string[]): boolean {
  try {
    execFileSync(cmd, args, { stdio: 'ignore', timeout: 10_000 });
    return true;
  } catch {
    return false;
  }
}

/** Root, the host tools (ip, nft, systemd-nspawn, unshare, setpriv, nsenter) and a current VM image. */
export const simulatedVms = (): Prereq => {
  if (process.getuid?.() !== 0) return { ok: false, reason: 'simulated VMs need root (network namespaces, systemd-nspawn)' };
  const tools: Array<[string, string[], string]> = [
    ['ip', ['-V'], 'iproute2'],
    ['nft', ['--version'], 'nftables'],
    ['systemd-nspawn', ['--version'], 'systemd-container'],
    ['unshare', ['--version'], 'util-linux'],
    ['setpriv', ['--version'], 'util-linux'],
    ['nsenter', ['--version'], 'util-linux'],
  ];
  const missing = tools.filter(([cmd, args]) => !works(cmd, args));
  if (missing.length > 0) {
    return {
      ok: false,
      reason: `missing ${missing.map((m) => m[0]).join(', ')}; install with \`apt-get install -y ${[...new Set(missing.map((m) => m[2]))].join(' ')}\` (scripts/build-vm-image.sh does this too)`,
    };
  }
  const img = imageStatus();
  if (!img.ok) return { ok: false, reason: img.reason };
  return { ok: true, reason: '' };
};
