// The client and its resources. Method names and paths mirror the Python SDK (yotel 0.2.1):
// voice_agents, ai_sessions, recordings, campaigns, leads; calls and webhooks follow the bridge's
// own routes. Every request goes through an operation of the generated OPERATIONS table, typed by
// the generated Operations interface, so a route the server no longer has fails to compile.
//
// Naming: fields that go on the wire keep their wire names (`moh_url`, `destination_type`, as the
// contract's TypeScript examples write them); options that steer the SDK are camelCase
// (`callbackToken`, `idempotencyKey`).

import { randomUUID } from "node:crypto";
import { createWriteStream } from "node:fs";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ReadableStream as NodeReadableStream } from "node:stream/web";

import {
  REQUEST_OPTION_KEYS,
  Transport,
  type ApiResponse,
  type ClientOptions,
  type RawRequest,
  type RequestOptions,
} from "./http.js";
import { OPERATIONS } from "./types.js";
import type {
  BulkLeadsAnswer,
  CallCreate,
  CallCreated,
  CampaignCreate,
  CampaignUpdate,
  ControlAccepted,
  ControlVerb,
  ControlVerbByEvent,
  DefaultAgent,
  LeadCreate,
  Operations,
  RecordingInfo,
  TokenRevoked,
  VoiceAgent,
  VoiceAgentCreate,
  VoiceAgentUpdate,
  WebhookCreate,
  WebhookUpdate,
} from "./types.js";

/** A control verb's name. */
export type ControlEvent = keyof ControlVerbByEvent;

/** The fields of one verb's body, without `event`. */
export type VerbFields<E extends ControlEvent> = Omit<ControlVerbByEvent[E], "event">;

/** What a verb method takes: the verb's fields plus the request options. */
export type VerbOptions<E extends ControlEvent> = VerbFields<E> & RequestOptions;

/** A JSON object as the document types answers it describes only as "an object". */
export type JsonObject = { [key: string]: unknown };

/** `send_dtmf` -> `sendDtmf`: the method name of a verb. */
export type VerbMethodName<S extends string> = S extends `${infer H}_${infer T}` ? `${H}${Capitalize<VerbMethodName<T>>}` : S;

/**
 * One method per verb of the document's ControlVerb union. AISessions implements it, so a verb
 * the server adds (after `npm run gen-types`) fails to compile until it has its method.
 */
export type VerbMethods = {
  [E in ControlEvent as VerbMethodName<E>]: (callId: string, options: VerbOptions<E>) => Promise<ControlAccepted>;
};

/** Verbs that get no Idempotency-Key of their own (the Python SDK's _READ_ONLY_VERBS). */
export const READ_ONLY_VERBS: ReadonlySet<string> = new Set(["log", "get_call_state"]);

function splitOptions<T extends object>(options: T & RequestOptions): [Omit<T, keyof RequestOptions>, RequestOptions] {
  const fields: Record<string, unknown> = {};
  const req: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(options ?? {})) {
    if ((REQUEST_OPTION_KEYS as readonly string[]).includes(k)) req[k] = v;
    else if (v !== undefined) fields[k] = v;
  }
  return [fields as Omit<T, keyof RequestOptions>, req as RequestOptions];
}

function items<T>(answer: unknown): T[] {
  if (Array.isArray(answer)) return answer as T[];
  if (answer && typeof answer === "object" && Array.isArray((answer as { items?: unknown }).items)) {
    return (answer as { items: T[] }).items;
  }
  return [];
}

// ---------------------------------------------------------------- ai sessions

export interface AISessionListParams {
  voice_agent_id?: string;
  /** ISO-8601; keyset pagination on (started_at, id). */
  started_after?: string;
  /** Default 100, as the Python SDK sends. */
  limit?: number;
}

/** `client.aiSessions`: the sessions and the 25 control verbs (POST /api/v1/ai-sessions/{call_id}/control). */
export class AISessions implements VerbMethods {
  constructor(private readonly t: Transport) {}

