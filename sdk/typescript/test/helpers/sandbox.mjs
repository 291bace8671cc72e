// A `bridge sandbox` for one test file: spawned on a free port with a known admin key, its own
// data dir (embedded Redis inside) and recordings dir, stopped with SIGTERM at the end.
//
// BRIDGE_BIN overrides the bridge executable (default: the repository's .venv/bin/bridge).

import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { Client } from "../../dist/index.js";
import { AgentServer } from "./ws-agent.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const PACKAGE_DIR = path.resolve(HERE, "..", "..");
export const REPO_DIR = path.resolve(PACKAGE_DIR, "..", "..");
export const BRIDGE_BIN = process.env.BRIDGE_BIN ?? path.join(REPO_DIR, ".venv", "bin", "bridge");
export const PYTHON = path.join(REPO_DIR, ".venv", "bin", "python");
export const CALLER = "+14155550100";
export const DIALED = "+14155550199";

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function waitUntil(probe, { timeoutMs = 5000, intervalMs = 25, what = "condition" } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`${what} not met within ${timeoutMs} ms`);
    await sleep(intervalMs);
  }
}

export class Sandbox {
  constructor({ env = {}, tenant = "tsdk" } = {}) {
    this.extraEnv = env;
    this.tenant = tenant;
    this.adminKey = `yt_live_ts${randomBytes(18).toString("hex")}`;
    this.output = "";
    this.live = [];
  }

  async start() {
    if (!existsSync(BRIDGE_BIN)) throw new Error(`no bridge at ${BRIDGE_BIN} (make install, or set BRIDGE_BIN)`);
    this.dir = await mkdtemp(path.join(tmpdir(), "yotel-ts-sandbox-"));
    this.port = await freePort();
    this.baseUrl = `http://127.0.0.1:${this.port}`;
    const env = { ...process.env };
    delete env.REDIS_URL; // its own embedded Redis, in its own data dir
    Object.assign(env, {
      BRIDGE_DATA_DIR: path.join(this.dir, "data"),
      BRIDGE_RECORDINGS_DIR: path.join(this.dir, "recordings"),
      ...this.extraEnv,
    });
    this.proc = spawn(
      BRIDGE_BIN,
      ["sandbox", "--port", String(this.port), "--admin-key", this.adminKey, "--tenant", this.tenant],
      { env, stdio: ["ignore", "pipe", "pipe"] },
    );
    const keep = (chunk) => {
      this.output += chunk.toString();
      if (this.output.length > 200_000) this.output = this.output.slice(-100_000);
    };
    this.proc.stdout.on("data", keep);
    this.proc.stderr.on("data", keep);
    this.exited = new Promise((resolve) => this.proc.once("exit", (code, signal) => resolve({ code, signal })));
    // A test process that dies without after() must not leave its sandbox running.
    const orphan = () => this.proc.kill("SIGTERM");
    process.once("exit", orphan);
    this.exited.then(() => process.removeListener("exit", orphan));
    const up = this.waitForBanner();
    const died = this.exited.then(({ code, signal }) => {
      throw new Error(`bridge sandbox exited (${code ?? signal}) before it was up:\n${this.output.slice(-4000)}`);
    });
    await Promise.race([up, died]);
    this.client = this.sdk();
    return this;
  }

  async waitForBanner() {
    await waitUntil(() => this.output.includes("bridge sandbox is up"), { timeoutMs: 60_000, what: "sandbox banner" });
    await waitUntil(
      async () => {
        try {
          return (await fetch(`${this.baseUrl}/healthz`)).ok;
        } catch {
          return false;
        }
      },
      { timeoutMs: 30_000, what: "sandbox /healthz" },
    );
  }

  /** The SDK on this sandbox; the admin key unless `apiKey` is given. */
  sdk(options = {}) {
    return new Client({ apiKey: this.adminKey, baseUrl: this.baseUrl, ...options });
  }

  async stop() {
    if (this.proc && this.proc.exitCode === null && this.proc.signalCode === null) {
      this.proc.kill("SIGTERM");
      const timer = setTimeout(() => this.proc.kill("SIGKILL"), 20_000);
      await this.exited;
      clearTimeout(timer);
    }
    if (this.dir) await rm(this.dir, { recursive: true, force: true });
  }

