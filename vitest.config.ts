import { defineConfig } from 'vitest/config';

// Tests that boot simulated VMs share host-wide resources (the image in tmpfs, host links into
// the simulated network, the 10.77/16 routes), so they run one file at a time in their own
// project (npm test also passes --no-file-parallelism --maxWorkers=1 for it: the project-level
// setting alone still let two files overlap); everything else runs in parallel.
const SIM = ['test/sim/**/*.test.ts', '**/sim.e2e.test.ts'];
// Tests against moto (a third-party EC2 emulator, test/moto/): moto hands out 54.x and 172.31.x
// addresses the library dials, so npm test runs this project inside a loopback-only network
// namespace (scripts/in-loopback-netns.sh), and its setup refuses to run anywhere else.
const MOTO = ['test/moto/**/*.test.ts'];

export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Tests start real Dask processes: keep parallelism modest on small machines.
    maxWorkers: 2,
    minWorkers: 1,
    setupFiles: ['test/setup.ts'],
    projects: [
      {
        extends: true,
        test: {
          name: 'main',
          include: ['test/**/*.test.ts', 'src/**/*.test.ts', 'providers/**/*.test.ts'],
          exclude: ['**/node_modules/**', ...SIM, ...MOTO],
        },
      },
      {
        extends: true,
        test: {
          name: 'sim',
          include: SIM,
          fileParallelism: false,
          testTimeout: 180_000,
          hookTimeout: 120_000,
        },
      },
      {
        extends: true,
        test: {
          name: 'moto',
          include: MOTO,
          setupFiles: ['test/moto/setup.ts'],
          // Each file starts its own moto (a Python server): one file at a time on small machines.
          fileParallelism: false,
        },
      },
    ],
  },
});
