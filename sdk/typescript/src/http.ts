// The transport every resource shares: URL from the generated OPERATIONS, headers, 429 retry,
// decoding and error classification (the Python SDK's _BaseClient and Client._request).

import { classify, parseRetryAfter, RateLimitedError } from "./errors.js";
import { OPERATIONS, type OperationId, type Operations } from "./types.js";

export const DEFAULT_BASE_URL = "https://api.yotel.in";
export const DEFAULT_TIMEOUT_MS = 30_000;
export const DEFAULT_MAX_ATTEMPTS = 3;
export const VERSION = "0.1.0";
const USER_AGENT = `yotel-bridge-typescript/${VERSION}`;

export interface ClientOptions {
  /** A tenant API key (`yt_live_…`/`yt_test_…`) or a callback token (`yt_cb_…`). */
  apiKey: string;
  /** Default `https://api.yotel.in`; the bridge's base URL, e.g. `http://127.0.0.1:8080`. */
  baseUrl?: string;
  /** Per attempt, default 30 000 ms. */
  timeoutMs?: number;
  /**
   * Retry a 429 after its `Retry-After` (at least 1 s, at most 60 s), with the same Idempotency-Key.
   * Default false: the RateLimitedError is thrown at once. (The Python SDK retries by default.)
   */
  retryOn429?: boolean;
  /** Attempts in all when retrying 429s (the Python SDK's `max_retries`), default 3. */
  maxAttempts?: number;
  /** A fetch implementation (default: the global fetch of Node >= 18). */
  fetch?: typeof fetch;
  /** Extra headers on every request. */
  headers?: Record<string, string>;
}

/** Options every method takes. */
export interface RequestOptions {
  /** Send this callback token (`yt_cb_…`) instead of the client's key, for this request only. */
  callbackToken?: string;
  /** Override the Idempotency-Key (the SDK makes a UUID v4 for state-changing verbs). */
  idempotencyKey?: string;
  /** Override the client's retryOn429 for this request. */
  retryOn429?: boolean;
  signal?: AbortSignal;
  headers?: Record<string, string>;
}

export const REQUEST_OPTION_KEYS = ["callbackToken", "idempotencyKey", "retryOn429", "signal", "headers"] as const;

type Query = Record<string, string | number | boolean | null | undefined>;

export interface RawRequest {
  method: string;
  path: string;
  query?: Query;
  body?: unknown;
  headers?: Record<string, string>;
}

/** An answer: its status, headers and decoded body (JSON, text, or undefined when empty). */
export interface ApiResponse<T = unknown> {
  status: number;
  headers: Headers;
  data: T;
}

type Success<K extends OperationId> = Operations[K]["responses"] extends infer R
  ? R[Extract<keyof R, "200" | "201" | "202" | "204">]
  : never;

export interface OperationArgs<K extends OperationId> {
  path?: Operations[K]["pathParams"];
  query?: Operations[K]["query"];
  body?: Operations[K]["body"];
  headers?: Record<string, string>;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        reject(signal.reason);
      },
      { once: true },
    );
  });
}

export class Transport {
  readonly baseUrl: string;
  readonly timeoutMs: number;
  readonly retryOn429: boolean;
  readonly maxAttempts: number;
  private readonly apiKey: string;
  private readonly fetchImpl: typeof fetch;
  private readonly extraHeaders: Record<string, string>;

  constructor(options: ClientOptions) {
    if (!options || typeof options.apiKey !== "string" || !options.apiKey.startsWith("yt_")) {
      throw new TypeError("apiKey must be a yt_live_… or yt_test_… token");
    }
    this.apiKey = options.apiKey;
    this.baseUrl = (options.baseUrl ?? DEFAULT_BASE_URL).replace(/\/+$/, "");
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.retryOn429 = options.retryOn429 ?? false;
    this.maxAttempts = options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS;
    const f = options.fetch ?? globalThis.fetch;
    if (typeof f !== "function") throw new TypeError("no fetch: Node >= 18, or pass options.fetch");
    this.fetchImpl = f;
    this.extraHeaders = { ...(options.headers ?? {}) };
  }

  url(path: string, query?: Query): string {
    let url = `${this.baseUrl}${path}`;
    if (query) {
      const params = new URLSearchParams();
      for (const [k, v] of Object.entries(query)) {
        if (v !== undefined && v !== null) params.append(k, String(v));
      }
      const qs = params.toString();
      if (qs) url += `?${qs}`;
    }
    return url;
  }

