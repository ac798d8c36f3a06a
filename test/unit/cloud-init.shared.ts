/**
 * Shared by the cloud-init tests: decoding rendered user-data back into files, and the matrix of
 * variants every check runs over.
 */
import { parse } from 'yaml';
import type { Security } from '../../src/security';
import type { UserDataOptions } from '../../src/cloud-init';

export interface ShippedFile {
  path: string;
  content: string;
  permissions: unknown;
  encoding: unknown;
}

export interface DecodedUserData {
  doc: Record<string, unknown>;
  files: ShippedFile[];
  file(path: string): ShippedFile;
  runcmd: unknown[];
}

/**
 * Parses rendered cloud-config and decodes every write_files entry. `permissions` is the mode the
 * file gets: cloud-init's default, 0644, when the entry has no permissions line (the schema test
 * checks that against cloud-init's own write_files module).
 */
export function decode(text: string): DecodedUserData {
  const doc = parse(text) as Record<string, unknown>;
  const entries = (doc.write_files ?? []) as Record<string, unknown>[];
  const files = entries.map((e) => ({
    path: e.path as string,
    content: e.encoding === 'b64' ? Buffer.from(e.content as string, 'base64').toString('utf8') : (e.content as string),
    permissions: e.permissions ?? '0644',
    encoding: e.encoding,
  }));
  return {
    doc,
    files,
    runcmd: (doc.runcmd ?? []) as unknown[],
    file(path: string) {
      const f = files.find((x) => x.path === path);
      if (!f) throw new Error(`no ${path} in write_files (have ${files.map((x) => x.path).join(', ')})`);
      return f;
    },
  };
}

/** Values that break naive shell or YAML pasting; each must arrive byte-for-byte. */
export const NASTY_ENV: Record<string, string> = {
  QUOTES: `it's "quoted" and 'single'`,
  SPACES: '  leading and trailing  ',
  NEWLINES: 'line one\nline two\r\n\ttabbed\n',
  DOLLAR: '$HOME ${PATH} $(id -u) $$',
  BACKTICKS: '`reboot` and \\`escaped\\`',
  YAML_LOOKALIKE: '- item: [1, 2] # not a comment\n---\n...',
  HANDLEBARS: '{{role}} {{{raw}}} {{> partial}}',
  SYSTEMD: '%h %n %% ${X}',
  UNICODE: 'naïve 日本 😀 \u2028sep\u2029 \u0085nel \u007fdel \u00a0nbsp',
  EMPTY: '',
};

export const BOOTSTRAP = [
  'echo "bootstrap $(hostname)" > /var/log/dask-bootstrap.log',
  "apt-get install -y 'htop' || true",
  'for i in 1 2; do echo `date` $i; done\necho multi-line done',
];

export interface Variant {
  name: string;
  options: UserDataOptions;
}

export interface SecurityCases {
  ec: Security;
  rsa: Security;
}

/**
 * scheduler/worker × docker/native × EC/RSA/no security × a plain and a "full" flavour (env,
 * bootstrap, GPU on Docker, idle timeout on the scheduler, autoShutdown off), plus a few singles.
 */
export function variants(sec: SecurityCases): Variant[] {
  const out: Variant[] = [];
  const securities: [string, Security | false][] = [
    ['ec', sec.ec],
    ['rsa', sec.rsa],
    ['nosec', false],
  ];
  for (const role of ['scheduler', 'worker'] as const) {
    for (const runtime of ['docker', 'native'] as const) {
      for (const [secName, security] of securities) {
        const base: UserDataOptions = { role, runtime, security };
        if (role === 'worker') base.schedulerAddress = security === false ? 'tcp://10.0.0.2:8786' : 'tls://10.0.0.2:8786';
        out.push({ name: `${role}/${runtime}/${secName}/plain`, options: base });
        const full: UserDataOptions = { ...base, env: NASTY_ENV, bootstrap: BOOTSTRAP, autoShutdown: false };
        if (runtime === 'docker') full.gpu = true;
        if (role === 'scheduler') Object.assign(full, { idleTimeout: '1 hour', dashboardAddress: ':8787', schedulerOptions: ['--preload', 'x'] });
        else Object.assign(full, { nthreads: 4, memoryLimit: '4GB', workerName: 'w-1', workerOptions: ['--nworkers', '2'] });
        out.push({ name: `${role}/${runtime}/${secName}/full`, options: full });
      }
    }
  }
  // The "full" flavour has autoShutdown off: the bootstrap runner's power-off branch needs its own.
  out.push({ name: 'worker/native/ec/bootstrap-auto-shutdown', options: { role: 'worker', runtime: 'native', security: sec.ec, schedulerAddress: 'tls://10.0.0.2:8786', bootstrap: BOOTSTRAP } });
  out.push({ name: 'worker/docker/ec/no-install-docker', options: { role: 'worker', security: sec.ec, schedulerAddress: 'tls://10.0.0.2:8786', installDocker: false } });
  out.push({ name: 'scheduler/docker/ec/no-dashboard', options: { role: 'scheduler', security: sec.ec, dashboardAddress: false } });
  // What a VM cluster's scheduler gets: the dashboard's terminator, as its own unit.
  out.push({ name: 'scheduler/docker/ec/dashboard-tls', options: { role: 'scheduler', security: sec.ec, dashboardTlsPort: 8788 } });
  out.push({ name: 'scheduler/native/rsa/dashboard-tls', options: { role: 'scheduler', runtime: 'native', security: sec.rsa, dashboardTlsPort: 8788, pythonPath: '/opt/my env/bin/python3', env: NASTY_ENV } });
  out.push({
    name: 'scheduler/native/ec/custom-python',
    options: { role: 'scheduler', security: sec.ec, runtime: 'native', pythonPath: '/opt/my env/bin/python3' },
  });
  out.push({ name: 'worker/docker/ec/custom-image', options: { role: 'worker', security: sec.ec, schedulerAddress: 'tls://10.0.0.2:8786', image: 'registry.example.com:5000/team/dask@sha256:' + 'a'.repeat(64) } });
  return out;
}
