// `npm pack`: the tarball has the built ESM code and its type declarations, and the package has no
// runtime dependencies.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";

import { PACKAGE_DIR } from "./helpers/sandbox.mjs";

const pkg = JSON.parse(readFileSync(path.join(PACKAGE_DIR, "package.json"), "utf8"));

test("no runtime dependencies; ESM with types; Node >= 18", () => {
  assert.equal(pkg.dependencies, undefined);
  assert.equal(pkg.peerDependencies, undefined);
  assert.equal(pkg.optionalDependencies, undefined);
  assert.equal(pkg.type, "module");
  assert.deepEqual(pkg.exports["."], { types: "./dist/index.d.ts", import: "./dist/index.js" });
  assert.equal(pkg.engines.node, ">=18");
  for (const [name, version] of Object.entries(pkg.devDependencies)) {
    assert.match(version, /^\d+\.\d+\.\d+$/, `${name} is pinned`);
  }
});

test("npm pack lists dist/*.js with dist/*.d.ts, and no tests", () => {
  // --ignore-scripts: the build already ran (make test-typescript and npm test build first).
  const out = execFileSync("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], { cwd: PACKAGE_DIR, encoding: "utf8" });
  const [info] = JSON.parse(out);
  const files = info.files.map((f) => f.path).sort();
  for (const mod of ["index", "client", "errors", "http", "types", "webhook"]) {
    assert.ok(files.includes(`dist/${mod}.js`), `dist/${mod}.js in ${files}`);
    assert.ok(files.includes(`dist/${mod}.d.ts`), `dist/${mod}.d.ts in ${files}`);
    assert.ok(files.includes(`src/${mod}.ts`), `src/${mod}.ts in ${files}`);
  }
  assert.ok(files.includes("README.md") && files.includes("package.json"));
  assert.deepEqual(files.filter((f) => f.startsWith("test/") || f.startsWith("node_modules/") || f.startsWith("scripts/")), []);
  assert.equal(info.name, "yotel-bridge");
});

test("the declarations are what a user imports: the client, the errors, verifyWebhook, the generated types", () => {
  const dts = readFileSync(path.join(PACKAGE_DIR, "dist", "index.d.ts"), "utf8");
  for (const name of ["Client", "verifyWebhook", "RateLimitedError", "ServerError", "OPERATIONS", "CONTROL_EVENTS"]) {
    assert.match(dts, new RegExp(`\\b${name}\\b`), name);
  }
  assert.match(dts, /export type \* from "\.\/types\.js"/);
  const types = readFileSync(path.join(PACKAGE_DIR, "dist", "types.d.ts"), "utf8");
  assert.match(types, /export type ControlVerb = Transfer \| Hangup/);
});
