/**
 * EC2 Query API XML: response envelopes, a tiny element builder and the error shape.
 *
 * Element names are EC2's own wire names (`ipAddress`, `instancesSet/item`, `groupSet`), which
 * are not the SDK's member names: the SDK's XML parser silently ignores unknown elements, so a
 * wrong name here would only show up as an `undefined` field in a caller.
 */
import type { ApiErrorInfo, ErrorShaper, FakeResponse } from '../core';

export const EC2_XMLNS = 'http://ec2.amazonaws.com/doc/2016-11-15/';
const XML_CONTENT_TYPE = 'text/xml;charset=UTF-8';

/** A child value: scalars become text, arrays are concatenated, undefined/null are omitted. */
export type XmlChild = string | number | boolean | undefined | null | Xml | XmlChild[];

/** Already-serialized XML (so text is never escaped twice). */
export class Xml {
  constructor(readonly text: string) {}
}

export function escapeXml(s: string): string {
  return s.replace(/[<>&'"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', "'": '&apos;', '"': '&quot;' })[c] as string);
}

function render(c: XmlChild): string {
  if (c === undefined || c === null) return '';
  if (c instanceof Xml) return c.text;
  if (Array.isArray(c)) return c.map(render).join('');
  return escapeXml(String(c));
}

/** `<name>children</name>`; omitted entirely when the only child is undefined/null. */
export function el(name: string, ...children: XmlChild[]): Xml {
  if (children.length === 1 && (children[0] === undefined || children[0] === null)) return new Xml('');
  return new Xml(`<${name}>${children.map(render).join('')}</${name}>`);
}

/** A structure: `{ a: 1, b: undefined }` → `<a>1</a>` (undefined members omitted, order kept). */
export function fields(obj: Record<string, XmlChild>): Xml {
  return new Xml(
    Object.entries(obj)
      .map(([k, v]) => render(el(k, v)))
      .join(''),
  );
}

/** EC2 list: `<name><item>..</item><item>..</item></name>`, `<name/>` when empty. */
export function list<T>(name: string, items: readonly T[], item: (x: T) => XmlChild): Xml {
  if (items.length === 0) return new Xml(`<${name}/>`);
  return new Xml(`<${name}>${items.map((x) => `<item>${render(item(x))}</item>`).join('')}</${name}>`);
}

/** EC2 timestamps: ISO 8601 with milliseconds, UTC. */
export function isoTime(ms: number): string {
  return new Date(ms).toISOString();
}

/** A successful answer: `<ActionResponse xmlns=..><requestId>..</requestId>...</ActionResponse>`. */
export function xmlResponse(action: string, requestId: string, body: XmlChild): FakeResponse {
  return {
    status: 200,
    headers: { 'content-type': XML_CONTENT_TYPE },
    body: `<?xml version="1.0" encoding="UTF-8"?>\n<${action}Response xmlns="${EC2_XMLNS}"><requestId>${escapeXml(requestId)}</requestId>${render(body)}</${action}Response>`,
  };
}

/** EC2's error document (note `RequestID`, unlike `requestId` in successful answers). */
export function xmlError(code: string, message: string, requestId: string, status: number): FakeResponse {
  return {
    status,
    headers: { 'content-type': XML_CONTENT_TYPE },
    body:
      `<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>${escapeXml(code)}</Code>` +
      `<Message>${escapeXml(message)}</Message></Error></Errors><RequestID>${escapeXml(requestId)}</RequestID></Response>`,
  };
}

/**
 * Maps the core's generic errors (contract violations, unknown operations, crashes) to the codes
 * EC2 itself answers with; handler and fault errors already carry EC2 codes.
 */
export const ec2ErrorShape: ErrorShaper = (e: ApiErrorInfo) => {
  let { status, code, message } = e;
  if (e.source === 'contract') {
    const v = e.violations?.[0];
    status = 400;
    if (!v || v.kind === 'unknown-operation') {
      code = 'InvalidAction';
      message = `The action ${e.request.form?.Action ?? ''} is not valid for this web service.`;
    } else if (v.location === 'Version') {
      code = 'NoSuchVersion';
      message = `The requested version (${e.request.form?.Version ?? ''}) of service AmazonEC2 does not exist`;
    } else if (v.kind === 'unknown-parameter') {
      code = 'UnknownParameter';
      message = `The parameter ${v.location} is not recognized`;
    } else if (v.kind === 'missing-parameter') {
      code = 'MissingParameter';
      message = `The request must contain the parameter ${v.location}`;
    } else {
      code = 'InvalidParameterValue';
      message = v.message;
    }
  } else if (e.source === 'no-route') {
    status = 400;
    code = 'InvalidAction';
    message = `The action ${e.operation ?? ''} is not valid for this web service (the EC2 fake does not implement it).`;
  } else if (e.source === 'internal') {
    status = 500;
    code = 'InternalError';
    message = 'An internal error has occurred';
  }
  return xmlError(code, message, e.request.id, status);
};
