/**
 * The renderer ships exactly what daskProcessSpec returns, byte-for-byte, whatever the values;
 * rejects bad options; reports template failures as E_TEMPLATE; and fits the provider's limit.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createUserDataRenderer,
  DEFAULT_DASK_IMAGE,
  fitUserData,
  renderUserData,
  unitPath,
  USER_DATA_LIMITS,
  VM_PATHS,
  type UserDataOptions,
} from '../../src/cloud-init';
import { systemdExecutable, systemdWord, yamlJson } from '../../src/cloud-init/helpers';
import { daskProcessSpec } from '../../src/dask/command';
import { DaskCloudError, UserDataError, ValidationError } from '../../src/errors';
import { Security } from '../../src/security';
import { have } from '../helpers/prereq';
import { BOOTSTRAP, decode, NASTY_ENV, variants, type SecurityCases } from './cloud-init.shared';

const TEMPLATES = path.resolve(__dirname, '../../cloud-init');
const SCHED = 'tls://10.0.0.2:8786';

/** The daskProcessSpec call the renderer is expected to make for these options. */
function expectedSpec(o: UserDataOptions) {
  return daskProcessSpec({
    role: o.role,
    security: o.security,
    tlsDir: VM_PATHS.tlsDir,
    port: o.schedulerPort,
    // With the terminator in front (TLS on), the dashboard listens on loopback unless told otherwise.
    dashboardAddress: o.dashboardAddress ?? (o.dashboardTlsPort && o.security !== false ? '127.0.0.1:8787' : undefined),
    schedulerAddress: o.schedulerAddress,
    name: o.workerName,
    nthreads: o.nthreads,
    memoryLimit: o.memoryLimit,
    idleTimeout: o.idleTimeout,
    extraArgs: o.role === 'scheduler' ? o.schedulerOptions : o.workerOptions,
    env: o.env,
  });
}

function errorOf(fn: () => unknown): DaskCloudError {
  try {
    fn();
  } catch (err) {
    if (DaskCloudError.isInstance(err)) return err;
    throw err;
  }
  throw new Error('expected an error');
}

const pyyaml = () => ({
  ok: spawnSync('/usr/bin/python3', ['-c', 'import yaml']).status === 0,
  reason: 'PyYAML (cloud-init parses user-data with it) is missing; install it with `apt-get install -y cloud-init`',
});
const HAVE_PYYAML = have(pyyaml());

/** PyYAML is what cloud-init parses user-data with: ask it directly. */
function pyyamlLoad(text: string): unknown {
  const out = execFileSync('/usr/bin/python3', ['-c', 'import sys, json, yaml; json.dump(yaml.safe_load(sys.stdin.buffer), sys.stdout)'], {
    input: text,
  });
  return JSON.parse(out.toString());
}

let sec: SecurityCases;
beforeAll(async () => {
  const [ec, rsa] = await Promise.all([Security.temporary(), Security.temporary({ keyAlgorithm: 'rsa-2048' })]);
  sec = { ec, rsa };
});

