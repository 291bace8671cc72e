// The contract's own TypeScript examples, unchanged: taken from the seed page
// (../shared/seed/control-api.txt, or SEED_CONTROL_API), type-checked by tsc against this package's
// declarations (imported by its name, as a user would), compiled, and run against a live sandbox
// call. The README's ```ts blocks are type-checked the same way, and must contain the contract's
// snippets verbatim.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { mkdir, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { after, afterEach, before, describe, test } from "node:test";

import { PACKAGE_DIR, REPO_DIR, startAll } from "./helpers/sandbox.mjs";

const SEED = process.env.SEED_CONTROL_API ?? path.resolve(REPO_DIR, "..", "shared", "seed", "control-api.txt");
const README = path.join(PACKAGE_DIR, "README.md");
const WORK = path.join(PACKAGE_DIR, "test", ".work");
const TSC = path.join(PACKAGE_DIR, "node_modules", "typescript", "bin", "tsc");
const MOH_URL = "https://cdn.example.com/moh.wav";

/** The blocks after a line "TypeScript", each up to the next blank line. */
export function seedSnippets(text) {
  const lines = text.split(/\r?\n/);
  const out = [];
  for (let i = 0; i < lines.length; i++) {
    if (lines[i].trim() !== "TypeScript") continue;
    const block = [];
    for (let j = i + 1; j < lines.length && lines[j].trim() !== ""; j++) block.push(lines[j]);
    if (block.length) out.push(block.join("\n"));
  }
  return out;
}

function readmeBlocks(text) {
  return [...text.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]);
}

/** A snippet that is not a module of its own runs inside this, with what it refers to in scope. */
function wrap(snippet) {
  return [
    'import type { Client } from "yotel-bridge";',
    "",
    "export default async function run(client: Client, callId: string, callbackToken: string, mohUrl: string): Promise<void> {",
    "  void mohUrl;",
    snippet
      .split("\n")
      .map((l) => `  ${l}`)
      .join("\n"),
    "}",
    "",
  ].join("\n");
}

function tsc(files, outDir) {
  const args = [
    TSC, "--strict", "--target", "ES2022", "--module", "NodeNext", "--moduleResolution", "NodeNext",
    "--types", "node", "--skipLibCheck", "--rootDir", WORK, "--outDir", outDir, ...files,
  ];
  try {
    execFileSync(process.execPath, args, { cwd: PACKAGE_DIR, encoding: "utf8", stdio: "pipe" });
  } catch (err) {
    assert.fail(`tsc refused:\n${err.stdout}${err.stderr}`);
  }
}

const seedText = existsSync(SEED) ? readFileSync(SEED, "utf8") : null;
if (seedText === null && process.env.CI === "true") throw new Error(`no seed page at ${SEED} (CI=true needs it)`);
const snippets = seedText ? seedSnippets(seedText) : [];

let env;

before(async () => {
  await rm(WORK, { recursive: true, force: true });
  await mkdir(WORK, { recursive: true });
});
after(async () => {
  await env?.stop();
  await rm(WORK, { recursive: true, force: true });
});
afterEach(async () => {
  await env?.sandbox.endCalls();
});

describe("the contract's TypeScript snippets", { skip: seedText === null ? `no seed page at ${SEED}` : false }, () => {
  test("the seed page has them: hangup, hold and unhold", () => {
    assert.equal(snippets.length, 2, snippets.join("\n---\n"));
    assert.match(snippets[0], /client\.aiSessions\.hangup\(callId, \{/);
    assert.match(snippets[1], /client\.aiSessions\.hold\(callId, \{ moh_url: mohUrl, callbackToken \}\);/);
    assert.match(snippets[1], /client\.aiSessions\.unhold\(callId, \{ callbackToken \}\);/);
  });

  test("the README shows each of them verbatim", () => {
    const readme = readFileSync(README, "utf8");
    for (const s of snippets) assert.ok(readme.includes(s), `README.md lacks:\n${s}`);
  });

  test("they type-check against the package, compile and run against a live call", async () => {
    const files = [];
    for (const [i, s] of snippets.entries()) {
      const file = path.join(WORK, `seed-${i}.ts`);
      await writeFile(file, wrap(s));
      files.push(file);
    }
    const out = path.join(WORK, "seed-out");
    tsc(files, out);

    env = await startAll();
    const { sandbox, agent } = env;
    const client = sandbox.client;
    for (const [i, s] of snippets.entries()) {
      const { default: run } = await import(pathToFileURL(path.join(out, `seed-${i}.js`)).href);
      const call = await sandbox.startCall(agent);
      await run(client, call.callId, call.token, MOH_URL);
      const commands = await sandbox.commands(call.callId);
      if (s.includes(".hangup(")) {
        const session = await client.aiSessions.get(call.callId);
        assert.equal(session.outcome, "hangup");
        assert.ok(commands.includes(`uuid_kill ${call.callId} NORMAL_CLEARING`));
        assert.ok(
          session.metadata.logs.some((e) => e.event === "hangup" && e.metadata?.reason === "task_complete"),
          JSON.stringify(session.metadata.logs),
        );
      }
      if (s.includes(".hold(")) {
        assert.ok(commands.includes(`uuid_hold ${call.callId}`), commands.join("\n"));
        assert.ok(commands.includes(`uuid_displace ${call.callId} start http_cache://${MOH_URL} 0 lm`), commands.join("\n"));
        assert.ok(commands.includes(`uuid_hold off ${call.callId}`), commands.join("\n"));
        assert.equal((await sandbox.channel(call.callId)).held, false);
      }
    }
  });
});

describe("the README's examples", () => {
  test("every ```ts block type-checks against the package", async () => {
    const blocks = readmeBlocks(readFileSync(README, "utf8"));
    assert.ok(blocks.length >= 4, `${blocks.length} blocks`);
    const files = [];
    for (const [i, b] of blocks.entries()) {
      const file = path.join(WORK, `readme-${i}.ts`);
      await writeFile(file, /^\s*import /m.test(b) ? b : wrap(b));
      files.push(file);
    }
    tsc(files, path.join(WORK, "readme-out"));
  });
});
