// Text encoder speed in WebAssembly under node, f32 against int8 (both int8
// kernels): the same queries as the native benchmark, one at a time, median ms
// per query after a warm-up, and the cosine of each int8 embedding to the f32
// one. Prints a markdown table; bench/text_encoder.sh runs it.
//
// Usage: node bench/text_encoder_wasm.mjs PKG_DIR F32_DIR INT8_DIR QUERIES_JSON
//   PKG_DIR: output of `wasm-bindgen --target nodejs` for vitrine-wasm
//   F32_DIR, INT8_DIR: text encoder folders (config.json, model.safetensors, tokenizer.json)
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { performance } from "node:perf_hooks";

const [pkgDir, f32Dir, int8Dir, queriesPath] = process.argv.slice(2);
if (!queriesPath) {
  console.error("usage: node bench/text_encoder_wasm.mjs PKG_DIR F32_DIR INT8_DIR QUERIES_JSON");
  process.exit(2);
}
const { QueryEncoder } = createRequire(import.meta.url)(resolve(pkgDir, "vitrine_wasm.js"));
const queries = JSON.parse(readFileSync(queriesPath, "utf8"));
const WARM_UP = 5;
// The int8 embeddings must stay this close to the f32 ones (DESIGN §8).
const MIN_COSINE = 0.995;

function files(dir) {
  return ["config.json", "model.safetensors", "tokenizer.json"].map((name) => readFileSync(resolve(dir, name)));
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

function cosine(a, b) {
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return dot / Math.sqrt(na * nb);
}

function run(name, dir, kernel) {
  const [config, model, tokenizer] = files(dir);
  const started = performance.now();
  const encoder = new QueryEncoder(config, model, tokenizer, kernel);
  const loadMs = performance.now() - started;
  for (const q of queries.slice(0, WARM_UP)) encoder.embed(q);
  const times = [];
  const embeddings = [];
  for (const q of queries) {
    const t0 = performance.now();
    embeddings.push(encoder.embed(q));
    times.push(performance.now() - t0);
  }
  const result = { name, int8: encoder.isInt8, loadMs, medianMs: median(times), meanMs: times.reduce((a, b) => a + b, 0) / times.length, embeddings };
  encoder.free();
  return result;
}

const runs = [
  run("f32", f32Dir, undefined),
  run("int8, per-channel kernel", int8Dir, "per-channel"),
  run("int8, candle Q8_0 (QMatMul)", int8Dir, "q8_0"),
];
if (runs[0].int8 || !runs[1].int8 || !runs[2].int8) throw new Error("F32_DIR must hold f32 weights and INT8_DIR int8 ones");

console.log(`${queries.length} queries, node ${process.version}, one at a time`);
console.log();
console.log("| weights | load ms | median ms/query | mean ms/query | cosine to f32: min / mean |");
console.log("|---|---|---|---|---|");
let failed = false;
for (const r of runs) {
  const cosines = r.embeddings.map((e, i) => cosine(e, runs[0].embeddings[i]));
  const min = Math.min(...cosines);
  const mean = cosines.reduce((a, b) => a + b, 0) / cosines.length;
  failed ||= min < MIN_COSINE;
  console.log(`| ${r.name} | ${r.loadMs.toFixed(0)} | ${r.medianMs.toFixed(2)} | ${r.meanMs.toFixed(2)} | ${min.toFixed(6)} / ${mean.toFixed(6)} |`);
}
if (failed) {
  console.error(`an int8 embedding is below cosine ${MIN_COSINE} to f32`);
  process.exit(1);
}
