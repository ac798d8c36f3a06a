/**
 * The command tree (commander): every command, its flags and its --help. Handlers live beside
 * this file; this one turns parsed flags into their arguments and errors into exit codes.
 */
import { Command, CommanderError, Option } from 'commander';
import type { ClusterKind } from '../config';
import { DaskCloudError } from '../errors';
import { addClusterFlags, CLOUDS, clusterFlags, KINDS, optionsFromFlags, phraseForCli, suggestFlag, type ClusterFlag } from './flags';
import * as manage from './manage';
import { doctor, start, UP_IDLE_TIMEOUT } from './start';
import { EXIT, EXIT_CODES_HELP, isBadInput, UsageError } from './usage';
import { packageVersion } from '../version';

/** Help is laid out for this width whatever the terminal's, so it reads the same everywhere (and its snapshot holds). */
export const HELP_WIDTH = 100;

const MORE_HELP = `Options of every command also come from the config file (DASK_CLOUD_CONFIG, else
~/.config/dask-cloud/config.yaml) and DASK_CLOUD_* variables; flags override both. Credentials
come from each cloud's usual place (gcloud, AWS_* / ~/.aws, DIGITALOCEAN_TOKEN).

${EXIT_CODES_HELP}

dask-cloud <command> --help shows a command's flags.`;

/** The cluster kind the arguments name (`local`, or `--provider X` anywhere), before they are parsed. */
function kindIn(argv: readonly string[]): ClusterKind | undefined {
  if (argv[0] === 'local') return 'local';
  for (let i = 0; i < argv.length; i++) {
    const value = argv[i] === '--provider' ? argv[i + 1] : argv[i]!.startsWith('--provider=') ? argv[i]!.slice('--provider='.length) : undefined;
    if (value !== undefined && (KINDS as readonly string[]).includes(value)) return value as ClusterKind;
  }
  return undefined;
}

/** commander's Command, with "did you mean" for flags that knows the option table's names. */
class DaskCommand extends Command {
  /** The arguments being parsed (set on the program): an unknown flag is read in the light of --provider. */
  argv: readonly string[] = [];

  override createCommand(name?: string): DaskCommand {
    return new DaskCommand(name);
  }

  /** commander calls this for a flag it does not know (not in its typings, hence no `override`). */
  unknownOption(flag: string): void {
    if (flag.startsWith('--')) {
      const known = new Set(this.options.map((o) => o.long).filter((l): l is string => l !== undefined));
      const argv = (this.parent as DaskCommand | null)?.argv ?? this.argv;
      const hint = suggestFlag(flag, known, kindIn(argv));
      if (hint !== undefined) this.error(`error: unknown option '${flag}'\n(Did you mean ${hint}?)`, { code: 'commander.unknownOption', exitCode: EXIT.usage });
    }
    (Command.prototype as unknown as { unknownOption(f: string): void }).unknownOption.call(this, flag);
  }
}

/** What one run of the command line found out before an error: for phrasing it. */
interface RunState {
  code: number;
  command: string;
  kind?: ClusterKind;
  given: Set<string>;
}

function oneLine(prefix: string, text: string): string {
  return `${prefix}: ${text.replace(/^error: /, '').trim().replace(/\s*\n\s*/g, ' ')}\n`;
}

/** The flags given on the command line (for phrasing errors in terms of them). */
function givenFlags(cmd: Command): Set<string> {
  return new Set(cmd.options.filter((o) => cmd.getOptionValueSource(o.attributeName()) === 'cli').map((o) => o.long ?? ''));
}

const providerOption = (kinds: readonly string[], description: string): Option => new Option('--provider <name>', description).choices(kinds);
const jsonOption = (what: string): Option => new Option('--json', `print ${what} as one JSON document on stdout (progress and messages go to stderr)`);

/** --project/--zone/--region/--endpoint: where a cloud account's clusters are, for ls, down and cleanup. */
function addLocationFlags(cmd: Command): Command {
  return cmd
    .option('--project <project>', 'gcp: the project (default: as start finds it)')
    .option('--zone <zone>', 'gcp: one zone (default: every zone of the project)')
    .option('--region <region>', 'ec2, digitalocean: the region')
    .option('--endpoint <url>', "the cloud API's address (a proxy or a test fake)");
}

