// src/types.ts is generated from the server's OpenAPI document: regenerate it from a running
// sandbox's GET /openapi.json and fail when the committed file differs, so the SDK's types and the
// server cannot drift apart. The fix is `npm run gen-types -- <sandbox base URL>` (then rebuild:
// tsc fails where a method no longer fits the document).

import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { after, before, test } from "node:test";

import { generate } from "../scripts/gen-types.mjs";
import { CONTROL_EVENTS, OPERATIONS } from "../dist/index.js";
import { PACKAGE_DIR, Sandbox } from "./helpers/sandbox.mjs";

let sandbox;
let doc;

before(async () => {
  sandbox = await new Sandbox().start();
  const res = await fetch(`${sandbox.baseUrl}/openapi.json`);
  assert.equal(res.status, 200);
  doc = await res.json();
});
after(async () => {
  await sandbox?.stop();
});

test("src/types.ts is what scripts/gen-types.mjs makes of the sandbox's /openapi.json", async () => {
  const committed = await readFile(path.join(PACKAGE_DIR, "src", "types.ts"), "utf8");
  const fresh = generate(doc);
  if (fresh !== committed) {
    const a = committed.split("\n");
    const b = fresh.split("\n");
    let i = 0;
    while (i < a.length && a[i] === b[i]) i++;
    assert.fail(
      `src/types.ts is stale (first difference at line ${i + 1}):\n` +
        `  committed: ${a[i] ?? "<end>"}\n  server:    ${b[i] ?? "<end>"}\n` +
        `run: npm run gen-types -- ${sandbox.baseUrl} (with the sandbox running), then npm run build`,
    );
  }
});

test("the built client's operations and verbs are the document's", () => {
  const ops = {};
  for (const [p, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) {
      if (op && op.operationId) ops[op.operationId] = { method: method.toUpperCase(), path: p };
    }
  }
  assert.deepEqual({ ...OPERATIONS }, ops);
  const verbs = Object.keys(doc.components.schemas.ControlVerb.discriminator.mapping);
  assert.deepEqual([...CONTROL_EVENTS], verbs);
  assert.equal(verbs.length, 25);
  // The error envelope the classes are built on.
  assert.deepEqual(doc.components.schemas.Error.required, ["detail"]);
  assert.deepEqual(doc.components.schemas.ErrorDetail.required, ["code", "message"]);
});
