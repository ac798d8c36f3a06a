/**
 * Each cloud's SDK (for GCP: google-auth-library) is an optional peer dependency: `npm install
 * dask-cloud` brings the core (LocalCluster, Security, the renderer, the wire client) without the
 * cloud SDKs, and a cloud's entry point (`dask-cloud/gcp`, ...) checks on import that its package
 * is there, so a missing one is one typed error with the line that installs it, not a
 * module-resolution stack trace.
 */
import { MissingDependencyError } from './errors';
import { CLUSTER_CLASSES } from './config/schema';
import type { ClusterKind } from './config';

export type Cloud = Exclude<ClusterKind, 'local'>;

/** Which package each cloud needs, and the range this release is tested with (package.json's peerDependencies say the same). */
export const CLOUD_SDKS: Readonly<Record<Cloud, { readonly pkg: string; readonly range: string }>> = {
  // GCP talks REST itself (providers/gcp/rest.ts); only the credentials need Google's library.
  gcp: { pkg: 'google-auth-library', range: '^10.5.0' },
  ec2: { pkg: '@aws-sdk/client-ec2', range: '^3.1169.0' },
  digitalocean: { pkg: 'dots-wrapper', range: '^3.12.12' },
};

/** The command that installs `cloud`'s SDK. */
export function installLine(cloud: Cloud): string {
  const { pkg, range } = CLOUD_SDKS[cloud];
  return `npm install ${pkg}@${range}`;
}

/**
 * Throws MissingDependencyError unless `cloud`'s SDK resolves from where this package is
 * installed. Only resolves the package (a few file lookups); the SDK itself is still loaded on
 * first use.
 */
export function requireCloudSdk(cloud: Cloud, resolve: (id: string) => string = require.resolve): void {
  const { pkg } = CLOUD_SDKS[cloud];
  try {
    resolve(pkg);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'MODULE_NOT_FOUND') throw err;
    const install = installLine(cloud);
    throw new MissingDependencyError(`${CLUSTER_CLASSES[cloud]} (dask-cloud/${cloud}) needs ${pkg}, an optional peer dependency that is not installed: run \`${install}\``, {
      details: { package: pkg, install },
    });
  }
}

/**
 * Loads a cloud's SDK on first use. `require`, not `import()`: the SDKs ship CommonJS entry points,
 * and `import()` of one goes through Node's ESM loader, which scans the whole file again for its
 * format and its exports before compiling it (measured with Node 20: `@aws-sdk/client-ec2` 440 ms
 * by `require`, 660–680 ms by `import()`).
 */
export function loadCloudSdk<T>(cloud: Cloud): T {
  return require(CLOUD_SDKS[cloud].pkg) as T;
}