  /** GET /api/v1/ai-sessions: the tenant's sessions. */
  async list(params: AISessionListParams & RequestOptions = {}): Promise<JsonObject[]> {
    const [q, options] = splitOptions(params);
    const answer = await this.t.op("get_ai_sessions", { query: { limit: 100, ...q } }, options);
    return items<JsonObject>(answer);
  }

  /** GET /api/v1/ai-sessions/{call_id}: one session (state, outcome, metadata.logs, ...). */
  async get(callId: string, options: RequestOptions = {}): Promise<JsonObject> {
    return (await this.t.op("get_ai_sessions_call_id", { path: { call_id: callId } }, options)) as JsonObject;
  }

  /** POST /api/v1/ai-sessions/{call_id}/revoke_token (a tenant key with ai_sessions:control_admin). Not in the Python SDK. */
  async revokeToken(callId: string, token: string, options: RequestOptions = {}): Promise<TokenRevoked> {
    return this.t.op("post_ai_sessions_call_id_revoke_token", { path: { call_id: callId }, body: { token } }, options);
  }

  /**
   * Any control body as is (forward compatibility): `event` picks the verb. callbackToken and
   * idempotencyKey are honoured; a UUID v4 key is made for every verb but log and get_call_state.
   */
  async control(
    callId: string,
    event: ControlVerb | ({ event: string } & JsonObject),
    options: RequestOptions = {},
  ): Promise<ControlAccepted> {
    return (await this.controlResponse(callId, event, options)).data;
  }

  /** control(), answering the status and headers too (e.g. `Idempotent-Replayed`). */
  async controlResponse(
    callId: string,
    event: ControlVerb | ({ event: string } & JsonObject),
    options: RequestOptions = {},
  ): Promise<ApiResponse<ControlAccepted>> {
    let key = options.idempotencyKey;
    if (key === undefined && !READ_ONLY_VERBS.has(String(event.event))) key = randomUUID();
    const headers: Record<string, string> = key ? { "Idempotency-Key": key } : {};
    return this.t.opResponse(
      "post_ai_sessions_call_id_control",
      { path: { call_id: callId }, body: event as ControlVerb, headers },
      options,
    );
  }

  private verb<E extends ControlEvent>(
    callId: string,
    event: E,
    options: (VerbFields<E> & RequestOptions) | RequestOptions | undefined,
    defaults: Partial<VerbFields<E>> = {},
  ): Promise<ControlAccepted> {
    const [fields, req] = splitOptions((options ?? {}) as VerbFields<E> & RequestOptions);
    return this.control(callId, { event, ...defaults, ...fields } as unknown as ControlVerb, req);
  }

  // Group 1: call-state primitives (13)

  /** Bridge the caller to an agent queue, an E.164 number or a SIP URI; the AI's leg drops. */
  transfer(callId: string, options: VerbOptions<"transfer">): Promise<ControlAccepted> {
    return this.verb(callId, "transfer", options);
  }

  /** End the call (outcome hangup). */
  hangup(callId: string, options?: VerbOptions<"hangup">): Promise<ControlAccepted> {
    return this.verb(callId, "hangup", options);
  }

  /** Append an entry to the session's metadata.logs[]; no state change, no webhook. */
  log(callId: string, options: VerbOptions<"log">): Promise<ControlAccepted> {
    return this.verb(callId, "log", options);
  }

  /** Mute the caller (default) or the AI's leg (`target: "agent"`). */
  mute(callId: string, options?: VerbOptions<"mute">): Promise<ControlAccepted> {
    return this.verb(callId, "mute", options, { target: "caller" });
  }

  unmute(callId: string, options?: VerbOptions<"unmute">): Promise<ControlAccepted> {
    return this.verb(callId, "unmute", options, { target: "caller" });
  }

