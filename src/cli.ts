#!/usr/bin/env node
/**
 * The `dask-cloud` command line (`dask-cloud --help` lists the commands). The commands live in
 * src/cli/: program.ts (commander: commands, flags, help, exit codes), start.ts (start, local, up,
 * doctor), manage.ts (info, scale, logs, dashboard, env, down, ls, cleanup), user-data.ts,
 * progress.ts (the live task list and the plain lines), flags.ts (flags from the option table).
 */
import { main } from './cli/program';

export { main };
export { formatClusterTable, redactKeys, versionsLine } from './cli/format';
export { UP_IDLE_TIMEOUT } from './cli/start';

/** Exit once stdout and stderr have drained: process.exit() drops what a pipe has not taken yet. */
function exitAfterFlush(code: number): void {
  let pending = 2;
  const done = (): void => {
    if (--pending === 0) process.exit(code);
  };
  process.stdout.write('', done);
  process.stderr.write('', done);
}

if (require.main === module) {
  void main(process.argv.slice(2)).then(exitAfterFlush);
}
