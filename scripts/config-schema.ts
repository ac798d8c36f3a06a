/**
 * Writes config.schema.json, the JSON Schema of the config file, from the option table
 * (src/config/schema.ts and each provider's schema.ts). Run after changing an option:
 *
 *   npx tsx scripts/config-schema.ts          # writes the file
 *   npx tsx scripts/config-schema.ts --check  # exits 1 when the file is out of date
 *
 * test/unit/options-schema.test.ts fails while the committed file differs from what this writes.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { configJsonSchemaText } from '../src/config/json-schema';

const file = path.resolve(__dirname, '..', 'config.schema.json');
const text = configJsonSchemaText();

if (process.argv.includes('--check')) {
  let current = '';
  try {
    current = readFileSync(file, 'utf8');
  } catch {
    // missing: out of date
  }
  if (current !== text) {
    console.error(`${path.basename(file)} is out of date: run npx tsx scripts/config-schema.ts`);
    process.exit(1);
  }
  console.log(`${path.basename(file)} is up to date`);
} else {
  writeFileSync(file, text);
  console.log(`wrote ${path.basename(file)}`);
}