/** The whole command tree. `state` collects what error phrasing needs. */
export function buildProgram(state: RunState): DaskCommand {
  const program = new DaskCommand('dask-cloud');
  const allFlags = clusterFlags(KINDS);
  const localFlags = clusterFlags(['local']);
  program
    .description('Start secure Dask clusters (mutual TLS by default) on GCP, EC2, DigitalOcean or this machine, and manage them.')
    .version(packageVersion(), '-V, --version', 'print the version')
    .helpOption('-h, --help', 'show help')
    .helpCommand(false)
    .showSuggestionAfterError(true)
    .configureHelp({ helpWidth: HELP_WIDTH })
    .configureOutput({ outputError: (str, write) => write(oneLine('dask-cloud', str)) })
    .exitOverride()
    .addHelpText('after', `\n${MORE_HELP}`);

  /** A subcommand whose commander errors (unknown flag, missing argument) are one line naming it. */
  const sub = (name: string): Command =>
    program
      .command(name)
      .configureOutput({ outputError: (str, write) => write(oneLine(`dask-cloud ${name}`, str)) })
      .hook('preAction', () => {
        state.command = name;
      });

  const startLike = (name: 'start' | 'local' | 'up', defs: ClusterFlag[], kinds: readonly ClusterKind[]): Command => {
    const cmd = sub(name);
    if (name !== 'local') cmd.addOption(providerOption(KINDS, 'where the cluster runs').default('local'));
    cmd.option('--client-config <dir>', 'write the client credentials and dask.yaml there', ...(name === 'up' ? [] : ['./dask-client']));
    cmd.option('--no-security', 'plain tcp://: no TLS, no authentication (for troubleshooting inside a private network)');
    if (name !== 'local') {
      cmd.option('--endpoint <url>', "the cloud API's address (a proxy or a test fake)");
      cmd.option('--native', 'the same as --runtime native');
    }
    cmd.addOption(jsonOption(name === 'up' ? 'the cluster (id, address, directory, DASK_CONFIG line)' : 'the cluster, once it runs,'));
    addClusterFlags(cmd, defs, kinds);
    cmd.action(async (opts: Record<string, unknown>, self: Command) => {
      const kind = (name === 'local' ? 'local' : opts.provider) as ClusterKind;
      state.kind = kind;
      state.given = givenFlags(self);
      const options = optionsFromFlags(self, defs, kind);
      state.code = await start({
        mode: name === 'up' ? 'up' : 'foreground',
        kind,
        options,
        endpoint: opts.endpoint as string | undefined,
        native: opts.native === true,
        insecure: opts.security === false,
        clientConfig: opts.clientConfig as string | undefined,
        json: opts.json === true,
      });
    });
    return cmd;
  };

  startLike('start', allFlags, KINDS).summary('start a cluster, run until Ctrl-C, then delete everything it created').description(
    'Start a cluster, write its client config, and run until Ctrl-C (or SIGTERM, or the terminal closing); then delete everything it created, waiting for the cloud to confirm. A signal during the start rolls it back; a second signal stops waiting and prints the cleanup command. The image follows the local Python\'s Dask; client, scheduler and worker versions are compared after start (--strict-versions makes a mismatch fail it). On a terminal the phases show as a live list; elsewhere as lines on stderr.',
  );
  startLike('local', localFlags, ['local']).summary('start --provider local').description('The same as start --provider local: scheduler and workers as processes on this machine, with the same TLS.');
  startLike('up', allFlags, KINDS).summary('start a cluster that keeps running after this command').description(
    `Start a cluster that outlives this command: write its directory (client credentials, dask.yaml), print its address, the DASK_CONFIG line and the next commands, and exit. Its scheduler shuts down after --idle-timeout without tasks (default ${UP_IDLE_TIMEOUT}, unless the config file or DASK_CLOUD_IDLE_TIMEOUT says otherwise); a local cluster runs in a process of its own.`,
  );

  sub('info')
    .summary('what a cluster is: state, address, workers')
      .description('What a cluster is: state, address, workers registered / asked, dashboard (needs its directory, written by up or start on this machine).')
    .argument('<id>', 'cluster id (dask-cloud ls lists them)')
    .addOption(jsonOption('the summary'))
    .action(async (id: string, opts: { json?: boolean }) => {
      state.code = await manage.info(id, opts.json === true);
    });

  sub('scale')
    .summary('scale a cluster to N workers')
      .description('Scale to N workers: up, then wait for them to register; down, retiring workers (moving their data) first.')
    .argument('<id>', 'cluster id')
    .argument('<n>', 'workers wanted')
    .option('--no-wait', 'do not wait for new workers to register')
    .action(async (id: string, n: string, opts: { wait: boolean }) => {
      state.code = await manage.scale(id, n, opts.wait);
    });

  sub('logs')
    .summary("each member's recent output")
      .description("Each member's recent console or process output.")
    .argument('<id>', 'cluster id')
    .argument('[member]', 'one member: scheduler, worker-2, a full name or an instance id')
    .action(async (id: string, member: string | undefined) => {
      state.code = await manage.logs(id, member);
    });

  sub('dashboard')
    .summary("the dashboard's URL (a tunnel over mutual TLS for VM clusters)")
      .description("Print the dashboard's URL on this machine: a VM cluster's through a tunnel over mutual TLS (open until Ctrl-C), a local cluster's directly.")
    .argument('<id>', 'cluster id')
    .option('--port <port>', 'local port of the tunnel (default: the one in the written dask.yaml)')
    .action(async (id: string, opts: { port?: string }) => {
      state.code = await manage.dashboard(id, opts.port);
    });

  sub('env')
    .summary('the shell line that points Python at a cluster')
      .description('Print the shell line that points a Python client at the cluster (export DASK_CONFIG=...).')
    .argument('<id>', 'cluster id')
    .action(async (id: string) => {
      state.code = await manage.env(id);
    });

  addLocationFlags(
    sub('down')
      .summary('delete clusters and everything they created')
      .description(
        'Delete clusters and everything they created (found by their labels), and their directories. Without a directory, --provider and --project/--zone or --region say where a cluster lives. --all deletes every cluster of an account: it asks first (or takes --yes).',
      )
      .argument('[ids...]', 'cluster ids')
      .option('--all', 'every dask-cloud cluster of the account (needs --provider)')
      .option('--yes', 'do not ask before --all deletes')
      .addOption(providerOption(KINDS, 'where the clusters live')),
  )
    .addOption(jsonOption('what was deleted'))
    .action(async (ids: string[], opts: manage.Location & { all?: boolean; yes?: boolean; json?: boolean }) => {
      state.code = await manage.down(ids, { ...opts, all: opts.all === true, yes: opts.yes === true, json: opts.json === true });
    });

  sub('user-data')
    .summary('the cloud-init user-data of a VM, private key elided')
      .description(
      'Print the cloud-init user-data a VM of that role boots from, with its private key elided (renderUserData() in the library gives the full text). The image is chosen as start would choose it (from the local Python\'s Dask unless given), and named on stderr.',
    )
    .option('--role <role>', 'scheduler or worker')
    .option('--scheduler-address <address>', 'the address a worker dials (default tls://10.0.0.2:8786)')
    .option('--runtime <runtime>', 'docker or native', 'docker')
    .option('--docker-image <image>', 'the image to run')
    .option('--dask-version <version>', 'the Dask release of the default image')
    .option('--python-version <version>', 'the Python minor of the default image, e.g. 3.12')
    .option('--python <path>', 'the local Python whose Dask the image follows')
    .option('--no-security', 'plain tcp://: no credentials in the user-data')
    .action(async (opts: { role?: string; schedulerAddress?: string; runtime: string; dockerImage?: string; daskVersion?: string; pythonVersion?: string; python?: string; security: boolean }) => {
      // Loaded on use: it pulls in the certificate and template code.
      state.code = await (await import('./user-data')).userData(opts);
    });

  const doctorCmd = sub('doctor')
    .summary('read-only checks of a cloud account')
      .description(
      'Check a cloud account against the cluster these flags would start, with read-only calls only: credentials (and where they came from), location, image, network and instance types, NAT for private mode, quota headroom, permissions. Prints a checklist with the fix for each failure; exit 1 when a check fails. start runs the same checks first.',
    )
    // No choices: `--provider local` gets the sentence that says why doctor is for clouds.
    .option('--provider <name>', 'the cloud to check: gcp, ec2 or digitalocean')
    .option('--endpoint <url>', "the cloud API's address (a proxy or a test fake)")
    .option('--native', 'the same as --runtime native')
    .addOption(jsonOption('the report'));
  const cloudFlags = clusterFlags(CLOUDS);
  addClusterFlags(doctorCmd, cloudFlags, CLOUDS);
  doctorCmd.action(async (opts: { provider?: string; endpoint?: string; native?: boolean; json?: boolean }, self: Command) => {
    if (opts.provider === undefined || !CLOUDS.includes(opts.provider as ClusterKind)) throw new UsageError('doctor checks a cloud account: --provider gcp, ec2 or digitalocean');
    const kind = opts.provider as ClusterKind;
    state.kind = kind;
    state.given = givenFlags(self);
    const options = optionsFromFlags(self, cloudFlags, kind);
    state.code = await doctor({ kind, options, endpoint: opts.endpoint, native: opts.native === true, insecure: false }, opts.json === true);
  });

  addLocationFlags(
    sub('ls')
      .summary('list clusters')
      .description("List clusters from the cloud's labels alone (read calls only): id, location, state, workers, scheduler address, creation and expiry. Without --provider: this machine's local clusters.")
      .addOption(providerOption(KINDS, 'the account to list (default local)')),
  )
    .addOption(jsonOption('the clusters'))
    .action(async (opts: manage.Location & { json?: boolean }) => {
      state.code = await manage.ls({ ...opts, json: opts.json === true });
    });

  addLocationFlags(
    sub('cleanup')
      .summary('delete what clusters left behind')
      .description(
        "Delete what clusters left behind: on a cloud, instances by label, then firewalls / security groups (--cluster, --expired or --all says which); locally, the Dask processes and key directories of this user's clusters whose owning process is gone.",
      )
      .addOption(providerOption(KINDS, 'the account to sweep'))
      .option('--cluster <id>', 'a cluster to delete (repeatable)', (v: string, prev: string[] | undefined) => [...(prev ?? []), v])
      .option('--expired', 'every cluster whose expiry label has passed')
      .option('--all', 'every dask-cloud cluster of the account')
      .option('--dry-run', 'say what would be deleted, delete nothing'),
  )
    .addOption(jsonOption('the report'))
    .action(async (opts: manage.Location & { cluster?: string[]; expired?: boolean; all?: boolean; dryRun?: boolean; json?: boolean }) => {
      state.code = await manage.cleanup({ ...opts, expired: opts.expired === true, all: opts.all === true, dryRun: opts.dryRun === true, json: opts.json === true });
    });

  return program;
}

