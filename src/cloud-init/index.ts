/** Cloud-init user-data for Dask VMs: rendering, size limits and gzip. */
export {
  renderUserData,
  createUserDataRenderer,
  unitPath,
  DEFAULT_DASK_IMAGE,
  DEFAULT_PYTHON_PATH,
  VM_PATHS,
  BOOTSTRAP_FAILED_MARK,
  type UserDataOptions,
  type RenderedUserData,
  type UserDataRenderer,
  type UserDataRendererOptions,
} from './render';
export { USER_DATA_LIMITS, fitUserData, type GzipMode, type FittedUserData } from './limits';
