import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts', 'src/**/*.test.ts', 'providers/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Tests start real Dask processes and simulated VMs: keep parallelism modest on small machines.
    maxWorkers: 2,
    minWorkers: 1,
    setupFiles: ['test/setup.ts'],
  },
});