  /** Put the caller on hold, with music from `moh_url` if given. */
  hold(callId: string, options?: VerbOptions<"hold">): Promise<ControlAccepted> {
    return this.verb(callId, "hold", options);
  }

  unhold(callId: string, options?: VerbOptions<"unhold">): Promise<ControlAccepted> {
    return this.verb(callId, "unhold", options);
  }

  sendDtmf(callId: string, options: VerbOptions<"send_dtmf">): Promise<ControlAccepted> {
    return this.verb(callId, "send_dtmf", options);
  }

  /** Play `audio_url`, or speak `tts_text` (v1.1: 422 tts_not_supported while the bridge runs with BRIDGE_TTS=off). result: `{playback_id}`. */
  playAudio(callId: string, options: VerbOptions<"play_audio">): Promise<ControlAccepted> {
    return this.verb(callId, "play_audio", options);
  }

  setDisposition(callId: string, options: VerbOptions<"set_disposition">): Promise<ControlAccepted> {
    return this.verb(callId, "set_disposition", options);
  }

  recordingPause(callId: string, options?: VerbOptions<"recording_pause">): Promise<ControlAccepted> {
    return this.verb(callId, "recording_pause", options);
  }

  recordingResume(callId: string, options?: VerbOptions<"recording_resume">): Promise<ControlAccepted> {
    return this.verb(callId, "recording_resume", options);
  }

  /** Read-only snapshot: `{state, duration_s, answered, current_participants, is_recording, is_muted, is_held, conference_id, disposition}`. */
  getCallState(callId: string, options?: VerbOptions<"get_call_state">): Promise<ControlAccepted> {
    return this.verb(callId, "get_call_state", options);
  }

  // Group 2: conferencing + supervisor (9)

  /** Promote the call to a conference. result: `{conference_id}`. */
  conferenceStart(callId: string, options?: VerbOptions<"conference_start">): Promise<ControlAccepted> {
    return this.verb(callId, "conference_start", options);
  }

  /** Dial a participant in. result: `{member_id, call_id}`. */
  conferenceAdd(callId: string, options: VerbOptions<"conference_add">): Promise<ControlAccepted> {
    return this.verb(callId, "conference_add", options);
  }

  conferenceRemove(callId: string, options: VerbOptions<"conference_remove">): Promise<ControlAccepted> {
    return this.verb(callId, "conference_remove", options);
  }

  conferenceLeave(callId: string, options?: VerbOptions<"conference_leave">): Promise<ControlAccepted> {
    return this.verb(callId, "conference_leave", options);
  }

  /** Escalate to a human supervisor (urgency default "low"). result: `{escalation_id}`. */
  requestSupervisor(callId: string, options: VerbOptions<"request_supervisor">): Promise<ControlAccepted> {
    return this.verb(callId, "request_supervisor", options, { urgency: "low" });
  }

  whisper(callId: string, options: VerbOptions<"whisper">): Promise<ControlAccepted> {
    return this.verb(callId, "whisper", options);
  }

  barge(callId: string, options: VerbOptions<"barge">): Promise<ControlAccepted> {
    return this.verb(callId, "barge", options);
  }

  /** Fork the target call's audio into the AI's WebSocket (mode default "listen"). */
  monitorStart(callId: string, options: VerbOptions<"monitor_start">): Promise<ControlAccepted> {
    return this.verb(callId, "monitor_start", options, { mode: "listen" });
  }

  monitorStop(callId: string, options: VerbOptions<"monitor_stop">): Promise<ControlAccepted> {
    return this.verb(callId, "monitor_stop", options);
  }

  // Group 3: lead / context (3)

  /** result: `{lead_id, field, value}`. */
  setLeadField(callId: string, options: VerbOptions<"set_lead_field">): Promise<ControlAccepted> {
    return this.verb(callId, "set_lead_field", options);
  }

