// Webhook signature verification: what the official Python SDK's `yotel.webhook.verify` (0.2.1)
// accepts, and nothing else. test/webhook-vectors.test.mjs holds this to vectors the Python side
// signs (bridge/webhooks/signing.py) and judges (yotel.webhook.verify).
//
// Scheme A: `X-Yotel-Signature: sha256=<hex>` (during a secret rotation `sha256=<old>,sha256=<new>`,
// any one matching passes) and `X-Yotel-Timestamp: <unix seconds>`; the hex is
// HMAC-SHA256(secret, "<timestamp>." + raw body); the timestamp must be within 300 s of now.

import { createHmac, timingSafeEqual } from "node:crypto";

import { YotelError } from "./errors.js";

/** The replay window, seconds (the Python SDK's `MAX_AGE_SECONDS`). */
export const MAX_AGE_SECONDS = 300;

/** Verification failed: `reason` says why (log it; do not send it back to the sender). */
export class InvalidSignature extends YotelError {
  readonly reason: string;

  constructor(reason: string) {
    super(reason);
    this.reason = reason;
  }
}

/** Headers as any framework hands them over: a fetch `Headers`, Node's `req.headers`, a Map, pairs. */
export type WebhookHeaders =
  | { forEach(cb: (value: string, key: string) => void): void; get(name: string): string | null }
  | ReadonlyMap<string, unknown>
  | Iterable<readonly [string, unknown]>
  | { readonly [name: string]: unknown };

export type RawBody = Uint8Array | ArrayBuffer | string;

export interface VerifyOptions {
  /** Unix seconds to judge the timestamp against (default: now). */
  now?: number;
  /** The replay window in seconds (default 300). */
  maxAgeS?: number;
}

/** The envelope every delivery carries (docs/webhooks.md). */
export interface WebhookEvent<D = Record<string, unknown>> {
  event_id: string;
  event_type: string;
  timestamp: number;
  tenant_id?: string;
  data: D;
}

// What Python's str.isspace() / str.strip() treat as whitespace (Python 3.11, Unicode 14.0.0).
const PY_SPACE = new Set([
  0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0, 0x1680, 0x2000, 0x2001, 0x2002,
  0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000,
]);
// int() skips only these ASCII ones (Py_ISSPACE); a non-ASCII one counts if str.isspace() says so.
const PY_INT_ASCII_SPACE = new Set([0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x20]);
// The zero of every run of ten decimal digits (Unicode category Nd) Python 3.11 knows.
const PY_DECIMAL_ZEROS = [
  0x30, 0x660, 0x6f0, 0x7c0, 0x966, 0x9e6, 0xa66, 0xae6, 0xb66, 0xbe6, 0xc66, 0xce6, 0xd66, 0xde6, 0xe50,
  0xed0, 0xf20, 0x1040, 0x1090, 0x17e0, 0x1810, 0x1946, 0x19d0, 0x1a80, 0x1a90, 0x1b50, 0x1bb0, 0x1c40,
  0x1c50, 0xa620, 0xa8d0, 0xa900, 0xa9d0, 0xa9f0, 0xaa50, 0xabf0, 0xff10, 0x104a0, 0x10d30, 0x11066,
  0x110f0, 0x11136, 0x111d0, 0x112f0, 0x11450, 0x114d0, 0x11650, 0x116c0, 0x11730, 0x118e0, 0x11950,
  0x11c50, 0x11d50, 0x11da0, 0x16a60, 0x16ac0, 0x16b50, 0x1d7ce, 0x1d7d8, 0x1d7e2, 0x1d7ec, 0x1d7f6,
  0x1e140, 0x1e2f0, 0x1e950, 0x1fbf0,
];
// Python 3.11's default sys.get_int_max_str_digits().
const PY_INT_MAX_STR_DIGITS = 4300;

function decimalValue(cp: number): number {
  for (const zero of PY_DECIMAL_ZEROS) {
    if (cp >= zero && cp <= zero + 9) return cp - zero;
  }
  return -1;
}

/** Python's str.strip() (no argument). */
export function pyStrip(s: string): string {
  const cps = Array.from(s);
  let start = 0;
  let end = cps.length;
  while (start < end && PY_SPACE.has(cps[start]!.codePointAt(0)!)) start++;
  while (end > start && PY_SPACE.has(cps[end - 1]!.codePointAt(0)!)) end--;
  return cps.slice(start, end).join("");
}

/**
 * Python's int(s) for a str, base 10: surrounding whitespace, a sign, any Unicode decimal digits,
 * single underscores between digits, at most 4300 digits. null where int() raises ValueError.
 */
export function pyInt(s: string): bigint | null {
  // _PyUnicode_TransformDecimalAndSpaceToASCII: below 127 as is, a space ' ', a digit its ASCII
  // digit; anything else ends the string with '?', which no parse accepts.
  let ascii = "";
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    if (cp < 127) ascii += ch;
    else if (PY_SPACE.has(cp)) ascii += " ";
    else {
      const d = decimalValue(cp);
      if (d < 0) return null;
      ascii += String(d);
    }
  }
  // PyLong_FromString, base 10.
  let i = 0;
  const n = ascii.length;
  const space = (k: number) => k < n && PY_INT_ASCII_SPACE.has(ascii.charCodeAt(k));
  while (space(i)) i++;
  let negative = false;
  if (ascii[i] === "+" || ascii[i] === "-") {
    negative = ascii[i] === "-";
    i++;
  }
  let digits = "";
  let lastUnderscore = false;
  while (i < n) {
    const c = ascii[i]!;
    if (c >= "0" && c <= "9") {
      digits += c;
      lastUnderscore = false;
    } else if (c === "_" && digits.length > 0 && !lastUnderscore) {
      lastUnderscore = true;
    } else {
      break;
    }
    i++;
  }
  if (digits.length === 0 || lastUnderscore) return null;
  while (space(i)) i++;
  if (i !== n) return null;
  if (digits.length > PY_INT_MAX_STR_DIGITS) return null;
  const value = BigInt(digits);
  return negative ? -value : value;
}

