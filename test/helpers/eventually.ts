/** Polls `check` until it holds, at most `timeoutMs`; the error says what was awaited. */
export async function eventually(check: () => boolean | Promise<boolean>, what = 'a condition', timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
