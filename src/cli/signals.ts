/**
 * Telling a second signal from the same one delivered twice.
 *
 * Under `npx dask-cloud start`, one Ctrl-C can reach the CLI twice: the terminal sends SIGINT to
 * its whole foreground process group (npx and the CLI both), and npm's run-script forwards the
 * SIGINT it got to the shell it started, which is the CLI itself when that shell execs its last
 * command (bash does; /bin/sh is bash on macOS and Fedora). Measured with npm 11.19 and
 * `--script-shell=/bin/bash` on a pseudo-terminal, on a busy 2-core machine: the two arrive
 * 2.9 to 11.2 ms apart. A person's deliberate second press comes much later: the first has
 * printed "deleting everything..." and the second answers it. Deliveries of the same signal
 * within SAME_PRESS_MS of the first are therefore one press: about 18 times the slowest forward
 * measured, and well under the time a person takes to read a line and press again. A second
 * press that did fall inside the window costs one more press, never a lost teardown.
 */

/** Repeats of the first signal closer than this to it are the same press (see above). */
export const SAME_PRESS_MS = 200;

/** What a signal means given the ones before it. */
export type SignalMeaning = 'first' | 'same-press' | 'second';

/** Classifies the signals of one command run. `now` is injectable for tests. */
export class SignalGate {
  #first: { signal: NodeJS.Signals; at: number } | undefined;

  constructor(private readonly now: () => number = () => performance.now()) {}

  classify(signal: NodeJS.Signals): SignalMeaning {
    const at = this.now();
    if (this.#first === undefined) {
      this.#first = { signal, at };
      return 'first';
    }
    return signal === this.#first.signal && at - this.#first.at < SAME_PRESS_MS ? 'same-press' : 'second';
  }
}
