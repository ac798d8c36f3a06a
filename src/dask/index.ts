/**
 * Dask wire-protocol client: frames, comms and the scheduler RPCs cluster management needs.
 */
export { parseAddress, formatAddress, type DaskAddress } from './address';
export {
  DaskComm,
  isRetryableCommError,
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_REQUEST_TIMEOUT_MS,
  type TlsClientOptions,
  type CommConnectOptions,
  type ConnectPhase,
  type RequestOptions,
} from './comm';
export { encodeFrames, FrameDecoder, DEFAULT_MAX_FRAMES, DEFAULT_MAX_MESSAGE_BYTES, type FrameLimits } from './frames';
export {
  CLIENT_HANDSHAKE,
  decodeMessage,
  encodeMessage,
  isRemoteError,
  remoteErrorInfo,
  SerializedValue,
  type RemoteErrorInfo,
} from './protocol';
export {
  SchedulerClient,
  waitForScheduler,
  waitForWorkers,
  MAX_RECONNECTS,
  toSchedulerIdentity,
  toWorkerIdentity,
  type ConnectOptions,
  type RetireWorkersOptions,
  type SchedulerIdentity,
  type WaitForSchedulerOptions,
  type WaitForWorkersOptions,
  type WorkerIdentity,
} from './scheduler-client';
export {
  daskProcessSpec,
  protocolFor,
  tlsPath,
  DEFAULT_SCHEDULER_PORT,
  DEFAULT_DASHBOARD_PORT,
  type DaskFile,
  type DaskProcessOptions,
  type DaskProcessSpec,
  type ProcessRole,
} from './command';
