/**
 * The README's "Coming from dask-cloudprovider" table names our options: each one it names must
 * be an option of some cluster kind (the option tables, src/config/schema.ts), so the table cannot
 * drift from the code. And each dask-cloudprovider kwarg that maps to one option of ours is what
 * the "did you mean" of that kind suggests for it.
 */
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CLUSTER_KINDS, optionSpecs, suggestOption } from '../../src/config/schema';

const readme = readFileSync(path.resolve(__dirname, '../../README.md'), 'utf8');
const section = readme.slice(readme.indexOf('## Coming from dask-cloudprovider'), readme.indexOf('\n## ', readme.indexOf('## Coming from dask-cloudprovider') + 5));
const rows = section
  .split('\n')
  .filter((l) => l.startsWith('| `') || l.startsWith('| DigitalOcean'))
  .map((l) => l.split('|').slice(1, 4).map((c) => c.trim()));
const names = (cell: string) => [...cell.matchAll(/`([A-Za-z_][A-Za-z0-9_]*)(?:[:`])/g)].map((m) => m[1]!);
const ours = new Set(CLUSTER_KINDS.flatMap((k) => optionSpecs(k).map((s) => s.name)));

describe("README: coming from dask-cloudprovider", () => {
  it('has the table', () => {
    expect(rows.length).toBeGreaterThan(30);
  });

  it('names only options that exist', () => {
    const unknown = rows.flatMap(([, right]) => names(right!).filter((n) => /^[a-z]/.test(n) && !ours.has(n) && n !== 'true' && n !== 'false'));
    expect(unknown).toEqual([]);
  });

  it("maps each one-to-one kwarg to what the options' did-you-mean suggests", () => {
    const mismatches: string[] = [];
    for (const [left, right] of rows) {
      const theirs = names(left!).filter((n) => n.includes('_'));
      const mine = names(right!).filter((n) => ours.has(n));
      if (theirs.length !== mine.length || theirs.length === 0) continue;
      theirs.forEach((kwarg, i) => {
        const kinds = CLUSTER_KINDS.filter((k) => optionSpecs(k).some((s) => s.name === mine[i]));
        if (!kinds.some((k) => suggestOption(k, kwarg) === mine[i])) mismatches.push(`${kwarg} → ${mine[i]} (suggested: ${kinds.map((k) => `${k} ${suggestOption(k, kwarg)}`).join(', ')})`);
      });
    }
    expect(mismatches).toEqual([]);
  });
});
