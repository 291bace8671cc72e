#!/usr/bin/env node
// Generates src/types.ts from bridge's OpenAPI 3.1 document (GET /openapi.json).
//
//   node scripts/gen-types.mjs [SOURCE] [--out FILE] [--check]
//
// SOURCE is a base URL (http://127.0.0.1:8080), the document's URL, or a file; default
// http://127.0.0.1:8080. --check compares instead of writing and exits 1 when they differ.
//
// What it emits, deterministically (document order, no timestamps):
// - one exported type per components.schemas entry (an interface for an object with properties,
//   a type alias otherwise); a name that would shadow a JavaScript global gets "Body" appended
//   (Error -> ErrorBody);
// - `Operations`: per operationId its method, path, path/query/header parameters, request body and
//   responses by status, which the client's methods are typed with;
// - `OPERATIONS`: the same operations' method and path at run time (the client builds its URLs
//   from it), and `CONTROL_EVENTS`: the control verbs, from ControlVerb's discriminator.
//
// No third-party generator: the subset of JSON Schema the bridge emits (pydantic's) is small:
// $ref, type (also as a list), const, enum, anyOf/oneOf/allOf, properties/required,
// additionalProperties, items. Anything else becomes `unknown`.

import { readFile, writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import path from "node:path";

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const DEFAULT_OUT = path.join(HERE, "..", "src", "types.ts");
const GLOBALS = new Set([
  "Error", "Object", "Array", "String", "Number", "Boolean", "Symbol", "Function", "Date", "Map",
  "Set", "Promise", "Record", "Response", "Request", "Headers", "URL", "Blob", "Event",
]);
const IDENT = /^[A-Za-z_$][A-Za-z0-9_$]*$/;
const METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

export function typeName(schemaName) {
  const cleaned = schemaName.replace(/[^A-Za-z0-9_$]/g, "_");
  return GLOBALS.has(cleaned) ? `${cleaned}Body` : cleaned;
}

function key(name) {
  return IDENT.test(name) ? name : JSON.stringify(name);
}

function lit(value) {
  return JSON.stringify(value);
}

function comment(lines, indent) {
  const kept = lines.filter((l) => l !== undefined && l !== null && String(l).trim() !== "");
  if (kept.length === 0) return "";
  const text = kept.flatMap((l) => String(l).split("\n")).map((l) => l.replace(/\*\//g, "*\\/"));
  if (text.length === 1 && !text[0].startsWith("@")) return `${indent}/** ${text[0].trim()} */\n`;
  const body = text.map((l) => `${indent} * ${l}`.trimEnd());
  return `${indent}/**\n${body.join("\n")}\n${indent} */\n`;
}

function schemaDocs(schema) {
  if (!schema || typeof schema !== "object") return [];
  const lines = [];
  if (schema.description) lines.push(schema.description);
  const facts = [];
  if (schema.format) facts.push(`format: ${schema.format}`);
  if (schema.pattern) facts.push(`pattern: \`${schema.pattern}\``);
  for (const k of ["minLength", "maxLength", "minimum", "maximum", "minItems", "maxItems"]) {
    if (schema[k] !== undefined) facts.push(`${k}: ${schema[k]}`);
  }
  if (facts.length) lines.push(facts.join("; "));
  if (schema.default !== undefined) lines.push(`@default ${JSON.stringify(schema.default)}`);
  return lines;
}

function wrap(t) {
  return /[|&]/.test(t) && !/^\{[\s\S]*\}$/.test(t) ? `(${t})` : t;
}

function union(types) {
  const unique = [...new Set(types)];
  if (unique.includes("unknown")) return "unknown";
  return unique.length === 0 ? "never" : unique.join(" | ");
}

function refName(ref) {
  const m = /^#\/components\/schemas\/(.+)$/.exec(ref);
  if (!m) throw new Error(`unsupported $ref ${ref}`);
  return typeName(decodeURIComponent(m[1]));
}

/** The TypeScript type of a JSON Schema, written at `indent`. */
export function tsType(schema, indent = "") {
  if (schema === true || schema === undefined) return "unknown";
  if (schema === false) return "never";
  if (schema.$ref) return refName(schema.$ref);
  if (schema.const !== undefined) return lit(schema.const);
  if (Array.isArray(schema.enum)) return union(schema.enum.map(lit));
  if (Array.isArray(schema.oneOf)) return union(schema.oneOf.map((s) => wrap(tsType(s, indent))));
  if (Array.isArray(schema.anyOf)) return union(schema.anyOf.map((s) => wrap(tsType(s, indent))));
  if (Array.isArray(schema.allOf)) return schema.allOf.map((s) => wrap(tsType(s, indent))).join(" & ");
  if (Array.isArray(schema.type)) {
    return union(schema.type.map((t) => wrap(tsType({ ...schema, type: t }, indent))));
  }
  switch (schema.type) {
    case "string":
      return "string";
    case "integer":
    case "number":
      return "number";
    case "boolean":
      return "boolean";
    case "null":
      return "null";
    case "array":
      return `${wrap(tsType(schema.items, indent))}[]`;
    case "object":
      return objectType(schema, indent);
    default:
      if (schema.properties) return objectType(schema, indent);
      return "unknown";
  }
}

function objectType(schema, indent) {
  const props = schema.properties ?? {};
  const required = new Set(schema.required ?? []);
  const inner = `${indent}  `;
  const lines = [];
  for (const [name, prop] of Object.entries(props)) {
    lines.push(comment(schemaDocs(prop), inner) + `${inner}${key(name)}${required.has(name) ? "" : "?"}: ${tsType(prop, inner)};`);
  }
  const extra = schema.additionalProperties;
  const hasProps = Object.keys(props).length > 0;
  if (extra === true || (extra === undefined && !hasProps)) {
    lines.push(`${inner}[key: string]: unknown;`);
  } else if (extra && typeof extra === "object") {
    lines.push(`${inner}[key: string]: ${hasProps ? "unknown" : tsType(extra, inner)};`);
  }
  if (lines.length === 0) return "Record<string, never>";
  return `{\n${lines.join("\n")}\n${indent}}`;
}

function isInterface(schema) {
  return schema && schema.type === "object" && schema.properties && !schema.oneOf && !schema.anyOf && !schema.allOf;
}

function paramsType(params, indent) {
  if (params.length === 0) return "Record<string, never>";
  const inner = `${indent}  `;
  const lines = params.map(
    (p) =>
      comment([p.description, ...schemaDocs(p.schema)], inner) +
      `${inner}${key(p.name)}${p.required ? "" : "?"}: ${tsType(p.schema, inner)};`,
  );
  return `{\n${lines.join("\n")}\n${indent}}`;
}

function contentType(content, indent) {
  if (!content || Object.keys(content).length === 0) return "void";
  const json = content["application/json"];
  if (json) return tsType(json.schema, indent);
  return "unknown";
}

/** The whole src/types.ts for `doc`. */
export function generate(doc) {
  const out = [];
  const info = doc.info ?? {};
  out.push(
    "// Generated by scripts/gen-types.mjs from bridge's OpenAPI document (GET /openapi.json).",
    "// Do not edit by hand: run `npm run gen-types -- <bridge base URL or file>`. test/types-drift.test.mjs",
    "// regenerates it from a running sandbox and fails when the two differ.",
    `// OpenAPI ${doc.openapi}, ${JSON.stringify(info.title ?? "")} version ${JSON.stringify(info.version ?? "")}.`,
    "",
    "/* eslint-disable */",
    "",
  );

  const schemas = doc.components?.schemas ?? {};
  for (const [name, schema] of Object.entries(schemas)) {
    const docs = comment(schemaDocs(schema), "");
    const tname = typeName(name);
    if (isInterface(schema)) {
      out.push(`${docs}export interface ${tname} ${objectType(schema, "")}`, "");
    } else {
      out.push(`${docs}export type ${tname} = ${tsType(schema, "")};`, "");
    }
  }

  const ops = [];
  for (const [p, item] of Object.entries(doc.paths ?? {})) {
    const shared = item.parameters ?? [];
    for (const method of METHODS) {
      const op = item[method];
      if (!op) continue;
      if (!op.operationId) throw new Error(`${method.toUpperCase()} ${p} has no operationId`);
      const params = [...shared, ...(op.parameters ?? [])];
      ops.push({ id: op.operationId, method: method.toUpperCase(), path: p, op, params });
    }
  }

  out.push(
    "/** Every operation of the document, by operationId. */",
    "export interface Operations {",
  );
  for (const { id, method, path: p, op, params } of ops) {
    const i1 = "  ";
    const i2 = "    ";
    out.push(comment([`${method} ${p}`, op.summary, op.description], i1) + `${i1}${key(id)}: {`);
    out.push(`${i2}method: ${lit(method)};`);
    out.push(`${i2}path: ${lit(p)};`);
    for (const where of ["path", "query", "header"]) {
      const these = params.filter((x) => x.in === where);
      out.push(`${i2}${where === "path" ? "pathParams" : where === "query" ? "query" : "headers"}: ${paramsType(these, i2)};`);
    }
    const body = op.requestBody;
    if (body) {
      out.push(`${i2}body${body.required === false ? "?" : ""}: ${contentType(body.content, i2)};`);
    } else {
      out.push(`${i2}body?: undefined;`);
    }
    out.push(`${i2}responses: {`);
    for (const [status, resp] of Object.entries(op.responses ?? {})) {
      const media = Object.keys(resp.content ?? {});
      const note = media.length && !media.includes("application/json") ? [`${media.join(", ")}`] : [];
      out.push(comment([resp.description, ...note], `${i2}  `) + `${i2}  ${lit(status)}: ${contentType(resp.content, `${i2}  `)};`);
    }
    out.push(`${i2}};`, `${i1}};`);
  }
  out.push("}", "");
  out.push("export type OperationId = keyof Operations;", "");

  out.push("/** Method and path of every operation, at run time. */");
  out.push("export const OPERATIONS = {");
  for (const { id, method, path: p } of ops) {
    out.push(`  ${key(id)}: { method: ${lit(method)}, path: ${lit(p)} },`);
  }
  out.push("} as const satisfies { [K in OperationId]: { method: Operations[K][\"method\"]; path: Operations[K][\"path\"] } };", "");

  const verbs = schemas.ControlVerb?.discriminator?.mapping;
  if (verbs) {
    out.push(
      "/** The control verbs (ControlVerb's discriminator `event`), in the document's order. */",
      `export const CONTROL_EVENTS = [${Object.keys(verbs).map(lit).join(", ")}] as const;`,
      "",
      "/** The schema each control verb's body follows. */",
      "export interface ControlVerbByEvent {",
      ...Object.entries(verbs).map(([event, ref]) => `  ${key(event)}: ${refName(ref)};`),
      "}",
      "",
    );
  }
  return out.join("\n");
}

export async function load(source) {
  if (/^https?:\/\//.test(source)) {
    const url = /\/openapi\.json$/.test(source) ? source : `${source.replace(/\/+$/, "")}/openapi.json`;
    const res = await fetch(url);
    if (!res.ok) throw new Error(`GET ${url}: ${res.status}`);
    return res.json();
  }
  return JSON.parse(await readFile(source, "utf8"));
}

async function main(argv) {
  let source = "http://127.0.0.1:8080";
  let out = DEFAULT_OUT;
  let check = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--out") out = argv[++i];
    else if (a === "--check") check = true;
    else source = a;
  }
  const text = generate(await load(source));
  if (check) {
    const current = await readFile(out, "utf8").catch(() => "");
    if (current !== text) {
      console.error(`${out} differs from ${source}: run npm run gen-types -- ${source}`);
      return 1;
    }
    console.log(`${out} matches ${source}`);
    return 0;
  }
  await writeFile(out, text);
  console.log(`wrote ${out} from ${source}`);
  return 0;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err) => {
      console.error(err);
      process.exit(1);
    },
  );
}