  /** A raw request (no SDK) with the admin key unless `auth` is given. */
  async http(method, p, body, { auth, headers = {} } = {}) {
    const res = await fetch(`${this.baseUrl}${p}`, {
      method,
      headers: {
        Authorization: `Bearer ${auth ?? this.adminKey}`,
        ...(body === undefined ? {} : { "Content-Type": "application/json" }),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let data = text;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      // not JSON
    }
    return { status: res.status, headers: res.headers, data };
  }

  /** A voice agent pointing at `agent`, the tenant's default (once). */
  async ensureDefaultAgent(agent) {
    const existing = await this.client.voiceAgents.getDefault();
    if (existing) return this.client.voiceAgents.get(existing);
    const created = await this.client.voiceAgents.create({ name: "ts-agent", ws_url: agent.url, max_concurrent: 100 });
    await this.client.voiceAgents.setAsDefault(created.id);
    return created;
  }

  /** A simulated inbound call through POST /sandbox/calls; its call_id. */
  async placeCall(extra = {}) {
    const reply = await this.http("POST", "/sandbox/calls", { from: CALLER, to: DIALED, ...extra });
    if (reply.status !== 201) throw new Error(`POST /sandbox/calls: ${reply.status} ${JSON.stringify(reply.data)}`);
    return reply.data;
  }

  /** A live AI call: the default agent ensured, the call placed, the metadata frame received. */
  async startCall(agent, extra = {}) {
    await this.ensureDefaultAgent(agent);
    const placed = await this.placeCall(extra);
    this.live.push(placed.call_id);
    if (placed.state !== "in_progress") throw new Error(`the sandbox call did not go live: ${JSON.stringify(placed)}`);
    const metadata = await agent.metadata(placed.call_id);
    return { callId: placed.call_id, token: metadata.callback_token, metadata };
  }

  /**
   * One `api` command straight to the switch simulator over its ESL port (the banner's
   * "simulator" line), behind the bridge's back: how a test makes the switch refuse a command.
   */
  async eslApi(command) {
    const m = /simulator\s*:\s*esl:\/\/:([^@]*)@127\.0\.0\.1:(\d+)/.exec(this.output);
    if (!m) throw new Error("no simulator ESL address in the sandbox banner");
    const [, password, port] = m;
    const sock = connect(Number(port), "127.0.0.1");
    let buf = "";
    const replies = [];
    let wake = () => {};
    sock.setEncoding("utf8");
    sock.on("data", (d) => {
      buf += d;
      for (;;) {
        const end = buf.indexOf("\n\n");
        if (end < 0) break;
        const head = buf.slice(0, end);
        const len = Number(/Content-Length: (\d+)/.exec(head)?.[1] ?? 0);
        if (buf.length < end + 2 + len) break;
        replies.push({ head, body: buf.slice(end + 2, end + 2 + len) });
        buf = buf.slice(end + 2 + len);
      }
      wake();
    });
    const next = async (pred) => {
      for (;;) {
        const i = replies.findIndex(pred);
        if (i >= 0) return replies.splice(i, 1)[0];
        await new Promise((r) => (wake = r));
      }
    };
    try {
      await next((r) => r.head.includes("auth/request"));
      sock.write(`auth ${password}\n\n`);
      await next((r) => r.head.includes("command/reply"));
      sock.write(`api ${command}\n\n`);
      return (await next((r) => r.head.includes("api/response"))).body;
    } finally {
      sock.destroy();
    }
  }

  /** The simulated channel (GET /sandbox/calls/{id}). */
  async channel(callId) {
    const reply = await this.http("GET", `/sandbox/calls/${callId}`);
    if (reply.status !== 200) throw new Error(`GET /sandbox/calls/${callId}: ${reply.status} ${JSON.stringify(reply.data)}`);
    return reply.data;
  }

  async commands(callId) {
    return (await this.channel(callId)).commands;
  }

  async endCall(callId) {
    return this.http("DELETE", `/sandbox/calls/${callId}`);
  }

  /** The caller hangs up on every call startCall placed (their agents' slots are freed). */
  async endCalls() {
    const calls = this.live.splice(0);
    await Promise.all(calls.map((id) => this.endCall(id)));
  }
}

/** A started sandbox and agent server for a test file (node:test before/after). */
export async function startAll(options = {}) {
  const agent = await new AgentServer().start();
  const sandbox = new Sandbox(options);
  try {
    await sandbox.start();
  } catch (err) {
    await agent.stop();
    throw err;
  }
  return {
    agent,
    sandbox,
    async stop() {
      await sandbox.stop();
      await agent.stop();
    },
  };
}