  /** result: `{lead_id, status}`. */
  setLeadStatus(callId: string, options: VerbOptions<"set_lead_status">): Promise<ControlAccepted> {
    return this.verb(callId, "set_lead_status", options);
  }

  /** result: `{callback_id, scheduled_at}`. */
  scheduleCallback(callId: string, options: VerbOptions<"schedule_callback">): Promise<ControlAccepted> {
    return this.verb(callId, "schedule_callback", options);
  }
}

// ---------------------------------------------------------------- voice agents

/** `client.voiceAgents`: /api/v1/voice-agents. */
export class VoiceAgents {
  constructor(private readonly t: Transport) {}

  /** Create a voice agent (max_concurrent 10 unless given, as the Python SDK sends). */
  create(fields: VoiceAgentCreate, options: RequestOptions = {}): Promise<VoiceAgent> {
    return this.t.op("post_voice_agents", { body: { max_concurrent: 10, ...fields } }, options);
  }

  async list(params: { status?: Operations["get_voice_agents"]["query"]["status"] } & RequestOptions = {}): Promise<VoiceAgent[]> {
    const [q, options] = splitOptions(params);
    return items<VoiceAgent>(await this.t.op("get_voice_agents", { query: q }, options));
  }

  get(voiceAgentId: string, options: RequestOptions = {}): Promise<VoiceAgent> {
    return this.t.op("get_voice_agents_va_id", { path: { va_id: voiceAgentId } }, options);
  }

  /** PATCH: only the fields given change. */
  update(voiceAgentId: string, fields: VoiceAgentUpdate, options: RequestOptions = {}): Promise<VoiceAgent> {
    return this.t.op("patch_voice_agents_va_id", { path: { va_id: voiceAgentId }, body: fields }, options);
  }

  /** status archived; the row stays for the sessions that reference it. */
  archive(voiceAgentId: string, options: RequestOptions = {}): Promise<VoiceAgent> {
    return this.t.op("post_voice_agents_va_id_archive", { path: { va_id: voiceAgentId } }, options);
  }

  /** 409 VoiceAgentInUse while live sessions use it. */
  async delete(voiceAgentId: string, options: RequestOptions = {}): Promise<void> {
    await this.t.op("delete_voice_agents_va_id", { path: { va_id: voiceAgentId } }, options);
  }

  /** The tenant default (null clears it); needs voice_agents:admin. */
  setAsDefault(voiceAgentId: string | null, options: RequestOptions = {}): Promise<DefaultAgent> {
    return this.t.op("post_voice_agents_default", { body: { voice_agent_id: voiceAgentId } }, options);
  }

  async getDefault(options: RequestOptions = {}): Promise<string | null> {
    const answer = await this.t.op("get_voice_agents_default", {}, options);
    return answer?.voice_agent_id ?? null;
  }
}

// ---------------------------------------------------------------- campaigns and leads

/** `client.campaigns`: /api/v1/campaigns. */
export class Campaigns {
  constructor(private readonly t: Transport) {}

  async create(fields: CampaignCreate, options: RequestOptions = {}): Promise<JsonObject> {
    return (await this.t.op("post_campaigns", { body: fields }, options)) as JsonObject;
  }

  async list(options: RequestOptions = {}): Promise<JsonObject[]> {
    return items<JsonObject>(await this.t.op("get_campaigns", {}, options));
  }

  async get(campaignId: string, options: RequestOptions = {}): Promise<JsonObject> {
    return (await this.t.op("get_campaigns_campaign_id", { path: { campaign_id: campaignId } }, options)) as JsonObject;
  }

  /** PATCH: only the fields given; null clears description, caller_id, voice_agent_id. */
  async update(campaignId: string, fields: CampaignUpdate, options: RequestOptions = {}): Promise<JsonObject> {
    return (await this.t.op(
      "patch_campaigns_campaign_id",
      { path: { campaign_id: campaignId }, body: fields },
      options,
    )) as JsonObject;
  }

