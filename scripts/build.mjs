// Build: CommonJS bundles of our own code (dependencies stay external; the heavy ones are still
// required lazily), type declarations from tsc (dist/types), and thin ESM entries.
//
// Entry points, one per package export, and one copy of the core for all of them:
//   dist/core.js          the core (src/ and providers/local/): every module another bundle uses
//   dist/index.js         `dask-cloud`: the core's public exports, re-exported
//   dist/gcp.js, ec2.js, digitalocean.js   `dask-cloud/<cloud>`: that cloud's provider only
//   dist/cli.js           the `dask-cloud` command
// A provider bundle does not contain the core: each core module it imports becomes a one-line
// module that takes the same module from dist/core.js. So `VMCluster`, the errors and the
// process-wide state exist once, whichever entries a program loads, and `instanceof` holds across
// them. Bundling keeps the files Node must resolve at import time few, which is most of what
// `import 'dask-cloud'` costs; the clouds' code is not even read until their entry is loaded.
//
// The ESM entries load their bundle with `createRequire(import.meta.url)` rather than
// `import cjs from './index.js'`: an ESM import of a CommonJS file makes Node scan the whole file
// with cjs-module-lexer to find its named exports, which for our bundle cost about half a bare
// `node` start on every import. Through `require` nothing is scanned; the export names are listed
// here at build time instead (`npm run bench import` measures both paths). Each ESM entry has
// `.d.mts` types beside it, so TypeScript sees ESM types for `import` and CommonJS types for
// `require` (`attw --pack` checks the pair).
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const esbuild = require('esbuild');
const dist = path.join(root, 'dist');
rmSync(dist, { recursive: true, force: true });
mkdirSync(dist, { recursive: true });

const CLOUDS = ['gcp', 'ec2', 'digitalocean'];
/** Bundles besides the core: `[name, entry]`. */
const ENTRIES = [...CLOUDS.map((c) => [c, `providers/${c}/index.ts`]), ['cli', 'src/cli.ts']];

/** Cloud-folder files the core itself imports (say, each cloud's option table): they are core modules. */
const sharedWithCore = new Set();

/** Which bundle a source file belongs to. */
function owner(file) {
  const rel = path.relative(root, file).split(path.sep).join('/');
  if (sharedWithCore.has(file)) return 'core';
  for (const c of CLOUDS) if (rel.startsWith(`providers/${c}/`)) return c;
  if (rel === 'src/cli.ts' || rel.startsWith('src/cli/')) return 'cli';
  if (rel.startsWith('src/') || rel.startsWith('providers/local/')) return 'core';
  throw new Error(`build: ${rel} belongs to no bundle`);
}

/** Every .ts file under `dir` (relative to the root), tests excepted. */
function sources(dir) {
  return readdirSync(path.join(root, dir), { recursive: true })
    .map((f) => path.join(root, dir, String(f)))
    .filter((f) => f.endsWith('.ts') && !f.endsWith('.test.ts') && !f.endsWith('.d.ts'));
}

/** The TypeScript file a relative import names, or undefined (a JSON file, say). */
function resolveSource(dir, spec) {
  const base = path.resolve(dir, spec);
  for (const f of [base, `${base}.ts`, path.join(base, 'index.ts')]) {
    if (existsSync(f) && statSync(f).isFile() && f.endsWith('.ts')) return f;
  }
  return undefined;
}

/** `src/cluster/vm.ts` → `m_src_cluster_vm`: the core's export holding that module's namespace. */
function moduleKey(file) {
  return `m_${path.relative(root, file).replace(/\.ts$/, '').replace(/[^A-Za-z0-9]/g, '_')}`;
}

/**
 * Routes imports that cross bundles: into the core, through dist/core.js; into a cloud, through
 * its bundle, which must be through its index (the package's entry). `used` collects the core
 * modules named, so the core exposes exactly those.
 */
