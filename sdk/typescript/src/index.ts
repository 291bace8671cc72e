// yotel-bridge: a TypeScript client for bridge's call-control API, wire-compatible with the
// official yotel Python SDK 0.2.1. Types come from the server's OpenAPI document (src/types.ts).

export {
  Client,
  AISessions,
  VoiceAgents,
  Campaigns,
  Leads,
  Calls,
  Recordings,
  Webhooks,
  READ_ONLY_VERBS,
  type ControlEvent,
  type VerbFields,
  type VerbOptions,
  type VerbMethods,
  type VerbMethodName,
  type JsonObject,
  type AISessionListParams,
  type DeliveryQuery,
} from "./client.js";
export {
  Transport,
  DEFAULT_BASE_URL,
  DEFAULT_TIMEOUT_MS,
  DEFAULT_MAX_ATTEMPTS,
  VERSION,
  type ClientOptions,
  type RequestOptions,
  type RawRequest,
  type ApiResponse,
  type OperationArgs,
} from "./http.js";
export {
  YotelError,
  APIError,
  ValidationError,
  AuthenticationError,
  PermissionDenied,
  PermissionError,
  ConferenceMembershipRequired,
  NotFoundError,
  ConflictError,
  AISessionTerminated,
  VoiceAgentInUse,
  NoVoiceAgentConfigured,
  RateLimitedError,
  RateLimitError,
  MaxConcurrentExceeded,
  ServerError,
  classify,
  type APIErrorInit,
} from "./errors.js";
export {
  verifyWebhook,
  verifyAndParseWebhook,
  signWebhook,
  InvalidSignature,
  MAX_AGE_SECONDS,
  type WebhookHeaders,
  type WebhookEvent,
  type RawBody,
  type VerifyOptions,
} from "./webhook.js";
export { OPERATIONS, CONTROL_EVENTS } from "./types.js";
export type * from "./types.js";
