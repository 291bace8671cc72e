// verifyWebhook against the Python side: vectors the bridge signs (bridge/webhooks/signing.py) and
// the official SDK judges (yotel.webhook.verify), and the timestamp/whitespace rules of Python's
// int() and str.strip() it depends on, code point by code point.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, test } from "node:test";

import { InvalidSignature, MAX_AGE_SECONDS, signWebhook, verifyAndParseWebhook, verifyWebhook } from "../dist/index.js";
import { pyInt, pyStrip } from "../dist/webhook.js";
import { pythonCode, pythonMissing, runPython, VECTORS_SCRIPT } from "./helpers/python.mjs";
import { PACKAGE_DIR } from "./helpers/sandbox.mjs";

const VECTORS_FILE = path.join(PACKAGE_DIR, "test", "vectors", "webhook-vectors.json");
const committed = readFileSync(VECTORS_FILE, "utf8");
const { vectors } = JSON.parse(committed);

function tsVerdict(v) {
  try {
    verifyWebhook(Buffer.from(v.body_b64, "base64"), v.headers, v.secret, { now: v.now });
    return "ok";
  } catch (err) {
    if (err instanceof InvalidSignature) return err.reason;
    return `error:${err.name}`;
  }
}

// Where the Python SDK raises something other than InvalidSignature, this SDK rejects with
// InvalidSignature: the same deliveries are refused, with an error a handler already catches.
const SAME_REFUSAL = { "error:TypeError": "signature mismatch" };

describe("shared vectors (signed by bridge/webhooks/signing.py, judged by yotel.webhook.verify)", () => {
  test("there are vectors for every verdict", () => {
    const verdicts = new Set(vectors.map((v) => v.expected));
    for (const reason of [
      "ok",
      "missing signature or timestamp header",
      "signature header not sha256=",
      "timestamp header not int",
      "timestamp outside replay window",
      "signature mismatch",
    ]) {
      assert.ok(verdicts.has(reason), reason);
    }
  });

  for (const v of vectors) {
    test(`${v.name}: ${v.expected}`, () => {
      assert.equal(tsVerdict(v), SAME_REFUSAL[v.expected] ?? v.expected);
    });
  }

  test("the committed vectors are what the Python side says today", (t) => {
    const missing = pythonMissing();
    if (missing) return t.skip(missing);
    assert.equal(runPython(VECTORS_SCRIPT), committed, "regenerate: test/python/webhook_vectors.py > test/vectors/webhook-vectors.json");
  });
});

describe("Python's int() and str.strip(), which the verifier mirrors", () => {
  test("every code point: as a digit, before and after a digit, as strip() whitespace", (t) => {
    const missing = pythonMissing();
    if (missing) return t.skip(missing);
    const py = JSON.parse(
      pythonCode(`
import json
def ok(s):
    try:
        return int(s)
    except ValueError:
        return None
alone, before, after, strip = {}, [], [], []
for cp in range(0x110000):
    c = chr(cp)
    v = ok(c)
    if v is not None:
        alone[cp] = v
    if ok(c + "5") == 5:
        before.append(cp)
    if ok("5" + c) == 5:
        after.append(cp)
    if ("a" + c).strip() == "a":
        strip.append(cp)
print(json.dumps({"alone": alone, "before": before, "after": after, "strip": strip}))
`),
    );
    const alone = {};
    const before = [];
    const after = [];
    const strip = [];
    for (let cp = 0; cp < 0x110000; cp++) {
      const c = String.fromCodePoint(cp);
      const v = pyInt(c);
      if (v !== null) alone[cp] = Number(v);
      if (pyInt(c + "5") === 5n) before.push(cp);
      if (pyInt("5" + c) === 5n) after.push(cp);
      if (pyStrip("a" + c) === "a") strip.push(cp);
    }
    assert.deepEqual(alone, Object.fromEntries(Object.entries(py.alone).map(([k, v]) => [k, v])));
    assert.deepEqual(before, py.before);
    assert.deepEqual(after, py.after);
    assert.deepEqual(strip, py.strip);
  });

  test("signs, underscores, lengths", (t) => {
    const samples = ["0", "-0", "+7", "--7", "+-7", "1_0", "_10", "10_", "1__0", " 1 ", "1 0", "0x10", "00", "", " ", "+", "1" + "0".repeat(4299), "1" + "0".repeat(4300), "1_".repeat(3000) + "1"];
    const missing = pythonMissing();
    if (missing) return t.skip(missing);
    const py = JSON.parse(
      pythonCode(
        `
import json, sys
out = []
for s in json.load(sys.stdin):
    try:
        out.append(str(int(s)))
    except ValueError:
        out.append(None)
print(json.dumps(out))
`,
        JSON.stringify(samples),
      ),
    );
    assert.deepEqual(
      samples.map((s) => {
        const v = pyInt(s);
        return v === null ? null : v.toString();
      }),
      py,
    );
  });
});

describe("verifyWebhook's inputs", () => {
  const now = 1_777_646_228;
  const body = '{"event_id":"evt_1","event_type":"call.ended","timestamp":1,"data":{}}';
  const sig = signWebhook("whsec_a", now, body);

  test("a fetch Headers, Node's req.headers, a Map, pairs, a string or bytes body", () => {
    const forms = [
      new Headers({ "X-Yotel-Signature": sig, "X-Yotel-Timestamp": String(now) }),
      { "x-yotel-signature": sig, "x-yotel-timestamp": String(now) },
      new Map([["X-Yotel-Signature", sig], ["X-Yotel-Timestamp", now]]),
      [["x-yotel-signature", sig], ["x-yotel-timestamp", String(now)]],
    ];
    for (const h of forms) {
      verifyWebhook(body, h, "whsec_a", { now });
      verifyWebhook(Buffer.from(body), h, "whsec_a", { now });
      verifyWebhook(new TextEncoder().encode(body).buffer, h, "whsec_a", { now });
    }
  });

  test("maxAgeS and the default window", () => {
    const h = { "x-yotel-signature": signWebhook("s", now - 10, body), "x-yotel-timestamp": String(now - 10) };
    assert.equal(MAX_AGE_SECONDS, 300);
    verifyWebhook(body, h, "s", { now });
    assert.throws(() => verifyWebhook(body, h, "s", { now, maxAgeS: 5 }), { reason: "timestamp outside replay window" });
    assert.throws(() => verifyWebhook(body, h, "s"), { reason: "timestamp outside replay window" }); // now: the real clock
  });

  test("a list of secrets: any one may match", () => {
    const h = { "x-yotel-signature": sig, "x-yotel-timestamp": String(now) };
    verifyWebhook(body, h, ["whsec_new", "whsec_a"], { now });
    assert.throws(() => verifyWebhook(body, h, ["whsec_new"], { now }), InvalidSignature);
  });

  test("verifyAndParseWebhook answers the envelope", () => {
    const h = { "x-yotel-signature": sig, "x-yotel-timestamp": String(now) };
    assert.deepEqual(verifyAndParseWebhook(body, h, "whsec_a", { now }), JSON.parse(body));
  });
});
