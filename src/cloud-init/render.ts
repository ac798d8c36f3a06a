/**
 * Renders the cloud-init user-data that turns a fresh VM into a Dask scheduler or worker.
 *
 * The templates live in the top-level `cloud-init/` folder as plain files. What a VM runs comes
 * from `daskProcessSpec` (the one source of truth, shared with LocalCluster); the templates only
 * ship it: TLS files, a launch file holding the exact args and env, a tiny launcher, and a
 * systemd unit that starts it after the user's bootstrap script succeeded.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadHandlebars, loadYaml } from '../lazy';
import { daskProcessSpec, type DaskFile, type ProcessRole } from '../dask/command';
import { pinnedDaskImage } from '../dask/images';
import { UserDataError, ValidationError } from '../errors';
import type { Security } from '../security/security';
import { registerHelpers, SYSTEMD_UNSAFE_PATH } from './helpers';
import { fitUserData, type GzipMode } from './limits';

/**
 * The Docker image the renderer uses when none is given: the pinned release. Clusters normally
 * pass the image matched to the local client (src/dask/images.ts).
 */
export const DEFAULT_DASK_IMAGE = pinnedDaskImage().image;

/** The interpreter the native runtime uses unless `pythonPath` says otherwise. */
export const DEFAULT_PYTHON_PATH = '/usr/bin/python3';

/** Where things live on the VM. The unit templates spell the same paths out for readability. */
export const VM_PATHS = Object.freeze({
  /** Mounted read-only into the container in the Docker runtime. */
  daskDir: '/etc/dask',
  tlsDir: '/etc/dask/tls',
  launchSpec: '/etc/dask/launch.json',
  launcher: '/etc/dask/launch.py',
  /** The scheduler's dashboard terminator (mutual TLS in front of the local-only dashboard). */
  dashboardTls: '/etc/dask/dashboard-tls.py',
  dashboardTlsUnit: '/etc/systemd/system/dask-dashboard-tls.service',
  /** The user's `bootstrap` commands as one script (root-only), run by `sh` with `set -eu`. */
  bootstrapScript: '/var/lib/dask-cloud/bootstrap.sh',
  /** Everything the bootstrap script printed (also copied to the console). */
  bootstrapLog: '/var/log/dask-cloud-bootstrap.log',
});

/**
 * How a failed bootstrap starts its report on the VM console: `dask-cloud: bootstrap failed
 * (exit 3): Dask is not started. …`, then its last lines, each prefixed `dask-cloud: | `.
 */
export const BOOTSTRAP_FAILED_MARK = 'dask-cloud: bootstrap failed';

/** Path of the systemd unit that runs the Dask process of `role`. */
export function unitPath(role: ProcessRole): string {
  return `/etc/systemd/system/${unitName(role)}`;
}

function unitName(role: ProcessRole): string {
  return `dask-${role}.service`;
}

