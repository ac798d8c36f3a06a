/**
 * Handlebars helpers for the cloud-init templates. Templates never interpolate raw text with
 * `{{value}}`: handlebars HTML-escapes it (`=` too, which corrupts base64), and YAML or systemd
 * would give meaning to quotes, `#`, `%` or `$` in it. Every value goes through one of these
 * helpers, which return `SafeString`s that are already quoted for their destination.
 */
import type Handlebars from 'handlebars';

/**
 * A JSON rendering of `value` that is also a valid YAML 1.1 and 1.2 scalar with the same meaning.
 * JSON is nearly a subset of YAML; the gaps are raw characters JSON leaves alone that YAML
 * treats specially (DEL and C1 controls are rejected by PyYAML; U+0085/U+2028/U+2029 are line
 * breaks in YAML 1.1), so everything outside printable ASCII is written as an escape.
 */
export function yamlJson(value: unknown): string {
  const json = JSON.stringify(value);
  if (json === undefined) throw new TypeError(`cannot render ${String(value)} as a YAML scalar`);
  return json.replace(/[^\x20-\x7e]/gu, (ch) => {
    const cp = ch.codePointAt(0) as number;
    return cp > 0xffff ? `\\U${cp.toString(16).padStart(8, '0')}` : `\\u${cp.toString(16).padStart(4, '0')}`;
  });
}

/** `content` encoded as base64 (UTF-8 for strings), as a double-quoted YAML scalar. */
export function yamlBase64(content: string | Uint8Array): string {
  const bytes = typeof content === 'string' ? Buffer.from(content, 'utf8') : Buffer.from(content);
  // Quoted so a short payload such as "1234" can never be read back as a number.
  return `"${bytes.toString('base64')}"`;
}

/**
 * One argument of a systemd command line (`ExecStart=`, not the executable: see
 * {@link systemdExecutable}), quoted so systemd passes it through unchanged: backslash escapes
 * inside double quotes, `%%` for specifiers, `$$` for variables.
 */
export function systemdWord(value: string): string {
  const escaped = value.replace(/[\\"%$\x00-\x1f\x7f]/g, (ch) => {
    switch (ch) {
      case '\\':
        return '\\\\';
      case '"':
        return '\\"';
      case '%':
        return '%%';
      case '$':
        return '$$';
      case '\n':
        return '\\n';
      case '\t':
        return '\\t';
      default:
        return `\\x${ch.charCodeAt(0).toString(16).padStart(2, '0')}`;
    }
  });
  return `"${escaped}"`;
}

/** Characters systemd refuses in an executable path ("contains special characters"). */
export const SYSTEMD_UNSAFE_PATH = /["'\\\x00-\x1f\x7f]/;

/**
 * The executable of a systemd command line. systemd expands `%` specifiers in it but not `$`
 * variables, and refuses quotes, backslashes and control characters outright (checked here).
 */
export function systemdExecutable(file: string): string {
  if (!file.startsWith('/') || SYSTEMD_UNSAFE_PATH.test(file)) {
    throw new Error(`systemd cannot run ${JSON.stringify(file)}: it needs an absolute path without quotes, backslashes or control characters`);
  }
  return `"${file.replace(/%/g, '%%')}"`;
}

/** Registers `json`, `b64`, `systemd` and `systemdExec` on an isolated handlebars environment. */
export function registerHelpers(hb: typeof Handlebars): void {
  // Handlebars passes its own options object as the last argument; each helper takes exactly one value.
  const one = (name: string, fn: (v: never) => string) =>
    hb.registerHelper(name, (...args: unknown[]) => {
      if (args.length !== 2) throw new Error(`helper "${name}" takes exactly one argument`);
      return new hb.SafeString(fn(args[0] as never));
    });
  one('json', (v: unknown) => yamlJson(v));
  one('b64', (v: string | Uint8Array) => {
    if (typeof v !== 'string' && !(v instanceof Uint8Array)) throw new Error('helper "b64" needs a string or bytes');
    return yamlBase64(v);
  });
  one('systemd', (v: string) => {
    if (typeof v !== 'string') throw new Error('helper "systemd" needs a string');
    return systemdWord(v);
  });
  one('systemdExec', (v: string) => {
    if (typeof v !== 'string') throw new Error('helper "systemdExec" needs a string');
    return systemdExecutable(v);
  });
}
