/**
 * Where the Google credentials of a cluster come from, found without any network call.
 *
 * Application Default Credentials (google-auth-library) look, in order, at
 * `GOOGLE_APPLICATION_CREDENTIALS`, gcloud's ADC file, and then the GCE metadata server, which
 * it finds by dialling 169.254.169.254. Anywhere but on Google Cloud that dial goes off the
 * machine and fails after a timeout (and with Google's Compute SDK, which this provider no longer
 * uses, it even ended the host process through a rejection nobody awaited). So the metadata
 * server counts only where the machine itself says it runs on Google Cloud (its BIOS, or
 * the serverless environment variables), exactly as gcp-metadata's `bios-only` detection does;
 * everywhere else missing credentials are a `CredentialsError` before anything is dialled.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CredentialsError } from '../../src/errors';
import type { GcpClientOptions } from './options';

/** How to set credentials up, as Google's own tools do it. */
export const CREDENTIALS_FIX =
  'run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to a service account key file ' +
  '(or pass authClient)';

export type CredentialSourceKind = 'authClient' | 'clientOptions' | 'environment' | 'gcloud' | 'metadata';

/** Where the credentials were found; never the credentials themselves. */
export interface CredentialSource {
  kind: CredentialSourceKind;
  /** For people: e.g. `GOOGLE_APPLICATION_CREDENTIALS (/home/me/key.json, service_account)`. */
  description: string;
}

/** Files the BIOS check reads (gcp-metadata's GCE_LINUX_BIOS_PATHS). Exported for tests. */
export const BIOS_VENDOR_PATH = '/sys/class/dmi/id/bios_vendor';

/**
 * Whether this process runs on Google Cloud, from local facts only: Cloud Run / Cloud Functions
 * set K_SERVICE / FUNCTION_NAME / CLOUD_RUN_JOB; a GCE VM's BIOS vendor is "Google".
 */
export function onGoogleCloud(env: NodeJS.ProcessEnv, biosVendorPath = BIOS_VENDOR_PATH): boolean {
  if (env.K_SERVICE || env.FUNCTION_NAME || env.FUNCTION_TARGET || env.CLOUD_RUN_JOB) return true;
  if (process.platform !== 'linux') return false;
  try {
    return /^Google/.test(fs.readFileSync(biosVendorPath, 'utf8').trim());
  } catch {
    return false;
  }
}

/** The `type` field of a credentials file (`service_account`, `authorized_user`, ...), never its secrets. */
function credentialFileType(file: string, what: string): string {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new CredentialsError(`gcp: ${what} names ${file}, which cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, {
      details: { fix: CREDENTIALS_FIX, source: what },
    });
  }
  let type: unknown;
  try {
    type = (JSON.parse(text) as { type?: unknown }).type;
  } catch {
    throw new CredentialsError(`gcp: ${what} names ${file}, which is not a JSON credentials file`, { details: { fix: CREDENTIALS_FIX, source: what } });
  }
  if (typeof type !== 'string' || type === '') {
    throw new CredentialsError(`gcp: ${what} names ${file}, which has no credentials "type"`, { details: { fix: CREDENTIALS_FIX, source: what } });
  }
  return type;
}

/** gcloud's ADC file, where google-auth-library looks for it (HOME, or APPDATA on Windows). */
export function gcloudAdcFile(env: NodeJS.ProcessEnv): string | undefined {
  const base = process.platform === 'win32' ? env.APPDATA : env.HOME ? path.join(env.HOME, '.config') : path.join(os.homedir(), '.config');
  return base ? path.join(base, 'gcloud', 'application_default_credentials.json') : undefined;
}

/**
 * Finds the credentials google-auth-library would use, in its order, reading only local files and the
 * environment. Throws a `CredentialsError` naming every place looked at when there are none.
 */
export function findCredentials(
  options: { authClient?: unknown; clientOptions?: GcpClientOptions },
  env: NodeJS.ProcessEnv = process.env,
  biosVendorPath = BIOS_VENDOR_PATH,
): CredentialSource {
  const co = (options.clientOptions ?? {}) as { credentials?: unknown; keyFilename?: unknown; keyFile?: unknown; authClient?: unknown };
  // resolveConnection puts the authClient option into clientOptions.
  if (options.authClient !== undefined || co.authClient !== undefined) return { kind: 'authClient', description: 'the authClient option' };
  if (co.credentials !== undefined) return { kind: 'clientOptions', description: 'clientOptions.credentials' };
  for (const key of ['keyFilename', 'keyFile'] as const) {
    const file = co[key];
    if (typeof file === 'string' && file) {
      // A .p12 / .pem key is not JSON: only its presence can be checked here.
      if (/\.json$/i.test(file)) credentialFileType(file, `clientOptions.${key}`);
      else if (!fs.existsSync(file)) throw new CredentialsError(`gcp: clientOptions.${key} names ${file}, which does not exist`, { details: { fix: CREDENTIALS_FIX } });
      return { kind: 'clientOptions', description: `clientOptions.${key} (${file})` };
    }
  }
  const keyFile = env.GOOGLE_APPLICATION_CREDENTIALS;
  if (keyFile) {
    const type = credentialFileType(keyFile, 'GOOGLE_APPLICATION_CREDENTIALS');
    return { kind: 'environment', description: `GOOGLE_APPLICATION_CREDENTIALS (${keyFile}, ${type})` };
  }
  const adc = gcloudAdcFile(env);
  if (adc && fs.existsSync(adc)) {
    const type = credentialFileType(adc, "gcloud's application-default credentials file");
    return { kind: 'gcloud', description: `gcloud application-default credentials (${adc}, ${type})` };
  }
  if (onGoogleCloud(env, biosVendorPath)) return { kind: 'metadata', description: 'the metadata server (this machine runs on Google Cloud)' };
  throw new CredentialsError(
    'gcp: no Google credentials found: not in the authClient option, clientOptions, GOOGLE_APPLICATION_CREDENTIALS, ' +
      `nor gcloud's application-default credentials file${adc ? ` (${adc})` : ''}, and this machine is not on Google Cloud ` +
      '(so no metadata server was asked)',
    { details: { fix: CREDENTIALS_FIX } },
  );
}