/** Options for {@link renderUserData}. Options that belong to the other role or runtime are rejected. */
export interface UserDataOptions {
  role: ProcessRole;
  /** Credentials; the VM receives only its own role's key. `false` → plain `tcp://`, no TLS files. */
  security: Security | false;
  /** `docker` (default) runs `image` with host networking; `native` runs the VM's own Python. */
  runtime?: 'docker' | 'native';
  /** Docker runtime: image to run (default {@link DEFAULT_DASK_IMAGE}). Must provide `python` and `dask`. */
  image?: string;
  /** Docker runtime: install Docker when the VM image lacks it (default true). */
  installDocker?: boolean;
  /** Docker runtime: pass all GPUs to the container (`--gpus all`; needs the NVIDIA container toolkit). */
  gpu?: boolean;
  /** Native runtime: interpreter that runs the launcher (default `/usr/bin/python3`). */
  pythonPath?: string;
  /** Environment for the Dask process. Any value is safe: it travels in a JSON file, never through a shell. */
  env?: Record<string, string>;
  /**
   * Shell commands run before Dask starts: one `sh` script with `set -eu`, so a failing command
   * (or an unset variable, or a syntax error) fails the bootstrap, and `exit` ends only the
   * script. A failed bootstrap is reported on the console, Dask is not started, and with
   * `autoShutdown` the VM powers off.
   */
  bootstrap?: string[];
  /** Worker: the scheduler's private address, e.g. `tls://10.0.0.2:8786`. */
  schedulerAddress?: string;
  /** Scheduler: port (default 8786). */
  schedulerPort?: number;
  /**
   * Scheduler: dashboard address, or `false` for none. Default: Dask's (`:8787`), or
   * `127.0.0.1:8787` when `dashboardTlsPort` puts the terminator in front of it.
   */
  dashboardAddress?: string | false;
  /**
   * Scheduler with TLS on: the port of the dashboard's terminator (`dashboard-tls.py`, its own
   * unit, from the same image): it accepts only clients with a certificate of the cluster's CA
   * and forwards to the dashboard, which then listens on 127.0.0.1 only. `false`/unset: none.
   */
  dashboardTlsPort?: number | false;
  /** Scheduler: extra `dask scheduler` arguments. */
  schedulerOptions?: string[];
  /** Worker: extra `dask worker` arguments. */
  workerOptions?: string[];
  /** Worker: threads per worker. */
  nthreads?: number;
  /** Worker: memory limit, e.g. `'4GB'`, `'auto'`, `0`. */
  memoryLimit?: string | number;
  /** Worker: name. */
  workerName?: string;
  /** Scheduler: shut down after this long without clients or work (Dask duration, e.g. `'1 hour'`). */
  idleTimeout?: string;
  /** Power the VM off when the Dask process exits (default true): a safety net against forgotten VMs. */
  autoShutdown?: boolean;
  /** The provider's user-data limit in bytes (see `USER_DATA_LIMITS`). Unset: no check. */
  limitBytes?: number;
  /** `auto` (default): gzip only when the text exceeds `limitBytes`. */
  gzip?: GzipMode;
}

/** write_files' default `permissions` (cloud-init docs, module "Write Files": "Default: '0o644'"). */
const CLOUD_INIT_DEFAULT_MODE = '0644';

/** A file in write_files: Dask's own files, plus the bootstrap script (executable, root-only). */
type ShippedFile = Omit<DaskFile, 'mode'> & { mode: DaskFile['mode'] | '0700' };

/** Rendered user-data for one role. Identical for every VM of that role in a cluster. */
export interface RenderedUserData {
  role: ProcessRole;
  /** The cloud-config YAML, starting with `#cloud-config`. Holds the role's private key (base64). */
  text: string;
  /**
   * What to send as user-data: `text` in UTF-8, or its gzip when `gzipped`. Clouds that take
   * user-data as a string need a gzipped body base64-encoded (see `USER_DATA_LIMITS`).
   */
  body: Buffer;
  gzipped: boolean;
  /** Size of `text` in UTF-8 bytes. */
  rawBytes: number;
  /** Size of `body`: what counts against the provider's limit. */
  bytes: number;
}

/** Where templates come from. */
export interface UserDataRendererOptions {
  /** Folder holding the templates (default: the package's own `cloud-init/`). */
  templateDir?: string;
}

/** A renderer with its templates compiled once, on first use. */
export interface UserDataRenderer {
  readonly templateDir: string;
  render(options: UserDataOptions): RenderedUserData;
}

interface CompiledTemplates {
  cloudConfig: Record<ProcessRole, HandlebarsTemplateDelegate>;
  unit: Record<'docker' | 'native', HandlebarsTemplateDelegate>;
  /** Shipped copies of the plain files, comments stripped to save user-data bytes. */
  launcher: string;
  installDocker: string;
  runBootstrap: HandlebarsTemplateDelegate;
  dashboardTls: string;
  dashboardTlsUnit: HandlebarsTemplateDelegate;
}

/** Creates a renderer; templates are read and compiled on the first `render` and kept. */
export function createUserDataRenderer(rendererOptions: UserDataRendererOptions = {}): UserDataRenderer {
  const templateDir = rendererOptions.templateDir ?? findTemplateDir();
  let compiled: CompiledTemplates | undefined;
  return {
    templateDir,
    render(options: UserDataOptions): RenderedUserData {
      compiled ??= compileTemplates(templateDir);
      return render(compiled, options);
    },
  };
}