  /** An operation's path with its parameters filled in (URL-encoded). */
  pathOf<K extends OperationId>(id: K, params?: Operations[K]["pathParams"]): string {
    const given = (params ?? {}) as Record<string, unknown>;
    return OPERATIONS[id].path.replace(/\{([^}]+)\}/g, (_m, name: string) => {
      const value = given[name];
      if (value === undefined || value === null || value === "") throw new TypeError(`${id}: missing path parameter ${name}`);
      return encodeURIComponent(String(value));
    });
  }

  /** An operation of the OpenAPI document by its operationId, typed by it. */
  async op<K extends OperationId>(id: K, args: OperationArgs<K> = {}, options: RequestOptions = {}): Promise<Success<K>> {
    const res = await this.opResponse(id, args, options);
    return res.data as Success<K>;
  }

  async opResponse<K extends OperationId>(
    id: K,
    args: OperationArgs<K> = {},
    options: RequestOptions = {},
  ): Promise<ApiResponse<Success<K>>> {
    const raw: RawRequest = { method: OPERATIONS[id].method, path: this.pathOf(id, args.path) };
    if (args.query) raw.query = args.query as Query;
    if (args.body !== undefined) raw.body = args.body;
    if (args.headers) raw.headers = args.headers;
    return (await this.send(raw, options)) as ApiResponse<Success<K>>;
  }

  private headersFor(req: RawRequest, options: RequestOptions): Record<string, string> {
    const headers: Record<string, string> = {
      "User-Agent": USER_AGENT,
      ...this.extraHeaders,
      Authorization: `Bearer ${options.callbackToken || this.apiKey}`,
      ...(req.headers ?? {}),
      ...(options.headers ?? {}),
    };
    if (req.body !== undefined) headers["Content-Type"] = "application/json";
    return headers;
  }

  /** One request, retried on 429 when asked; throws the classified error for a non-2xx. */
  async send(req: RawRequest, options: RequestOptions = {}): Promise<ApiResponse> {
    const retry = options.retryOn429 ?? this.retryOn429;
    const headers = this.headersFor(req, options);
    const body = req.body === undefined ? undefined : JSON.stringify(req.body);
    const url = this.url(req.path, req.query);
    for (let attempt = 1; ; attempt++) {
      try {
        const res = await this.fetchOnce(url, req.method, headers, body, options.signal);
        return await this.decode(res);
      } catch (err) {
        if (!(err instanceof RateLimitedError) || !retry || attempt >= this.maxAttempts) throw err;
        await sleep(Math.max(1, Math.min(err.retryAfterS, 60)) * 1000, options.signal);
      }
    }
  }

  /** The raw fetch Response of a GET (for audio), errors classified as for JSON. */
  async sendRaw(req: RawRequest, options: RequestOptions = {}): Promise<Response> {
    const res = await this.fetchOnce(this.url(req.path, req.query), req.method, this.headersFor(req, options), undefined, options.signal);
    if (res.status >= 200 && res.status < 300) return res;
    await this.decode(res);
    throw new Error("unreachable");
  }

  private async fetchOnce(
    url: string,
    method: string,
    headers: Record<string, string>,
    body: string | undefined,
    signal: AbortSignal | undefined,
  ): Promise<Response> {
    const controller = new AbortController();
    const timer = setTimeout(
      () => controller.abort(new DOMException(`${method} ${url}: no answer within ${this.timeoutMs} ms`, "TimeoutError")),
      this.timeoutMs,
    );
    const onAbort = () => controller.abort(signal?.reason);
    if (signal) {
      if (signal.aborted) onAbort();
      else signal.addEventListener("abort", onAbort, { once: true });
    }
    try {
      const init: RequestInit = { method, headers, signal: controller.signal };
      if (body !== undefined) init.body = body;
      const res = await this.fetchImpl(url, init);
      return res;
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    }
  }

  private async decode(res: Response): Promise<ApiResponse> {
    const text = await res.text();
    let parsed: unknown = undefined;
    let isJson = false;
    if (text !== "") {
      try {
        parsed = JSON.parse(text);
        isJson = true;
      } catch {
        parsed = text;
      }
    }
    if (res.status >= 200 && res.status < 300) {
      return { status: res.status, headers: res.headers, data: res.status === 204 ? undefined : parsed };
    }
    let detail: unknown = null;
    if (isJson) {
      detail = parsed && typeof parsed === "object" && !Array.isArray(parsed) ? (parsed as { detail?: unknown }).detail ?? null : parsed;
    }
    throw classify({
      status: res.status,
      detail,
      responseText: text,
      requestId: res.headers.get("x-request-id"),
      headers: res.headers,
      retryAfterS: res.status === 429 ? parseRetryAfter(res.headers.get("retry-after")) : null,
    });
  }
}