describe('renderUserData: what the VM receives', () => {
  it('a secure Docker worker gets its TLS files, the launch spec, the launcher and the unit — as exact text', () => {
    const r = renderUserData({ role: 'worker', security: sec.ec, schedulerAddress: SCHED });
    expect(r.role).toBe('worker');
    expect(r.text.startsWith('#cloud-config\n')).toBe(true);
    const d = decode(r.text);
    expect(Object.keys(d.doc)).toEqual(['write_files', 'runcmd']);
    expect(d.files.map((f) => [f.path, f.permissions, f.encoding])).toEqual([
      ['/etc/dask/tls/ca.pem', '0644', undefined],
      ['/etc/dask/tls/worker.pem', '0644', undefined],
      ['/etc/dask/tls/worker.key', '0600', undefined],
      ['/etc/dask/launch.json', '0600', undefined],
      ['/etc/dask/launch.py', '0644', undefined],
      ['/etc/systemd/system/dask-worker.service', '0644', undefined],
    ]);
    // cloud-init's default mode is not spelled out: only the two 0600 files carry a permissions line.
    expect(r.text.match(/^ {4}permissions: /gm)).toHaveLength(2);
    // TLS files are exactly what Security hands out for this role.
    const tls = sec.ec.tlsFiles('worker', VM_PATHS.tlsDir);
    expect(d.files.slice(0, 3).map((f) => ({ path: f.path, content: f.content, mode: f.permissions }))).toEqual(tls);
    // Everything travels as JSON strings: no HTML entities in the YAML itself.
    expect(r.text).not.toMatch(/&(#x?[0-9a-f]+|quot|amp|lt|gt);/i);
    expect(r.gzipped).toBe(false);
    expect(r.body.equals(Buffer.from(r.text))).toBe(true);
    expect(r.rawBytes).toBe(Buffer.byteLength(r.text));
    expect(r.bytes).toBe(r.rawBytes);
  });

  it('launch.json holds exactly daskProcessSpec args and env, for every variant', () => {
    for (const v of variants(sec)) {
      const d = decode(renderUserData(v.options).text);
      const spec = expectedSpec(v.options);
      expect(JSON.parse(d.file(VM_PATHS.launchSpec).content), v.name).toEqual({ args: spec.args, env: spec.env });
      for (const f of spec.files) {
        expect(d.file(f.path).content, `${v.name} ${f.path}`).toBe(f.content);
        expect(d.file(f.path).permissions, `${v.name} ${f.path}`).toBe(f.mode);
      }
      const tlsShipped = d.files.filter((f) => f.path.startsWith(`${VM_PATHS.tlsDir}/`)).length;
      expect(tlsShipped, v.name).toBe(spec.files.length);
      for (const f of d.files) expect(f.path === VM_PATHS.bootstrapScript ? ['0700'] : ['0600', '0644'], `${v.name} ${f.path}`).toContain(f.permissions);
    }
  });

  it.runIf(HAVE_PYYAML)('env values with quotes, spaces, newlines, $(...), backticks and odd Unicode arrive exactly (yaml and PyYAML)', () => {
    const r = renderUserData({ role: 'worker', security: sec.ec, schedulerAddress: SCHED, env: NASTY_ENV, bootstrap: BOOTSTRAP });
    const spec = JSON.parse(decode(r.text).file(VM_PATHS.launchSpec).content);
    for (const [k, v] of Object.entries(NASTY_ENV)) expect(spec.env[k], k).toBe(v);
    // cloud-init's own parser sees the same document as ours.
    const viaPy = pyyamlLoad(r.text) as { runcmd: unknown[]; write_files: { content: string }[] };
    expect(viaPy).toEqual(decode(r.text).doc);
    // The bootstrap commands travel as one script, exactly as given.
    const script = viaPy.write_files.find((f) => (f as { path?: string }).path === VM_PATHS.bootstrapScript);
    expect(script?.content).toBe(`set -eu\n${BOOTSTRAP.join('\n')}\n`);
  });

  it('runcmd: Docker install, then the bootstrap script (test/unit/cloud-init-bootstrap.test.ts runs it), then the Dask unit', () => {
    const docker = decode(renderUserData({ role: 'worker', security: false, schedulerAddress: 'tcp://10.0.0.2:8786', bootstrap: BOOTSTRAP }).text);
    expect(docker.runcmd[0]).toMatch(/command -v docker[\s\S]*apt-get install -yq docker\.io[\s\S]*systemctl enable --now docker/);
    expect(docker.runcmd[0]).not.toMatch(/^\s*#/m); // comments stripped from the shipped copy
    expect(docker.runcmd[1]).toContain(`/bin/sh ${VM_PATHS.bootstrapScript}`);
    expect(docker.runcmd.slice(2)).toEqual([['systemctl', 'daemon-reload'], ['systemctl', 'enable', '--now', 'dask-worker.service']]);

    const noInstall = decode(renderUserData({ role: 'scheduler', security: false, installDocker: false }).text);
    expect(noInstall.runcmd).toEqual([['systemctl', 'daemon-reload'], ['systemctl', 'enable', '--now', 'dask-scheduler.service']]);
    const native = decode(renderUserData({ role: 'scheduler', security: false, runtime: 'native', bootstrap: ['true'] }).text);
    expect(native.runcmd.slice(1)).toEqual([['systemctl', 'daemon-reload'], ['systemctl', 'enable', '--now', 'dask-scheduler.service']]);
    expect(native.file(VM_PATHS.bootstrapScript).content).toBe('set -eu\ntrue\n');
  });

  it('docker unit: foreground docker run of the pinned image with host networking, read-only /etc/dask, optional GPUs', () => {
    const unitOf = (o: UserDataOptions) => decode(renderUserData(o).text).file(unitPath(o.role)).content;
    const plain = unitOf({ role: 'worker', security: sec.ec, schedulerAddress: SCHED });
    const execStart = plain.split('\n').find((l) => l.startsWith('ExecStart='));
    expect(execStart).toBe(
      `ExecStart=/usr/bin/docker run --rm --name dask-worker --network host --restart no -v /etc/dask:/etc/dask:ro "${DEFAULT_DASK_IMAGE}" python ${VM_PATHS.launcher} ${VM_PATHS.launchSpec}`,
    );
    expect(DEFAULT_DASK_IMAGE).toMatch(/^ghcr\.io\/dask\/dask:20\d\d\.\d+\.\d+$/);
    expect(plain).toContain('Restart=no');
    expect(plain).toMatch(/^ExecStopPost=.*shutdown -h now/m);
    expect(plain).toContain('WantedBy=multi-user.target');
    expect(plain).not.toContain('{{');

    const gpu = unitOf({ role: 'scheduler', security: sec.ec, gpu: true, autoShutdown: false, image: 'my.reg:5000/dask:gpu-1' });
    expect(gpu).toContain(' --gpus all "my.reg:5000/dask:gpu-1" python ');
    expect(gpu).not.toContain('ExecStopPost');
  });

  it('native unit: the chosen interpreter runs the launcher; auto-shutdown by default', () => {
    const d = decode(renderUserData({ role: 'scheduler', security: sec.ec, runtime: 'native', pythonPath: '/opt/my env/bin/python3' }).text);
    const unit = d.file('/etc/systemd/system/dask-scheduler.service').content;
    expect(unit).toMatch(/^ExecStart="\/opt\/my env\/bin\/python3" \/etc\/dask\/launch\.py \/etc\/dask\/launch\.json$/m);
    expect(unit).toMatch(/^ExecStopPost=/m);
    expect(unit).not.toContain('docker');
    const dflt = decode(renderUserData({ role: 'scheduler', security: false, runtime: 'native' }).text);
    expect(dflt.file('/etc/systemd/system/dask-scheduler.service').content).toContain('ExecStart="/usr/bin/python3" /etc/dask/launch.py');
  });

  it('ships the launcher from cloud-init/launch.py without its comments', () => {
    const shipped = decode(renderUserData({ role: 'scheduler', security: false }).text).file(VM_PATHS.launcher).content;
    const source = fs.readFileSync(path.join(TEMPLATES, 'launch.py'), 'utf8');
    const code = source.split('\n').filter((l) => l.trim() !== '' && !l.trim().startsWith('#'));
    expect(shipped).toBe(`${code.join('\n')}\n`);
    expect(shipped).toContain('os.execve');
  });

  it('the security: false scheduler has no TLS material and plain tcp', () => {
    const d = decode(renderUserData({ role: 'scheduler', security: false }).text);
    expect(d.files.map((f) => f.path)).toEqual([VM_PATHS.launchSpec, VM_PATHS.launcher, '/etc/systemd/system/dask-scheduler.service']);
    const spec = JSON.parse(d.file(VM_PATHS.launchSpec).content);
    expect(spec).toEqual({ args: ['scheduler', '--port', '8786'], env: {} });
  });

  it('dashboardTlsPort: the scheduler gets the terminator and its unit; the dashboard moves to loopback; never without TLS or on a worker', () => {
    for (const runtime of ['docker', 'native'] as const) {
      const d = decode(renderUserData({ role: 'scheduler', security: sec.ec, runtime, dashboardTlsPort: 8788 }).text);
      expect(d.files.map((f) => f.path)).toEqual(expect.arrayContaining([VM_PATHS.dashboardTls, VM_PATHS.dashboardTlsUnit]));
      // Dask's dashboard binds the VM's loopback only: the terminator is the one door.
      expect(JSON.parse(d.file(VM_PATHS.launchSpec).content).args).toEqual(expect.arrayContaining(['--dashboard-address', '127.0.0.1:8787']));
      const unit = d.file(VM_PATHS.dashboardTlsUnit).content;
      const exec = /^ExecStart=(.*)$/m.exec(unit)![1]!;
      expect(exec).toContain(runtime === 'docker' ? `--network host --restart no -v /etc/dask:/etc/dask:ro "${DEFAULT_DASK_IMAGE}" python /etc/dask/dashboard-tls.py` : '"/usr/bin/python3" /etc/dask/dashboard-tls.py');
      expect(exec).toContain('"--listen" "0.0.0.0:8788" "--target" "127.0.0.1:8787" "--ca" "/etc/dask/tls/ca.pem" "--cert" "/etc/dask/tls/scheduler.pem" "--key" "/etc/dask/tls/scheduler.key"');
      expect(exec).toContain('"--ciphers"');
      // Not tied to the scheduler's power-off: a terminator that exits is restarted.
      expect(unit).toMatch(/^Restart=on-failure$/m);
      expect(unit).not.toContain('poweroff');
      expect(d.runcmd.at(-1)).toEqual(['systemctl', 'enable', '--now', 'dask-dashboard-tls.service']);
      // The shipped script is the repository's, without comments.
      const shipped = d.file(VM_PATHS.dashboardTls).content;
      expect(shipped).not.toMatch(/^\s*#/m);
      expect(shipped).toContain('CERT_REQUIRED');
    }
    // Without TLS there is no certificate to require: no terminator, Dask's own default address.
    const plain = decode(renderUserData({ role: 'scheduler', security: false, dashboardTlsPort: 8788 }).text);
    expect(plain.files.map((f) => f.path)).not.toContain(VM_PATHS.dashboardTls);
    expect(JSON.parse(plain.file(VM_PATHS.launchSpec).content).args).not.toContain('--dashboard-address');
    expect(errorOf(() => renderUserData({ role: 'worker', security: sec.ec, schedulerAddress: SCHED, dashboardTlsPort: 8788 })).message).toMatch(/dashboardTlsPort applies to the scheduler only/);
    expect(errorOf(() => renderUserData({ role: 'scheduler', security: sec.ec, dashboardTlsPort: 0 })).message).toMatch(/dashboardTlsPort must be an integer 1-65535/);
  });

  it('refuses to ship a private key other than the role’s own (defence in depth)', () => {
    const files = sec.ec.tlsFiles('worker', VM_PATHS.tlsDir);
    const leaky = {
      tlsFiles: () => [...files, { path: `${VM_PATHS.tlsDir}/client.key`, content: sec.ec.clientTlsOptions().key, mode: '0600' }],
      env: () => ({}),
    } as unknown as Security;
    const err = errorOf(() => renderUserData({ role: 'worker', security: leaky, schedulerAddress: SCHED }));
    expect(err.code).toBe('E_TEMPLATE');
    expect(err.message).toContain('client.key');
    expect(err.message).not.toContain('PRIVATE KEY');
  });
});

describe('helpers', () => {
  it.runIf(HAVE_PYYAML)('json: valid for JSON, the yaml package and PyYAML, escaping what YAML would misread', () => {
    const values = [...Object.values(NASTY_ENV), ...BOOTSTRAP, 'x\u0000y', '0600', 'true', 'null', '', 42];
    const doc = values.map((v, i) => `k${i}: ${yamlJson(v)}\n`).join('');
    for (const v of values) expect(yamlJson(v), JSON.stringify(v)).toMatch(/^[\x20-\x7e]+$/);
    const expected = Object.fromEntries(values.map((v, i) => [`k${i}`, v]));
    expect(pyyamlLoad(doc)).toEqual(expected);
    expect(decode(doc).doc).toEqual(expected);
  });

  it('systemd: one quoted word with backslash, quote, % and $ escaped', () => {
    expect(systemdWord('/usr/bin/python3')).toBe('"/usr/bin/python3"');
    expect(systemdWord('a b')).toBe('"a b"');
    expect(systemdWord('%h $HOME ${X} "q" \\ \n\t\x01')).toBe('"%%h $$HOME $${X} \\"q\\" \\\\ \\n\\t\\x01"');
  });

  it('systemdExec: % escaped, $ kept (systemd expands no variables in the executable), unsafe paths refused', () => {
    expect(systemdExecutable('/opt/a b/%h/$X/python3')).toBe('"/opt/a b/%%h/$X/python3"');
    expect(() => systemdExecutable('/opt/"q"/python3')).toThrow(/quotes/);
    expect(() => systemdExecutable('python3')).toThrow(/absolute/);
  });
});

const systemdAnalyze = () => ({
  ok: spawnSync('systemd-analyze', ['--version']).status === 0,
  reason: 'systemd-analyze is missing; install it with `apt-get install -y systemd`',
});

describe.runIf(have(systemdAnalyze()))('units pass `systemd-analyze verify`', () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dask-cloud-units-'));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  /** Writes the unit where systemd-analyze can read it; returns its complaints, one per line. */
  function verify(o: UserDataOptions): string[] {
    const unit = decode(renderUserData(o).text).file(unitPath(o.role)).content;
    const sub = fs.mkdtempSync(path.join(dir, 'u-'));
    const file = path.join(sub, `dask-${o.role}.service`);
    fs.writeFileSync(file, unit);
    const r = spawnSync('systemd-analyze', ['verify', file], { encoding: 'utf8', timeout: 30_000 });
    return `${r.stdout}${r.stderr}`.split('\n').filter((l) => l.trim() !== '');
  }
  // Executables that are absent on a test host are reported with their parsed path: that shows
  // how systemd itself unquotes our first word.
  const missing = (file: string) => (l: string) => l.includes(`Command ${file} is not executable`);

  it('docker and native units parse cleanly', () => {
    const docker = verify({ role: 'worker', security: sec.ec, schedulerAddress: SCHED, gpu: true });
    expect(docker.filter((l) => !missing('/usr/bin/docker')(l))).toEqual([]);
    const native = verify({ role: 'scheduler', security: sec.ec, runtime: 'native', autoShutdown: false });
    expect(native.filter((l) => !missing('/usr/bin/python3')(l))).toEqual([]);
  });

  it('systemd reads a quoted interpreter path back unchanged ($, %, spaces)', () => {
    const odd = '/opt/we$ird %h ${X} dir/python3';
    const lines = verify({ role: 'scheduler', security: false, runtime: 'native', pythonPath: odd });
    expect(lines.length).toBeGreaterThan(0);
    expect(lines.every(missing(odd)), lines.join('\n')).toBe(true);
  });
});

describe('validation', () => {
  const cases: [string, UserDataOptions, string][] = [
    ['role', { role: 'client' as never, security: false }, 'role'],
    ['worker without scheduler address', { role: 'worker', security: false }, 'schedulerAddress'],
    ['not a Security', { role: 'scheduler', security: {} as never }, 'security'],
    ['tls address without security', { role: 'worker', security: false, schedulerAddress: 'tls://x:1' }, 'schedulerAddress'],
    ['worker option on scheduler', { role: 'scheduler', security: false, nthreads: 2 }, 'nthreads'],
    ['scheduler option on worker', { role: 'worker', security: false, schedulerAddress: 'tcp://a:1', idleTimeout: '1h' }, 'idleTimeout'],
    ['gpu on native', { role: 'scheduler', security: false, runtime: 'native', gpu: true }, 'gpu'],
    ['image on native', { role: 'scheduler', security: false, runtime: 'native', image: 'x' }, 'image'],
    ['pythonPath on docker', { role: 'scheduler', security: false, pythonPath: '/usr/bin/python3' }, 'pythonPath'],
    ['relative pythonPath', { role: 'scheduler', security: false, runtime: 'native', pythonPath: 'python3' }, 'pythonPath'],
    ['pythonPath systemd refuses', { role: 'scheduler', security: false, runtime: 'native', pythonPath: '/opt/"x"/python3' }, 'pythonPath'],
    ['image with a space', { role: 'scheduler', security: false, image: 'a b' }, 'image'],
    ['image with a $', { role: 'scheduler', security: false, image: 'dask:$TAG' }, 'image'],
    ['env name', { role: 'scheduler', security: false, env: { 'A-B': 'x' } }, 'env'],
    ['env value not a string', { role: 'scheduler', security: false, env: { A: 1 as never } }, 'env'],
    ['NUL in env', { role: 'scheduler', security: false, env: { A: 'a\0b' } }, 'env'],
    ['lone surrogate', { role: 'scheduler', security: false, bootstrap: ['echo \ud800'] }, 'bootstrap'],
    ['bootstrap not a list', { role: 'scheduler', security: false, bootstrap: 'echo' as never }, 'bootstrap'],
    ['runtime', { role: 'scheduler', security: false, runtime: 'podman' as never }, 'runtime'],
    ['port', { role: 'scheduler', security: false, schedulerPort: 0 }, 'schedulerPort'],
    ['nthreads', { role: 'worker', security: false, schedulerAddress: 'tcp://a:1', nthreads: 1.5 }, 'nthreads'],
    ['autoShutdown', { role: 'scheduler', security: false, autoShutdown: 'no' as never }, 'autoShutdown'],
    ['limitBytes', { role: 'scheduler', security: false, limitBytes: -1 }, 'limitBytes'],
    ['gzip', { role: 'scheduler', security: false, gzip: 'maybe' as never }, 'gzip'],
  ];
  it.each(cases)('%s → ValidationError', (_name, options, option) => {
    const err = errorOf(() => renderUserData(options));
    expect(err).toBeInstanceOf(ValidationError);
    expect(err.code).toBe('E_INVALID_OPTION');
    expect(err.details.option).toBe(option);
  });

  it('a tcp:// scheduler address with security on is refused (by daskProcessSpec)', () => {
    const err = errorOf(() => renderUserData({ role: 'worker', security: sec.ec, schedulerAddress: 'tcp://10.0.0.2:8786' }));
    expect(err.details.option).toBe('schedulerAddress');
  });

  it('false flags are harmless anywhere', () => {
    expect(() => renderUserData({ role: 'scheduler', security: false, runtime: 'native', gpu: false, installDocker: false })).not.toThrow();
  });
});

describe('templates: compiled once, failures are E_TEMPLATE', () => {
  let dir: string;
  const copyTemplates = () => {
    const d = fs.mkdtempSync(path.join(dir, 't-'));
    fs.cpSync(TEMPLATES, d, { recursive: true });
    return d;
  };
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dask-cloud-init-tpl-'));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  const opts: UserDataOptions = { role: 'scheduler', security: false };

  it('a missing variable fails under strict mode', () => {
    const d = copyTemplates();
    fs.appendFileSync(path.join(d, 'scheduler.yaml.hbs'), '{{noSuchValue}}\n');
    const err = errorOf(() => createUserDataRenderer({ templateDir: d }).render(opts));
    expect(UserDataError.isInstance(err)).toBe(true);
    expect(err.code).toBe('E_TEMPLATE');
    expect(err.message).toMatch(/scheduler\.yaml\.hbs.*noSuchValue/);
  });

  it('a syntax error, a missing file, a bare {{value}} helper misuse and broken YAML all fail', () => {
    const syntax = copyTemplates();
    fs.appendFileSync(path.join(syntax, 'partials', 'runcmd.yaml.hbs'), '{{#if installDocker}}\n');
    expect(errorOf(() => createUserDataRenderer({ templateDir: syntax }).render(opts)).code).toBe('E_TEMPLATE');

    const missing = copyTemplates();
    fs.rmSync(path.join(missing, 'launch.py'));
    expect(errorOf(() => createUserDataRenderer({ templateDir: missing }).render(opts)).message).toMatch(/launch\.py/);

    const badHelper = copyTemplates();
    fs.appendFileSync(path.join(badHelper, 'scheduler.yaml.hbs'), '{{json role unitName}}\n');
    expect(errorOf(() => createUserDataRenderer({ templateDir: badHelper }).render(opts)).code).toBe('E_TEMPLATE');

    const badYaml = copyTemplates();
    fs.appendFileSync(path.join(badYaml, 'scheduler.yaml.hbs'), 'runcmd: [unclosed\n');
    expect(errorOf(() => createUserDataRenderer({ templateDir: badYaml }).render(opts)).message).toMatch(/not valid YAML/);

    expect(errorOf(() => createUserDataRenderer({ templateDir: path.join(dir, 'nowhere') }).render(opts)).code).toBe('E_TEMPLATE');
  });

  it('templates are read once per renderer', () => {
    const d = copyTemplates();
    const renderer = createUserDataRenderer({ templateDir: d });
    const first = renderer.render(opts).text;
    fs.writeFileSync(path.join(d, 'scheduler.yaml.hbs'), '#cloud-config\nchanged: {{noSuchValue}}\n');
    expect(renderer.render(opts).text).toBe(first);
    expect(renderer.templateDir).toBe(d);
  });
});

describe('size limits and gzip', () => {
  const big: UserDataOptions = {
    role: 'worker',
    security: null as never, // set in each test (sec is created in beforeAll)
    schedulerAddress: SCHED,
    bootstrap: Array.from({ length: 40 }, (_, i) => `echo "step ${i}: preparing the machine for Dask" >> /var/log/bootstrap.log`),
  };

  it('auto: stays text under the limit, gzips above it, and the gzip inflates to the text', () => {
    const small = renderUserData({ ...big, security: sec.ec, limitBytes: USER_DATA_LIMITS.ec2 });
    expect(small.gzipped).toBe(false);
    const tight = renderUserData({ ...big, security: sec.ec, limitBytes: small.rawBytes - 1 });
    expect(tight.gzipped).toBe(true);
    expect(tight.rawBytes).toBe(small.rawBytes);
    expect(tight.bytes).toBe(tight.body.length);
    expect(tight.bytes).toBeLessThan(tight.rawBytes);
    expect(gunzipSync(tight.body).toString('utf8')).toBe(tight.text);
    expect(tight.body.subarray(0, 2)).toEqual(Buffer.from([0x1f, 0x8b])); // what cloud-init sniffs for
  });

  it('too large even gzipped → E_USER_DATA_TOO_LARGE with both sizes and the limit', () => {
    const err = errorOf(() => renderUserData({ ...big, security: sec.rsa, limitBytes: 1000 }));
    expect(err.code).toBe('E_USER_DATA_TOO_LARGE');
    const { rawBytes, gzipBytes, limitBytes } = err.details as Record<string, number>;
    expect(limitBytes).toBe(1000);
    expect(gzipBytes).toBeGreaterThan(1000);
    expect(err.message).toContain(`${rawBytes} bytes`);
    expect(err.message).toContain(`${gzipBytes} bytes gzipped`);
    expect(err.message).toContain('1000-byte limit');
    expect(err.message).not.toContain('PRIVATE');
  });

  it('never: no gzip, and a hint when gzip would have fitted; always: gzip regardless', () => {
    const raw = renderUserData({ ...big, security: sec.ec });
    const err = errorOf(() => renderUserData({ ...big, security: sec.ec, limitBytes: raw.rawBytes - 1, gzip: 'never' }));
    expect(err.code).toBe('E_USER_DATA_TOO_LARGE');
    expect(err.message).toMatch(/gzipped it would fit/);
    const always = renderUserData({ ...big, security: sec.ec, gzip: 'always' });
    expect(always.gzipped).toBe(true);
    expect(gunzipSync(always.body).toString('utf8')).toBe(always.text);
  });

  it('fitUserData counts UTF-8 bytes, not characters', () => {
    const text = '#cloud-config\n# ' + '日'.repeat(100) + '\n';
    expect(fitUserData(text).rawBytes).toBe(Buffer.byteLength(text));
    expect(() => fitUserData(text, { limitBytes: 200, gzip: 'never' })).toThrow(/over the 200-byte limit/);
  });

  it('measured sizes: every secure variant fits EC2 raw; the EC worker stays small', () => {
    const rows: string[] = ['role       runtime  keys  raw    gzip'];
    const sizes: Record<string, number> = {};
    for (const role of ['scheduler', 'worker'] as const) {
      for (const runtime of ['docker', 'native'] as const) {
        for (const [keys, security] of [['EC', sec.ec], ['RSA', sec.rsa], ['none', false]] as const) {
          const o: UserDataOptions = { role, runtime, security };
          if (role === 'worker') o.schedulerAddress = security === false ? 'tcp://10.0.0.2:8786' : SCHED;
          const r = renderUserData(o);
          const gz = renderUserData({ ...o, gzip: 'always' }).bytes;
          sizes[`${role}/${runtime}/${keys}`] = r.rawBytes;
          rows.push(`${role.padEnd(10)} ${runtime.padEnd(8)} ${keys.padEnd(5)} ${String(r.rawBytes).padEnd(6)} ${gz}`);
          expect(r.rawBytes, `${role}/${runtime}/${keys}`).toBeLessThan(USER_DATA_LIMITS.ec2);
        }
      }
    }
    // eslint-disable-next-line no-console
    console.log(`user-data sizes (bytes)\n${rows.join('\n')}`);
    expect(sizes['worker/docker/EC']).toBeLessThan(6 * 1024);
    expect(sizes['worker/native/EC']).toBeLessThan(6 * 1024);
    // The largest default variant plus a bootstrap (its script and the runner) still fits raw.
    const largest = Object.entries(sizes).sort((a, b) => b[1] - a[1])[0]![0];
    const [role, runtime, keys] = largest.split('/') as ['scheduler' | 'worker', 'docker' | 'native', string];
    const security = keys === 'EC' ? sec.ec : keys === 'RSA' ? sec.rsa : false;
    const withBootstrap = renderUserData({ role, runtime, security, schedulerAddress: role === 'worker' ? SCHED : undefined, bootstrap: BOOTSTRAP });
    // eslint-disable-next-line no-console
    console.log(`${largest} with a ${BOOTSTRAP.join('\n').length}-byte bootstrap: ${withBootstrap.rawBytes} bytes (+${withBootstrap.rawBytes - sizes[largest]!})`);
    expect(withBootstrap.rawBytes).toBeLessThan(USER_DATA_LIMITS.ec2);
  });
});
