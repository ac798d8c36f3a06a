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
// The tests that run real Dask on this machine (LocalCluster, the wire client, TLS and its
// refusals, idle shutdown): the main project runs them against the host's Dask 2022.12.1, and
// the dask-2024.12 project runs them again against Dask 2024.12.1 on Python 3.13 (the trixie root,
// test/helpers/prereq.ts), the Dask a default cloud cluster runs for such a client.
const REAL_DASK = [
  'test/e2e/local-cluster.test.ts',
  'test/e2e/dask-client.test.ts',
  'test/e2e/tls-dask.test.ts',
  'test/e2e/tls-ciphers.test.ts',
  'test/e2e/idle-timeout.test.ts',
  'test/e2e/local-watchdog.test.ts',
  'test/e2e/local-attach.test.ts',
];

export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Tests start real Dask processes: keep parallelism modest on small machines.
    maxWorkers: 2,
    minWorkers: 1,
    setupFiles: ['test/setup.ts'],
    globalSetup: ['test/global-setup.ts'],
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
          name: 'dask-2024.12',
          include: REAL_DASK,
          env: { DASK_CLOUD_TEST_CLIENT: 'trixie' },
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