  /** Deletes its leads too. */
  async delete(campaignId: string, options: RequestOptions = {}): Promise<void> {
    await this.t.op("delete_campaigns_campaign_id", { path: { campaign_id: campaignId } }, options);
  }
}

/** `client.leads`: leads of a campaign. */
export class Leads {
  constructor(private readonly t: Transport) {}

  /** POST /api/v1/campaigns/{campaign_id}/leads. */
  async create(fields: LeadCreate & { campaign_id: string } & RequestOptions): Promise<JsonObject> {
    const [{ campaign_id, ...body }, options] = splitOptions(fields);
    return (await this.t.op(
      "post_campaigns_campaign_id_leads",
      { path: { campaign_id }, body: body as LeadCreate },
      options,
    )) as JsonObject;
  }

  /** POST /api/v1/campaigns/{campaign_id}/leads:bulk: 1 to 500 leads, per-row results. */
  bulk(fields: { campaign_id: string; leads: LeadCreate[] } & RequestOptions): Promise<BulkLeadsAnswer> {
    const [{ campaign_id, leads }, options] = splitOptions(fields);
    return this.t.op("post_campaigns_campaign_id_leads_bulk", { path: { campaign_id }, body: { leads } }, options);
  }

  /** GET /api/v1/leads/{lead_id}. Not in the Python SDK. */
  async get(leadId: string, options: RequestOptions = {}): Promise<JsonObject> {
    return (await this.t.op("get_leads_lead_id", { path: { lead_id: leadId } }, options)) as JsonObject;
  }
}

// ---------------------------------------------------------------- calls and recordings

/** `client.calls`: /api/v1/calls (not in the Python SDK). */
export class Calls {
  constructor(private readonly t: Transport) {}

  /** Place an outbound AI call. */
  create(fields: CallCreate, options: RequestOptions = {}): Promise<CallCreated> {
    return this.t.op("post_calls", { body: fields }, options);
  }

  async get(callId: string, options: RequestOptions = {}): Promise<JsonObject> {
    return (await this.t.op("get_calls_call_id", { path: { call_id: callId } }, options)) as JsonObject;
  }
}

/** `client.recordings`: /api/v1/calls/{call_id}/recording (the Python SDK's RecordingsResource). */
export class Recordings {
  constructor(private readonly t: Transport) {}

  /** `{url, expires_at, duration_s, stereo, format, ...}`: a signed, expiring URL. */
  getSignedUrl(callId: string, options: RequestOptions = {}): Promise<RecordingInfo> {
    return this.t.op("get_calls_call_id_recording", { path: { call_id: callId } }, options);
  }

  private audio(callId: string, options: RequestOptions): Promise<Response> {
    const id = "get_calls_call_id_recording_audio";
    const req: RawRequest = { method: OPERATIONS[id].method, path: this.t.pathOf(id, { call_id: callId }) };
    return this.t.sendRaw(req, options);
  }

  /** The WAV in memory (needs recordings:download). */
  async fetchBytes(callId: string, options: RequestOptions = {}): Promise<Uint8Array> {
    const res = await this.audio(callId, options);
    return new Uint8Array(await res.arrayBuffer());
  }

  /** Stream the WAV to `destPath`; returns destPath. */
  async download(callId: string, destPath: string, options: RequestOptions = {}): Promise<string> {
    const res = await this.audio(callId, options);
    if (!res.body) throw new TypeError("the recording answer has no body");
    await pipeline(Readable.fromWeb(res.body as unknown as NodeReadableStream<Uint8Array>), createWriteStream(destPath));
    return destPath;
  }
}

// ---------------------------------------------------------------- webhooks

export interface DeliveryQuery {
  limit?: number;
  state?: "delivered" | "retrying" | "dead";
  event_id?: string;
  delivery_id?: string;
}

/** `client.webhooks`: /api/v1/webhooks (needs webhooks:manage). */
export class Webhooks {
  constructor(private readonly t: Transport) {}

