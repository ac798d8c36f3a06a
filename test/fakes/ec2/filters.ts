/**
 * EC2 `Filter.N.Name` / `Filter.N.Value.M` semantics and `MaxResults` / `NextToken` paging.
 *
 * Filters AND together; the values of one filter OR together; values may use `*` and `?`
 * wildcards; `tag:Key` matches the tag's value, `tag-key` / `tag-value` any tag. An unknown
 * filter name is `InvalidParameterValue`, as on EC2.
 */
import { FakeApiError } from '../core';

export interface Ec2Tag {
  key: string;
  value: string;
}

export interface FilterInput {
  Name?: string;
  Value?: string[];
}

/** What a resource exposes to filters: name → its value(s) (undefined = does not match). */
export type FilterFields = Record<string, string | string[] | undefined>;

function wildcard(pattern: string): RegExp {
  const src = pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${src}$`, 's');
}

export function matchesAny(values: readonly string[], patterns: readonly string[]): boolean {
  const res = patterns.map(wildcard);
  return values.some((v) => res.some((r) => r.test(v)));
}

/**
 * Keeps the items every filter matches. `fields(item)` lists the item's filterable values by
 * filter name; `tags(item)` its tags (for `tag:*`, `tag-key`, `tag-value`).
 */
export function applyFilters<T>(
  items: readonly T[],
  filters: readonly FilterInput[] | undefined,
  known: readonly string[],
  fields: (item: T) => FilterFields,
  tags?: (item: T) => readonly Ec2Tag[],
): T[] {
  const list = filters ?? [];
  for (const f of list) {
    const name = f.Name ?? '';
    const isTag = tags && (name.startsWith('tag:') || name === 'tag-key' || name === 'tag-value');
    if (!isTag && !known.includes(name)) throw new FakeApiError(400, 'InvalidParameterValue', `The filter '${name}' is invalid`);
  }
  return items.filter((item) =>
    list.every((f) => {
      const name = f.Name ?? '';
      const patterns = f.Value ?? [];
      if (tags && name.startsWith('tag:')) {
        const key = name.slice(4);
        return matchesAny(
          tags(item).filter((t) => t.key === key).map((t) => t.value),
          patterns,
        );
      }
      if (tags && name === 'tag-key') return matchesAny(tags(item).map((t) => t.key), patterns);
      if (tags && name === 'tag-value') return matchesAny(tags(item).map((t) => t.value), patterns);
      const v = fields(item)[name];
      if (v === undefined) return false;
      return matchesAny(Array.isArray(v) ? v : [v], patterns);
    }),
  );
}

/** Opaque page token (an offset into the filtered result, tied to the operation). */
export function paginate<T>(
  operation: string,
  items: readonly T[],
  maxResults: number | undefined,
  nextToken: string | undefined,
  bounds: { min: number; max: number } = { min: 5, max: 1000 },
): { page: T[]; nextToken?: string } {
  if (maxResults !== undefined && (maxResults < bounds.min || maxResults > bounds.max)) {
    throw new FakeApiError(
      400,
      'InvalidParameterValue',
      `Value ( ${maxResults} ) for parameter maxResults is invalid. Expecting a value between ${bounds.min} and ${bounds.max}.`,
    );
  }
  let offset = 0;
  if (nextToken !== undefined) {
    try {
      const parsed = JSON.parse(Buffer.from(nextToken, 'base64url').toString('utf8')) as { op?: string; offset?: number };
      if (parsed.op !== operation || typeof parsed.offset !== 'number' || parsed.offset < 0) throw new Error('bad token');
      offset = parsed.offset;
    } catch {
      throw new FakeApiError(400, 'InvalidPaginationToken', `The pagination token '${nextToken}' is invalid.`);
    }
  }
  const size = maxResults ?? items.length;
  const page = items.slice(offset, offset + size);
  const next = offset + size < items.length ? Buffer.from(JSON.stringify({ op: operation, offset: offset + size })).toString('base64url') : undefined;
  return { page, nextToken: next };
}