function normalizeHeaders(headers: WebhookHeaders): Map<string, string> {
  // The Python SDK: {str(k).lower(): str(v) for k, v in dict(headers).items()}; a later key wins.
  const out = new Map<string, string>();
  const put = (k: unknown, v: unknown) => {
    const value = Array.isArray(v) ? v.map(String).join(", ") : String(v);
    out.set(String(k).toLowerCase(), value);
  };
  const h = headers as unknown;
  if (h === null || h === undefined) return out;
  if (typeof (h as Headers).forEach === "function" && typeof (h as Headers).get === "function" && !(h instanceof Map)) {
    (h as Headers).forEach((v, k) => put(k, v));
  } else if (h instanceof Map) {
    for (const [k, v] of h) put(k, v);
  } else if (typeof (h as Iterable<unknown>)[Symbol.iterator] === "function") {
    for (const pair of h as Iterable<readonly [string, unknown]>) put(pair[0], pair[1]);
  } else {
    for (const [k, v] of Object.entries(h as Record<string, unknown>)) {
      if (v !== undefined) put(k, v);
    }
  }
  return out;
}

function bodyBytes(raw: RawBody): Uint8Array {
  if (typeof raw === "string") return new TextEncoder().encode(raw);
  if (raw instanceof Uint8Array) return raw;
  if (raw instanceof ArrayBuffer) return new Uint8Array(raw);
  throw new TypeError("rawBody must be the raw request body: a Uint8Array/Buffer, an ArrayBuffer or a string");
}

/** `sha256=<hex>` for one secret: what the bridge sends (bridge/webhooks/signing.py `sign`). */
export function signWebhook(secret: string, timestamp: number | bigint, rawBody: RawBody): string {
  const mac = createHmac("sha256", Buffer.from(secret, "utf8"));
  mac.update(Buffer.from(`${BigInt(timestamp)}.`, "utf8"));
  mac.update(bodyBytes(rawBody));
  return `sha256=${mac.digest("hex")}`;
}

function isAscii(s: string): boolean {
  return /^[\x00-\x7f]*$/.test(s);
}

/**
 * Verify a delivery's signature, or throw InvalidSignature. Pass the raw body exactly as received
 * (before any JSON parsing) and the request's headers.
 *
 * Accepts exactly what the Python SDK's `yotel.webhook.verify(raw_body=, headers=, signing_secret=)`
 * accepts: header names in any case, `X-Yotel-Signature` with one or more comma-separated
 * `sha256=` tokens (a rotation's old and new signatures; any one matching passes),
 * `X-Yotel-Timestamp` as Python's int() reads it, within `maxAgeS` (300) of `now`.
 * `secret` may also be a list (each is tried), for receivers rolling a new secret out.
 */
export function verifyWebhook(
  rawBody: RawBody,
  headers: WebhookHeaders,
  secret: string | readonly string[],
  options: VerifyOptions = {},
): void {
  const h = normalizeHeaders(headers);
  const sig = h.get("x-yotel-signature") ?? "";
  const tsStr = h.get("x-yotel-timestamp") ?? "";
  if (!sig || !tsStr) throw new InvalidSignature("missing signature or timestamp header");

  const tokens = sig
    .split(",")
    .map(pyStrip)
    .filter((t) => t !== "");
  if (tokens.length === 0 || !tokens.every((t) => t.startsWith("sha256="))) {
    throw new InvalidSignature("signature header not sha256=");
  }
  const ts = pyInt(tsStr);
  if (ts === null) throw new InvalidSignature("timestamp header not int");
  const now = options.now ?? Math.floor(Date.now() / 1000);
  const maxAge = options.maxAgeS ?? MAX_AGE_SECONDS;
  const age = Number.isInteger(now) ? Number(BigInt(now) - ts) : now - Number(ts);
  if (Math.abs(age) > maxAge) throw new InvalidSignature("timestamp outside replay window");

  const secrets = typeof secret === "string" ? [secret] : [...secret];
  const body = bodyBytes(rawBody);
  for (const s of secrets) {
    const expected = Buffer.from(signWebhook(s, ts, body), "utf8");
    for (const token of tokens) {
      // hmac.compare_digest raises TypeError on a non-ASCII str: the Python SDK rejects the
      // delivery there, before any later token, so this does too.
      if (!isAscii(token)) throw new InvalidSignature("signature mismatch");
      const given = Buffer.from(token, "utf8");
      if (given.length === expected.length && timingSafeEqual(given, expected)) return;
    }
  }
  throw new InvalidSignature("signature mismatch");
}

/** verifyWebhook, then the body parsed as the envelope. */
export function verifyAndParseWebhook<D = Record<string, unknown>>(
  rawBody: RawBody,
  headers: WebhookHeaders,
  secret: string | readonly string[],
  options: VerifyOptions = {},
): WebhookEvent<D> {
  verifyWebhook(rawBody, headers, secret, options);
  const text = typeof rawBody === "string" ? rawBody : new TextDecoder().decode(bodyBytes(rawBody));
  return JSON.parse(text) as WebhookEvent<D>;
}
