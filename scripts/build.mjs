// Build: one CommonJS bundle of our own code (dist/index.js; dependencies stay external and the
// heavy ones are still required lazily), type declarations from tsc (dist/types), and a thin ESM
// entry re-exporting the same CommonJS module — one copy of the code, so `instanceof` and state
// are shared by `import` and `require` users. Bundling halves the files Node must resolve at
// import time, which is most of what `import 'dask-cloud'` costs.
//
// The ESM entry loads the bundle with `createRequire(import.meta.url)` rather than
// `import cjs from './index.js'`: an ESM import of a CommonJS file makes Node scan the whole file
// with cjs-module-lexer to find its named exports, which for our bundle cost about half a bare
// `node` start on every import. Through `require` nothing is scanned; the export names are listed
// here at build time instead (`npm run bench import` measures both paths).
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
rmSync(path.join(root, 'dist'), { recursive: true, force: true });

const esbuild = require('esbuild');
for (const [entry, out] of [
  ['src/index.ts', 'dist/index.js'],
  ['src/cli.ts', 'dist/cli.js'],
]) {
  esbuild.buildSync({
    entryPoints: [path.join(root, entry)],
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    packages: 'external',
    sourcemap: true,
    outfile: path.join(root, out),
    logLevel: 'warning',
  });
}
chmodSync(path.join(root, 'dist/cli.js'), 0o755);
execFileSync(process.execPath, [path.join(root, 'node_modules/typescript/bin/tsc'), '-p', path.join(root, 'tsconfig.build.json')], {
  stdio: 'inherit',
  cwd: root,
});
const names = Object.keys(require(path.join(root, 'dist/index.js'))).filter((n) => n !== 'default' && n !== '__esModule');
writeFileSync(
  path.join(root, 'dist/index.mjs'),
  `import { createRequire } from 'node:module';\nconst cjs = createRequire(import.meta.url)('./index.js');\nexport const { ${names.join(', ')} } = cjs;\nexport default cjs;\n`,
);
mkdirSync(path.join(root, 'dist'), { recursive: true });
console.log(`built dist/index.js, dist/index.mjs, dist/cli.js and dist/types (${names.length} exports)`);