let defaultRenderer: UserDataRenderer | undefined;

/**
 * Renders the cloud-init user-data for a Dask scheduler or worker VM: the equivalent of
 * dask-cloudprovider's `get_cloud_init`, and exactly what dask-cloud sends to the cloud.
 *
 * @throws ValidationError for bad options; UserDataError `E_TEMPLATE` when a template fails,
 *   `E_USER_DATA_TOO_LARGE` when the result does not fit `limitBytes`.
 */
export function renderUserData(options: UserDataOptions): RenderedUserData {
  defaultRenderer ??= createUserDataRenderer();
  return defaultRenderer.render(options);
}

// The package ships `cloud-init/` beside `src/` or `dist/`: walk up from this file to find it.
function findTemplateDir(): string {
  const start = typeof __dirname === 'string' ? __dirname : process.cwd();
  for (let dir = start, i = 0; i < 8; i += 1) {
    const candidate = path.join(dir, 'cloud-init');
    if (fs.existsSync(path.join(candidate, 'worker.yaml.hbs'))) return candidate;
    const parent = path.dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  throw new UserDataError('E_TEMPLATE', `cannot find the cloud-init templates above ${start}; use createUserDataRenderer({ templateDir })`);
}

function templateError(message: string, cause: unknown): UserDataError {
  const why = cause instanceof Error ? cause.message : String(cause);
  return new UserDataError('E_TEMPLATE', `${message}: ${why}`, { cause });
}

function compileTemplates(dir: string): CompiledTemplates {
  const read = (name: string) => {
    try {
      return fs.readFileSync(path.join(dir, name), 'utf8');
    } catch (err) {
      throw templateError(`cannot read template ${name} in ${dir}`, err);
    }
  };
  // An isolated environment: no global helpers or partials shared with anyone else.
  const hb = loadHandlebars().create();
  registerHelpers(hb);
  const compile = (name: string, source: string) => {
    try {
      // Compile now rather than on first call, so syntax errors name the file.
      const template = hb.compile(source, { strict: true });
      hb.precompile(source, { strict: true });
      return template;
    } catch (err) {
      throw templateError(`template ${name} does not compile`, err);
    }
  };
  let partials: string[];
  try {
    partials = fs.readdirSync(path.join(dir, 'partials')).sort();
  } catch (err) {
    throw templateError(`cannot list the partials in ${dir}`, err);
  }
  for (const name of partials) {
    hb.registerPartial(name.replace(/\..*$/, ''), compile(`partials/${name}`, read(`partials/${name}`)));
  }
  const load = (name: string) => compile(name, read(name));
  return {
    cloudConfig: { scheduler: load('scheduler.yaml.hbs'), worker: load('worker.yaml.hbs') },
    unit: { docker: load('dask-docker.service.hbs'), native: load('dask-native.service.hbs') },
    launcher: stripComments(read('launch.py')),
    installDocker: stripComments(read('install-docker.sh')),
    runBootstrap: load('run-bootstrap.sh.hbs'),
    dashboardTls: stripComments(read('dashboard-tls.py')),
    dashboardTlsUnit: load('dashboard-tls.service.hbs'),
  };
}

/** Drops full-line `#` comments and blank lines (our own scripts have no multi-line strings). */
function stripComments(script: string): string {
  return script
    .split('\n')
    .filter((line) => line.trim() !== '' && !/^\s*#/.test(line))
    .join('\n')
    .concat('\n');
}

function run(name: string, template: HandlebarsTemplateDelegate, context: object): string {
  try {
    return template(context);
  } catch (err) {
    throw templateError(`template ${name} failed to render`, err);
  }
}

function render(t: CompiledTemplates, options: UserDataOptions): RenderedUserData {
  const o = validate(options);
  // The terminator needs TLS: without it there is no certificate to require.
  const tlsPort = o.role === 'scheduler' && o.security !== false && typeof o.dashboardTlsPort === 'number' ? o.dashboardTlsPort : undefined;
  const dashboardAddress = o.dashboardAddress ?? (tlsPort === undefined ? undefined : `127.0.0.1:${DASHBOARD_PORT}`);
  const spec = daskProcessSpec({
    role: o.role,
    security: o.security,
    tlsDir: VM_PATHS.tlsDir,
    port: o.schedulerPort,
    dashboardAddress,
    schedulerAddress: o.schedulerAddress,
    name: o.workerName,
    nthreads: o.nthreads,
    memoryLimit: o.memoryLimit,
    idleTimeout: o.idleTimeout,
    extraArgs: o.role === 'scheduler' ? o.schedulerOptions : o.workerOptions,
    env: o.env,
  });
  checkOnlyOwnKey(o.role, spec.files);

  const unitContext =
    o.runtime === 'docker'
      ? { role: o.role, image: o.image, gpu: o.gpu, autoShutdown: o.autoShutdown }
      : { role: o.role, pythonPath: o.pythonPath, autoShutdown: o.autoShutdown };
  const unit = run(`dask-${o.runtime}.service.hbs`, t.unit[o.runtime], unitContext);

  const files: ShippedFile[] = [
    ...spec.files,
    // 0600: the environment may carry the user's secrets.
    { path: VM_PATHS.launchSpec, content: `${JSON.stringify({ args: spec.args, env: spec.env })}\n`, mode: '0600' },
    { path: VM_PATHS.launcher, content: t.launcher, mode: '0644' },
    { path: unitPath(o.role), content: unit, mode: '0644' },
  ];
  let extraUnit = '';
  if (tlsPort !== undefined && o.security !== false && dashboardAddress !== false) {
    const env = o.security.env('scheduler', VM_PATHS.tlsDir);
    const target = dashboardAddress === undefined ? DASHBOARD_PORT : Number(/:(\d+)$/.exec(dashboardAddress)?.[1] ?? DASHBOARD_PORT);
    const args = [
      '--listen', `0.0.0.0:${tlsPort}`,
      '--target', `127.0.0.1:${target}`,
      '--ca', env.DASK_DISTRIBUTED__COMM__TLS__CA_FILE!,
      '--cert', env.DASK_DISTRIBUTED__COMM__TLS__SCHEDULER__CERT!,
      '--key', env.DASK_DISTRIBUTED__COMM__TLS__SCHEDULER__KEY!,
      ...(env.DASK_DISTRIBUTED__COMM__TLS__MIN_VERSION === undefined ? [] : ['--min-version', env.DASK_DISTRIBUTED__COMM__TLS__MIN_VERSION]),
      '--ciphers', env.DASK_DISTRIBUTED__COMM__TLS__CIPHERS!,
    ];
    const unitText = run('dashboard-tls.service.hbs', t.dashboardTlsUnit, { docker: o.runtime === 'docker', image: o.image, pythonPath: o.pythonPath, args });
    files.push({ path: VM_PATHS.dashboardTls, content: t.dashboardTls, mode: '0644' }, { path: VM_PATHS.dashboardTlsUnit, content: unitText, mode: '0644' });
    extraUnit = path.posix.basename(VM_PATHS.dashboardTlsUnit);
  }
  // No bootstrap, no script and no runner: the common case pays no bytes for it.
  let bootstrapRunner = '';
  if (o.bootstrap.length > 0) {
    // 0700: bootstrap commands often carry tokens (a private registry, a package index).
    files.push({ path: VM_PATHS.bootstrapScript, content: `set -eu\n${o.bootstrap.join('\n')}\n`, mode: '0700' });
    bootstrapRunner = stripComments(run('run-bootstrap.sh.hbs', t.runBootstrap, { autoShutdown: o.autoShutdown }));
  }
  const text = run(`${o.role}.yaml.hbs`, t.cloudConfig[o.role], {
    role: o.role,
    // cloud-init writes files 0644 unless told otherwise: only other modes are spelled out.
    files: files.map((f) => ({ path: f.path, content: f.content, mode: f.mode === CLOUD_INIT_DEFAULT_MODE ? '' : f.mode })),
    installDocker: o.runtime === 'docker' && o.installDocker,
    installDockerScript: t.installDocker,
    bootstrapRunner,
    unitName: unitName(o.role),
    extraUnit,
  });
  checkCloudConfig(o.role, text);
  const fitted = fitUserData(text, { limitBytes: o.limitBytes, gzip: o.gzip, what: `${o.role} user-data` });
  return { role: o.role, text, ...fitted };
}

/** Defence in depth: a VM must never receive a private key other than its own role's. */
function checkOnlyOwnKey(role: ProcessRole, files: DaskFile[]): void {
  const ownKey = `${VM_PATHS.tlsDir}/${role}.key`;
  for (const f of files) {
    if (f.content.includes('PRIVATE KEY') && f.path !== ownKey) {
      throw new UserDataError('E_TEMPLATE', `refusing to ship ${f.path} to a ${role}: only ${ownKey} may hold a private key`);
    }
  }
}

/** A template edit that breaks the YAML should fail here, not on a VM minutes later. */
function checkCloudConfig(role: ProcessRole, text: string): void {
  if (!text.startsWith('#cloud-config\n')) {
    throw new UserDataError('E_TEMPLATE', `${role} user-data does not start with a #cloud-config line`);
  }
  let doc: unknown;
  try {
    doc = loadYaml().parse(text);
  } catch (err) {
    throw templateError(`${role} user-data is not valid YAML`, err);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) {
    throw new UserDataError('E_TEMPLATE', `${role} user-data is not a YAML mapping`);
  }
}

type Validated = Required<
  Pick<UserDataOptions, 'role' | 'security' | 'runtime' | 'image' | 'installDocker' | 'gpu' | 'pythonPath' | 'bootstrap' | 'autoShutdown'>
> &
  UserDataOptions;

const SCHEDULER_ONLY = ['schedulerPort', 'dashboardAddress', 'dashboardTlsPort', 'schedulerOptions', 'idleTimeout'] as const;
/** Where Dask's scheduler dashboard listens unless told otherwise. */
const DASHBOARD_PORT = 8787;
const WORKER_ONLY = ['schedulerAddress', 'workerOptions', 'nthreads', 'memoryLimit', 'workerName'] as const;
const DOCKER_ONLY = ['image', 'installDocker', 'gpu'] as const;
const NATIVE_ONLY = ['pythonPath'] as const;

// Lone UTF-16 surrogates cannot be written as UTF-8: they would arrive on the VM altered.
const LONE_SURROGATE = /[\uD800-\uDFFF]/u;

function validate(options: UserDataOptions): Validated {
  if (typeof options !== 'object' || options === null) throw new ValidationError('user-data options must be an object');
  const fail = (option: string, message: string): never => {
    throw new ValidationError(message, { option });
  };
  const { role } = options;
  if (role !== 'scheduler' && role !== 'worker') fail('role', `role must be 'scheduler' or 'worker', got ${String(role)}`);
  const runtime = options.runtime ?? 'docker';
  if (runtime !== 'docker' && runtime !== 'native') fail('runtime', `runtime must be 'docker' or 'native', got ${String(runtime)}`);
  const sec = options.security as unknown;
  if (sec !== false && (typeof sec !== 'object' || sec === null || typeof (sec as Security).tlsFiles !== 'function')) {
    fail('security', 'security must be a Security object or false');
  }

  const rejectUnless = (keys: readonly (keyof UserDataOptions)[], allowed: boolean, why: string) => {
    for (const key of keys) {
      // `gpu: false` / `installDocker: false` ask for nothing, so they are harmless anywhere.
      if (options[key] !== undefined && options[key] !== false && !allowed) fail(key, `${key} ${why}`);
    }
  };
  rejectUnless(SCHEDULER_ONLY, role === 'scheduler', 'applies to the scheduler only');
  rejectUnless(WORKER_ONLY, role === 'worker', 'applies to workers only');
  rejectUnless(DOCKER_ONLY, runtime === 'docker', "applies to the 'docker' runtime only");
  rejectUnless(NATIVE_ONLY, runtime === 'native', "applies to the 'native' runtime only");

  const text = (key: keyof UserDataOptions, value: unknown, what: string): string => {
    if (typeof value !== 'string') return fail(key, `${what} must be a string`);
    if (value.includes('\0')) fail(key, `${what} contains a NUL character`);
    if (LONE_SURROGATE.test(value)) fail(key, `${what} contains an unpaired UTF-16 surrogate`);
    return value;
  };
  const stringList = (key: 'bootstrap' | 'schedulerOptions' | 'workerOptions') => {
    const value = options[key];
    if (value === undefined) return;
    if (!Array.isArray(value)) fail(key, `${key} must be an array of strings`);
    value.forEach((v, i) => text(key, v, `${key}[${i}]`));
  };
  stringList('bootstrap');
  stringList('schedulerOptions');
  stringList('workerOptions');

  if (options.env !== undefined) {
    if (typeof options.env !== 'object' || options.env === null || Array.isArray(options.env)) fail('env', 'env must be an object of strings');
    for (const [name, value] of Object.entries(options.env)) {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) fail('env', `env name ${JSON.stringify(name)} is not a valid variable name`);
      text('env', value, `env.${name}`);
    }
  }

  const image = options.image ?? DEFAULT_DASK_IMAGE;
  // Docker's reference grammar only uses these characters; anything else is a mistake.
  if (typeof image !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._\-/:@]*$/.test(image)) {
    fail('image', `image must be a Docker image reference such as ${DEFAULT_DASK_IMAGE}, got ${JSON.stringify(image)}`);
  }
  const pythonPath = options.pythonPath ?? DEFAULT_PYTHON_PATH;
  if (typeof pythonPath !== 'string' || !pythonPath.startsWith('/') || SYSTEMD_UNSAFE_PATH.test(pythonPath)) {
    fail('pythonPath', `pythonPath must be an absolute path without quotes, backslashes or control characters (systemd refuses them), got ${JSON.stringify(pythonPath)}`);
  }
  for (const key of ['installDocker', 'gpu', 'autoShutdown'] as const) {
    if (options[key] !== undefined && typeof options[key] !== 'boolean') fail(key, `${key} must be true or false`);
  }
  for (const key of ['schedulerPort', 'dashboardTlsPort'] as const) {
    const p = options[key];
    if (p === undefined || (key === 'dashboardTlsPort' && p === false)) continue;
    if (!Number.isInteger(p) || (p as number) < 1 || (p as number) > 65535) fail(key, `${key} must be an integer 1-65535, got ${String(p)}`);
  }
  if (options.nthreads !== undefined && (!Number.isInteger(options.nthreads) || options.nthreads < 1)) {
    fail('nthreads', `nthreads must be a positive integer, got ${String(options.nthreads)}`);
  }
  for (const key of ['idleTimeout', 'workerName', 'schedulerAddress'] as const) {
    if (options[key] !== undefined) text(key, options[key], key);
  }
  if (typeof options.dashboardAddress === 'string') text('dashboardAddress', options.dashboardAddress, 'dashboardAddress');
  else if (options.dashboardAddress !== undefined && options.dashboardAddress !== false) fail('dashboardAddress', 'dashboardAddress must be a string or false');
  if (typeof options.memoryLimit === 'string') text('memoryLimit', options.memoryLimit, 'memoryLimit');
  // Dask reads a number as bytes (or, up to 1, a fraction of the machine's memory).
  else if (options.memoryLimit !== undefined && !(typeof options.memoryLimit === 'number' && Number.isFinite(options.memoryLimit) && options.memoryLimit >= 0)) {
    fail('memoryLimit', `memoryLimit must be a string such as '4GB' or a number of bytes >= 0, got ${String(options.memoryLimit)}`);
  }

  return {
    ...options,
    role,
    runtime,
    image,
    pythonPath,
    installDocker: options.installDocker ?? true,
    gpu: options.gpu ?? false,
    autoShutdown: options.autoShutdown ?? true,
    bootstrap: options.bootstrap ?? [],
  };
}
