import 'reflect-metadata';
import { TEST_CLIENT, trixiePython } from './helpers/prereq';

// The dask-2024.12 project runs the real-Dask tests against the trixie root's Dask: the library
// and the CLI find their Python through DASK_CLOUD_PYTHON, as a user's would. Without the root the
// tests skip through realDask() (and fail in CI).
if (TEST_CLIENT === 'trixie') {
  const python = trixiePython();
  if (python) process.env.DASK_CLOUD_PYTHON = python;
}