function crossBundle(self, used) {
  return {
    name: 'cross-bundle',
    setup(build) {
      build.onResolve({ filter: /^\./ }, (args) => {
        if (args.namespace === 'core-module') return { path: './core.js', external: true };
        const file = resolveSource(args.resolveDir, args.path);
        if (!file) return undefined;
        const to = owner(file);
        if (to === self) return undefined;
        if (to === 'core') {
          used.add(file);
          return { path: file, namespace: 'core-module' };
        }
        if (to === 'cli' || file !== path.join(root, 'providers', to, 'index.ts')) {
          throw new Error(`build: ${path.relative(root, args.importer)} imports ${path.relative(root, file)}; import another cloud only through its index`);
        }
        return { path: `./${to}.js`, external: true };
      });
      build.onLoad({ filter: /.*/, namespace: 'core-module' }, (args) => ({
        contents: `module.exports = require('./core.js').${moduleKey(args.path)};`,
        loader: 'js',
        resolveDir: dist,
      }));
    },
  };
}

// keepNames: esbuild binds a class that refers to itself as `class _X`, and without it `X.name` (our
// displays, error names, `isInstance` across copies) would read `_X`.
const common = { bundle: true, platform: 'node', format: 'cjs', target: 'node20', packages: 'external', sourcemap: true, keepNames: true, logLevel: 'warning' };

// What the core reaches in the clouds' folders without going through a cloud's index.
const cloudIndexes = new Set(CLOUDS.map((c) => path.join(root, 'providers', c, 'index.ts')));
const discovery = await esbuild.build({
  ...common,
  sourcemap: false,
  write: false,
  metafile: true,
  outdir: path.join(dist, 'discovery'),
  entryPoints: [...sources('src'), ...sources('providers/local')].filter((f) => owner(f) === 'core'),
  plugins: [
    {
      name: 'cloud-indexes-external',
      setup(build) {
        build.onResolve({ filter: /^\./ }, (args) => {
          const file = resolveSource(args.resolveDir, args.path);
          return file && cloudIndexes.has(file) ? { path: file, external: true } : undefined;
        });
      },
    },
  ],
});
for (const input of Object.keys(discovery.metafile.inputs)) {
  const file = path.resolve(root, input);
  if (CLOUDS.some((c) => file.startsWith(path.join(root, 'providers', c) + path.sep))) sharedWithCore.add(file);
}

// The clouds and the CLI first: they say which core modules the core must expose.
const used = new Set();
for (const [name, entry] of ENTRIES) {
  await esbuild.build({ ...common, entryPoints: [path.join(root, entry)], outfile: path.join(dist, `${name}.js`), plugins: [crossBundle(name, used)] });
}
const coreEntry = [
  `export * as root from ${JSON.stringify(path.join(root, 'src/index.ts'))};`,
  ...[...used].sort().map((f) => `export * as ${moduleKey(f)} from ${JSON.stringify(f)};`),
].join('\n');
await esbuild.build({
  ...common,
  stdin: { contents: coreEntry, resolveDir: root, sourcefile: 'core-entry.ts', loader: 'ts' },
  outfile: path.join(dist, 'core.js'),
  plugins: [crossBundle('core', new Set())],
});
writeFileSync(path.join(dist, 'index.js'), `'use strict';\n// The public API of the core bundle (see scripts/build.mjs).\nmodule.exports = require('./core.js').root;\n`);
chmodSync(path.join(dist, 'cli.js'), 0o755);

/** `[bundle, its .d.ts under dist/types]` for each ESM entry. */
const ESM = [['index', 'src/index'], ...CLOUDS.map((c) => [c, `providers/${c}/index`])];
let count = 0;
for (const [name, types] of ESM) {
  const names = Object.keys(require(path.join(dist, `${name}.js`))).filter((n) => n !== 'default' && n !== '__esModule');
  count += names.length;
  writeFileSync(
    path.join(dist, `${name}.mjs`),
    `import { createRequire } from 'node:module';\nconst cjs = createRequire(import.meta.url)('./${name}.js');\nexport const { ${names.join(', ')} } = cjs;\nexport default cjs;\n`,
  );
  writeFileSync(
    path.join(dist, `${name}.d.mts`),
    `export * from './types/${types}.js';\nimport * as cjs from './types/${types}.js';\nexport default cjs;\n`,
  );
}
execFileSync(process.execPath, [path.join(root, 'node_modules/typescript/bin/tsc'), '-p', path.join(root, 'tsconfig.build.json')], { stdio: 'inherit', cwd: root });

console.log(`built dist/ (core, index, ${CLOUDS.join(', ')}, cli; ${count} ESM exports) and dist/types`);
