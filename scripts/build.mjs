// Build: TypeScript → CommonJS in dist/cjs, plus a thin ESM entry that re-exports the same
// CommonJS module (one copy of the code, so `instanceof` and state are shared by both styles).
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
rmSync(path.join(root, 'dist'), { recursive: true, force: true });
execFileSync(process.execPath, [path.join(root, 'node_modules/typescript/bin/tsc'), '-p', path.join(root, 'tsconfig.build.json')], {
  stdio: 'inherit',
  cwd: root,
});
const require = createRequire(import.meta.url);
const entry = path.join(root, 'dist/cjs/src/index.js');
const names = Object.keys(require(entry)).filter((n) => n !== 'default' && n !== '__esModule');
mkdirSync(path.join(root, 'dist/esm'), { recursive: true });
writeFileSync(
  path.join(root, 'dist/esm/index.mjs'),
  `import cjs from '../cjs/src/index.js';\nexport const { ${names.join(', ')} } = cjs;\nexport default cjs;\n`,
);
const cli = path.join(root, 'dist/cjs/src/cli.js');
console.log(`built dist/cjs and dist/esm (${names.length} exports)`);
void cli;
