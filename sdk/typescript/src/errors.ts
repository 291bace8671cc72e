// The error classes, and how an answer that is not 2xx becomes one. The mapping is the official
// Python SDK's (yotel 0.2.1, errors._classify), plus the contract's rows the Python SDK leaves to
// its generic APIError: 400 is a ValidationError (the contract: "Body schema invalid") and a 5xx is
// a ServerError carrying the request id.

import type { ErrorDetail } from "./types.js";

/** Base of every error the SDK throws (the Python SDK's `YotelError`). */
export class YotelError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

export interface APIErrorInit {
  status: number;
  /** `detail` of the answer's body (`{"detail": {...}}`), or the whole body when it has no `detail`. */
  detail?: unknown;
  responseText?: string | null;
  /** The answer's `X-Request-Id`, or `detail.request_id`. */
  requestId?: string | null;
  headers?: Headers | null;
}

/** An answer that is not 2xx and has no more specific class (the Python SDK's `APIError`). */
export class APIError extends YotelError {
  readonly status: number;
  /** `detail.code` when the body is the envelope `{"detail": {"code", "message"}}`, else null. */
  readonly code: string | null;
  readonly detail: unknown;
  readonly responseText: string | null;
  /** The bridge's id for the request: quote it to support. */
  readonly requestId: string | null;
  readonly headers: Headers | null;

  constructor(init: APIErrorInit) {
    const code = detailCode(init.detail);
    super(describe(init.status, init.detail, init.responseText ?? null));
    this.status = init.status;
    this.code = code;
    this.detail = init.detail ?? null;
    this.responseText = init.responseText ?? null;
    this.requestId = init.requestId ?? detailRequestId(init.detail) ?? null;
    this.headers = init.headers ?? null;
  }

  /** The Python SDK's name for `status`. */
  get statusCode(): number {
    return this.status;
  }

  /** `detail.message` when the body is the envelope. */
  get detailMessage(): string | null {
    const d = this.detail as Partial<ErrorDetail> | null;
    return d && typeof d === "object" && typeof d.message === "string" ? d.message : null;
  }
}

/** 400 or 422: the body (or a header, or the query) was refused. `errors` lists the fields. */
export class ValidationError extends APIError {
  /** `detail.errors` (`[{loc, msg, type}]`) for validation_error, or `detail` when it is a list. */
  readonly errors: unknown[];

  constructor(init: APIErrorInit) {
    super(init);
    const d = init.detail as { errors?: unknown } | unknown[] | null | undefined;
    if (Array.isArray(d)) this.errors = d;
    else if (d && typeof d === "object" && Array.isArray(d.errors)) this.errors = d.errors;
    else this.errors = [];
  }
}

/** 401: the key or callback token is missing, malformed, unknown, expired or revoked. */
export class AuthenticationError extends APIError {}

/** 403: a scope is missing, or the token belongs to another call. The Python SDK calls it PermissionError. */
export class PermissionDenied extends APIError {}

/** 403 `conference_membership_required`: whisper / barge / monitor_* without a monitor or conference relation to the target call. */
export class ConferenceMembershipRequired extends PermissionDenied {}

/** 404: not in this tenant. */
export class NotFoundError extends APIError {}

/** 409: the resource's state does not allow it. */
export class ConflictError extends APIError {}

/** 409 `ai_session_terminated`: the session already has an outcome; stop retrying. */
export class AISessionTerminated extends ConflictError {}

/** 409 `voice_agent_in_use`: live sessions use the voice agent; archive it instead. */
export class VoiceAgentInUse extends ConflictError {}

/** 424 `no_voice_agent_configured`: nothing in the override hierarchy resolved to a voice agent. */
export class NoVoiceAgentConfigured extends APIError {}

export interface RateLimitedInit extends APIErrorInit {
  retryAfterS: number;
}

/** 429: rate limited. `retryAfterS` is the `Retry-After` header (the Python SDK's `RateLimitError.retry_after`). */
export class RateLimitedError extends APIError {
  readonly retryAfterS: number;

  constructor(init: RateLimitedInit) {
    super(init);
    this.retryAfterS = init.retryAfterS;
  }

  /** The Python SDK's name for `retryAfterS`. */
  get retryAfter(): number {
    return this.retryAfterS;
  }
}

/** 429 `max_concurrent_exceeded`: the voice agent's max_concurrent cap (retryAfterS defaults to 5). */
export class MaxConcurrentExceeded extends RateLimitedError {}

/** 5xx: the bridge (or the switch or Redis behind it) failed. `requestId` identifies the request. */
export class ServerError extends APIError {}

/** Aliases with the Python SDK's class names. */
export { PermissionDenied as PermissionError, RateLimitedError as RateLimitError };

export function detailCode(detail: unknown): string | null {
  if (detail && typeof detail === "object" && !Array.isArray(detail)) {
    const code = (detail as { code?: unknown }).code;
    if (typeof code === "string") return code;
  }
  return null;
}

function detailRequestId(detail: unknown): string | null {
  if (detail && typeof detail === "object" && !Array.isArray(detail)) {
    const id = (detail as { request_id?: unknown }).request_id;
    if (typeof id === "string") return id;
  }
  return null;
}

function describe(status: number, detail: unknown, text: string | null): string {
  const code = detailCode(detail);
  if (code) {
    const message = (detail as { message?: unknown }).message;
    return `${status} ${code}: ${typeof message === "string" ? message : ""}`.trimEnd();
  }
  if (detail !== undefined && detail !== null && detail !== "") {
    return `${status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`;
  }
  return `${status}: ${text ?? ""}`.trimEnd();
}

/** Seconds from a Retry-After header of whole seconds (as the Python SDK reads it), else null. */
export function parseRetryAfter(value: string | null): number | null {
  if (value === null) return null;
  const m = /^\s*([+-]?\d+)\s*$/.exec(value);
  return m ? Number(m[1]) : null;
}

/** The error for a non-2xx answer: the Python SDK's `_classify`, plus 400 and 5xx (see the top). */
export function classify(init: APIErrorInit & { retryAfterS?: number | null }): APIError {
  const { status } = init;
  const code = detailCode(init.detail);
  if (status === 400 || status === 422) return new ValidationError(init);
  if (status === 401) return new AuthenticationError(init);
  if (status === 403) {
    return code === "conference_membership_required" ? new ConferenceMembershipRequired(init) : new PermissionDenied(init);
  }
  if (status === 404) return new NotFoundError(init);
  if (status === 409) {
    if (code === "voice_agent_in_use") return new VoiceAgentInUse(init);
    if (code === "ai_session_terminated") return new AISessionTerminated(init);
    return new ConflictError(init);
  }
  if (status === 424) {
    return code === "no_voice_agent_configured" ? new NoVoiceAgentConfigured(init) : new APIError(init);
  }
  if (status === 429) {
    const fromBody = (init.detail as { retry_after_s?: unknown } | null)?.retry_after_s;
    const given = init.retryAfterS ?? (typeof fromBody === "number" ? fromBody : null);
    if (code === "max_concurrent_exceeded") return new MaxConcurrentExceeded({ ...init, retryAfterS: given || 5 });
    return new RateLimitedError({ ...init, retryAfterS: given || 60 });
  }
  if (status >= 500) return new ServerError(init);
  return new APIError(init);
}
