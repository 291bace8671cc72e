// Running the repository's Python (the one with the official yotel SDK and the bridge) from a test.

import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";

import { PACKAGE_DIR, PYTHON, REPO_DIR } from "./sandbox.mjs";

export const ORACLE = path.join(PACKAGE_DIR, "test", "python", "sdk_oracle.py");
export const VECTORS_SCRIPT = path.join(PACKAGE_DIR, "test", "python", "webhook_vectors.py");

/** Why the Python side cannot run here, or null when it can. Under CI=true it must. */
export function pythonMissing() {
  if (existsSync(PYTHON)) return null;
  const why = `no ${PYTHON} (make install)`;
  if (process.env.CI === "true") throw new Error(`${why}: under CI=true the Python cross-checks must run`);
  return why;
}

/** Run a Python script with `input` on stdin; its stdout. */
export function runPython(script, { input = "", args = [] } = {}) {
  const res = spawnSync(PYTHON, [script, ...args], {
    cwd: REPO_DIR,
    input,
    encoding: "utf8",
    maxBuffer: 64 * 1024 * 1024,
  });
  if (res.status !== 0) throw new Error(`${script} exited ${res.status}:\n${res.stderr}`);
  return res.stdout;
}

export function pythonCode(code, input = "") {
  const res = spawnSync(PYTHON, ["-c", code], { cwd: REPO_DIR, input, encoding: "utf8", maxBuffer: 64 * 1024 * 1024 });
  if (res.status !== 0) throw new Error(`python -c exited ${res.status}:\n${res.stderr}`);
  return res.stdout;
}

/** The oracle (test/python/sdk_oracle.py) on one job. */
export function oracle(job) {
  return JSON.parse(runPython(ORACLE, { input: JSON.stringify(job) }));
}
