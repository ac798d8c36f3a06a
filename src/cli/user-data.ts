/** `user-data`: the cloud-init a VM of one role boots from, with its private key elided. */
import { renderUserData } from '../cloud-init';
import { decideDaskImage, imageClient } from '../dask/images';
import { findPython } from '../dask/python';
import { Security } from '../security/security';
import { IMAGE_BASIS, redactKeys } from './format';
import { UsageError } from './usage';

export interface UserDataArgs {
  role?: string;
  schedulerAddress?: string;
  runtime: string;
  dockerImage?: string;
  daskVersion?: string;
  pythonVersion?: string;
  python?: string;
  security: boolean;
}

export async function userData(o: UserDataArgs): Promise<number> {
  const role = o.role;
  if (role !== 'scheduler' && role !== 'worker') throw new UsageError('--role must be scheduler or worker');
  const runtime = o.runtime;
  if (runtime !== 'docker' && runtime !== 'native') throw new UsageError('--runtime must be docker or native');
  const imageOptions = { dockerImage: o.dockerImage, daskVersion: o.daskVersion, pythonVersion: o.pythonVersion, runtime } as const;
  const { validateImageOptions } = await import('../cluster/vm');
  try {
    validateImageOptions(imageOptions);
  } catch (err) {
    // The library's message names its options; here they are flags.
    const flags: Record<string, string> = { daskVersion: '--dask-version', pythonVersion: '--python-version', dockerImage: '--docker-image' };
    throw new UsageError((err instanceof Error ? err.message : String(err)).replace(/\b(daskVersion|pythonVersion|dockerImage)\b/g, (m) => flags[m]!).replace('the native runtime', '--runtime native'));
  }
  const security = o.security ? await Security.temporary() : false;
  const proto = security === false ? 'tcp' : 'tls';
  const base = {
    role,
    security,
    runtime,
    schedulerAddress: role === 'worker' ? (o.schedulerAddress ?? `${proto}://10.0.0.2:8786`) : undefined,
  } as const;
  // Every input is checked by a first render before the local Python is run.
  let rendered = renderUserData({ ...base, image: o.dockerImage });
  if (runtime === 'docker') {
    // The image a cluster started here would run: it follows the local client's Dask, as start does.
    const local = imageOptions.dockerImage === undefined ? await findPython(o.python).then((p) => p.versions, () => undefined) : undefined;
    const decision = decideDaskImage(imageOptions, imageClient(local));
    process.stderr.write(`# image ${decision.image} (${IMAGE_BASIS[decision.basis]})\n`);
    for (const d of decision.differences) process.stderr.write(`#   ${d}\n`);
    rendered = renderUserData({ ...base, image: decision.image });
  }
  // A command line never prints a private key: the VM's key is elided.
  process.stdout.write(redactKeys(rendered.text));
  process.stderr.write(`# ${role} user-data: ${rendered.rawBytes} bytes (private key elided)\n`);
  return 0;
}
