/** Placeholder: the detached owner of a local cluster (`dask-cloud up --provider local`). */
export async function runLocalSupervisor(_argv: string[]): Promise<number> {
  console.error('dask-cloud: the local supervisor is not built yet');
  return 1;
}
