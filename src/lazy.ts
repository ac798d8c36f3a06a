/**
 * Heavy dependencies loaded on first use, so `import 'dask-cloud'` stays cheap (the benchmark
 * holds it to 1.5x a bare \`node -e ''\`): certificate generation, YAML and handlebars are only
 * paid for by the code paths that need them. Cloud SDKs follow the same rule in their providers.
 */
import type * as GenerateModule from './security/generate';
import type * as YamlModule from 'yaml';
import type HandlebarsModule from 'handlebars';
import type * as MsgpackModule from '@msgpack/msgpack';
import type * as TlsModule from 'node:tls';
import type * as CryptoModule from 'node:crypto';
import type * as ZlibModule from 'node:zlib';
import type * as NetModule from 'node:net';
import type * as ChildProcessModule from 'node:child_process';

/**
 * `@peculiar/x509` (and the reflect-metadata polyfill it needs) through our generator module.
 * A dynamic import rather than `require`, so it also works where our sources run untranspiled
 * by Node's own loader (test runners); the bundle turns it into a lazy initialiser.
 */
export function loadGenerator(): Promise<typeof GenerateModule> {
  return import('./security/generate');
}

export function loadYaml(): typeof YamlModule {
  return require('yaml') as typeof YamlModule;
}

export function loadHandlebars(): typeof HandlebarsModule {
  const mod = require('handlebars') as typeof HandlebarsModule & { default?: typeof HandlebarsModule };
  return mod.default ?? mod;
}

/** The msgpack codec: only code that talks to a scheduler pays for it. */
export function loadMsgpack(): typeof MsgpackModule {
  return require('@msgpack/msgpack') as typeof MsgpackModule;
}

/** `node:tls` (with `node:net` beneath it), loaded on the first connection. */
export function loadTls(): typeof TlsModule {
  return require('node:tls') as typeof TlsModule;
}

/** `node:crypto`: loading it is about a tenth of a bare `node` start, and importing the library needs none of it. */
export function loadCrypto(): typeof CryptoModule {
  return require('node:crypto') as typeof CryptoModule;
}

/** `node:zlib`, for measuring gzipped user-data. */
export function loadZlib(): typeof ZlibModule {
  return require('node:zlib') as typeof ZlibModule;
}

/** `node:net`: sockets and servers only once a cluster starts. */
export function loadNet(): typeof NetModule {
  return require('node:net') as typeof NetModule;
}

/** `node:child_process`: processes only once a cluster starts or an interpreter is probed. */
export function loadChildProcess(): typeof ChildProcessModule {
  return require('node:child_process') as typeof ChildProcessModule;
}