/** Runs the command line; resolves with the exit code. Nothing here calls process.exit. */
export async function main(argv: string[]): Promise<number> {
  const { SUPERVISOR_COMMAND } = await import('../../providers/local/supervisor');
  if (argv[0] === SUPERVISOR_COMMAND) {
    // Internal: the detached owner of a local cluster started by `up` (providers/local/supervisor.ts).
    return (await import('../../providers/local/supervisor')).runLocalSupervisor(argv.slice(1));
  }
  const state: RunState = { code: EXIT.ok, command: '', given: new Set() };
  try {
    const program = buildProgram(state);
    program.argv = argv;
    await program.parseAsync(argv, { from: 'user' });
    return state.code;
  } catch (err) {
    if (err instanceof CommanderError) {
      // commander printed it already. --help and --version exit 0; `dask-cloud` alone shows help and exits 2.
      return err.exitCode === 0 ? EXIT.ok : EXIT.usage;
    }
    const prefix = state.command === '' ? 'dask-cloud' : `dask-cloud ${state.command}`;
    const code = DaskCloudError.isInstance(err) ? ` [${err.code}]` : '';
    const message = phraseForCli(err, state.kind, state.given);
    if (isBadInput(err)) {
      // One line, no stack: the input was wrong, not the program.
      console.error(`${prefix}: ${message.replace(/\s*\n\s*/g, ' ')}${code}`);
      return EXIT.usage;
    }
    console.error(`${prefix}: ${message}${code}`);
    return EXIT.failed;
  }
}