  /** Subscribe; the answer's `signing_secret` is shown only here. */
  async create(fields: WebhookCreate, options: RequestOptions = {}): Promise<JsonObject> {
    return (await this.t.op("post_webhooks", { body: fields }, options)) as JsonObject;
  }

  async list(options: RequestOptions = {}): Promise<JsonObject[]> {
    return items<JsonObject>(await this.t.op("get_webhooks", {}, options));
  }

  async get(subscriptionId: string, options: RequestOptions = {}): Promise<JsonObject> {
    return (await this.t.op("get_webhooks_sub_id", { path: { sub_id: subscriptionId } }, options)) as JsonObject;
  }

  async update(subscriptionId: string, fields: WebhookUpdate, options: RequestOptions = {}): Promise<JsonObject> {
    return (await this.t.op("patch_webhooks_sub_id", { path: { sub_id: subscriptionId }, body: fields }, options)) as JsonObject;
  }

  async delete(subscriptionId: string, options: RequestOptions = {}): Promise<void> {
    await this.t.op("delete_webhooks_sub_id", { path: { sub_id: subscriptionId } }, options);
  }

  /** A new secret (shown once); the old one keeps signing for the grace window. */
  async rotateSecret(subscriptionId: string, options: RequestOptions = {}): Promise<JsonObject> {
    return (await this.t.op("post_webhooks_sub_id_rotate_secret", { path: { sub_id: subscriptionId } }, options)) as JsonObject;
  }

  /** The delivery log, newest first. */
  async deliveries(subscriptionId: string, query: DeliveryQuery & RequestOptions = {}): Promise<JsonObject[]> {
    const [q, options] = splitOptions(query);
    return items<JsonObject>(
      await this.t.op("get_webhooks_sub_id_deliveries", { path: { sub_id: subscriptionId }, query: q }, options),
    );
  }

  /** Queue a dead delivery again (202). */
  async redeliver(subscriptionId: string, deliveryId: string, options: RequestOptions = {}): Promise<JsonObject> {
    return (await this.t.op(
      "post_webhooks_sub_id_deliveries_delivery_id_redeliver",
      { path: { sub_id: subscriptionId, delivery_id: deliveryId } },
      options,
    )) as JsonObject;
  }
}

// ---------------------------------------------------------------- the client

/**
 * The client: `new Client({ apiKey, baseUrl })`. One per process is plenty; fetch pools connections.
 */
export class Client {
  readonly aiSessions: AISessions;
  readonly voiceAgents: VoiceAgents;
  readonly campaigns: Campaigns;
  readonly leads: Leads;
  readonly calls: Calls;
  readonly recordings: Recordings;
  readonly webhooks: Webhooks;
  /** The shared transport (base URL, key, retry policy). */
  readonly transport: Transport;

  constructor(options: ClientOptions) {
    this.transport = new Transport(options);
    this.aiSessions = new AISessions(this.transport);
    this.voiceAgents = new VoiceAgents(this.transport);
    this.campaigns = new Campaigns(this.transport);
    this.leads = new Leads(this.transport);
    this.calls = new Calls(this.transport);
    this.recordings = new Recordings(this.transport);
    this.webhooks = new Webhooks(this.transport);
  }

  get baseUrl(): string {
    return this.transport.baseUrl;
  }

  /**
   * Any request (the escape hatch for routes without a method): the decoded body, or the
   * classified error. `request({method: "GET", path: "/api/v1/callbacks", query: {state: "pending"}})`.
   */
  async request<T = unknown>(req: RawRequest, options: RequestOptions = {}): Promise<T> {
    return (await this.transport.send(req, options)).data as T;
  }

  /** request(), answering the status and headers too. */
  requestResponse<T = unknown>(req: RawRequest, options: RequestOptions = {}): Promise<ApiResponse<T>> {
    return this.transport.send(req, options) as Promise<ApiResponse<T>>;
  }
}
