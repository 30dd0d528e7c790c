// The int8 HNSW index searched in WebAssembly under node, one thread: recall@10
// against the exact f32 scan and µs per search over a sweep of ef, with the
// index's exact scan and the exact f32 scans for comparison, at the sizes that
// index-builder/examples/ann_wasm_data.rs prepared. bench/ann_wasm.sh runs it.
//
// Usage: node bench/ann_wasm.mjs PKG_DIR DATA_DIR [EF_LIST] [ROUNDS]
//   PKG_DIR: wasm-bindgen --target nodejs output of bench/ann_wasm (vitrine-bench-ann-wasm)
//   DATA_DIR: ann_wasm_data's --out (vectors, queries, index parts, vectors.json, index.json)
// Prints markdown; writes DATA_DIR/wasm.json with every figure.
import { createRequire } from "node:module";
import { readFileSync, writeFileSync } from "node:fs";
import { resolve } from "node:path";
import { performance } from "node:perf_hooks";

const [pkgDir, dataDir, efArg, roundsArg] = process.argv.slice(2);
if (!dataDir) {
  console.error("usage: node bench/ann_wasm.mjs PKG_DIR DATA_DIR [EF_LIST] [ROUNDS]");
  process.exit(2);
}
const { AnnBench } = createRequire(import.meta.url)(resolve(pkgDir, "vitrine_bench_ann_wasm.js"));
const EFS = (efArg || "10,16,24,32,48,64,100,128,200,300,400,800").split(",").map(Number);
const ROUNDS = Number(roundsArg || 3);
const K = 10;
const WARM_UP = 100;
const TARGET = { recall: 0.98, us: 1000 };
// The diagnostic f32 re-rank (not shipped) at these beam widths, one round.
const RERANK_EFS = [32, 100, 400];

const data = (name) => readFileSync(resolve(dataDir, name));
const f32 = (name) => {
  const bytes = data(name);
  return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
};
const vectorsMeta = JSON.parse(data("vectors.json"));
const indexMeta = JSON.parse(data("index.json"));

function stats(times) {
  const s = [...times].sort((a, b) => a - b);
  const at = (p) => s[Math.round((s.length - 1) * p)];
  return { mean: s.reduce((a, b) => a + b, 0) / s.length, p50: at(0.5), p90: at(0.9), p99: at(0.99), n: s.length };
}

function recall(found, reference) {
  const ref = new Set(reference);
  let hits = 0;
  for (const x of found) if (ref.has(x)) hits++;
  return hits / reference.length;
}

const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;

// Times `call(i)` for every query, in µs; keeps each result (read after the clock stops).
function timeAll(bench, count, call) {
  const times = new Array(count);
  const results = new Array(count);
  for (let i = 0; i < count; i++) {
    const t0 = performance.now();
    call(i);
    times[i] = (performance.now() - t0) * 1000;
    results[i] = Array.from(bench.last());
  }
  return { times, results };
}

function runSet(bench, queries, name) {
  const count = bench.set_queries(queries);
  const f32ref = timeAll(bench, count, (i) => bench.exact_f32(i, K));
  const truth = f32ref.results;
  const f32simd = timeAll(bench, count, (i) => bench.exact_f32_simd(i, K));
  // Untimed: the exact f32 scores' gap between the 10th and the 11th item
  // (how near the exact ranking is to a tie at the cut).
  const gaps = [];
  for (let i = 0; i < count; i++) {
    bench.exact_f32_simd(i, K + 1);
    const s = bench.last_scores();
    gaps.push(s[K - 1] - s[K]);
  }
  const int8 = timeAll(bench, count, (i) => bench.exact_int8(i, K));
  for (let i = 0; i < Math.min(WARM_UP, count); i++) bench.search_default(i, K);
  const sweep = EFS.map((ef) => ({ ef, times: [], best: new Array(count).fill(Infinity), recallF32: null, recallInt8: null }));
  for (let round = 0; round < ROUNDS; round++) {
    for (const row of sweep) {
      const { times, results } = timeAll(bench, count, (i) => bench.search(i, K, row.ef, row.ef));
      row.times.push(...times);
      times.forEach((t, i) => (row.best[i] = Math.min(row.best[i], t)));
      const rF32 = mean(results.map((r, i) => recall(r, truth[i])));
      const rInt8 = mean(results.map((r, i) => recall(r, int8.results[i])));
      if (row.recallF32 !== null && (row.recallF32 !== rF32 || row.recallInt8 !== rInt8)) throw new Error(`ef ${row.ef}: results changed between rounds`);
      row.recallF32 = rF32;
      row.recallInt8 = rInt8;
    }
  }
  // Diagnostic, not the shipped path: the same candidates re-scored in f32.
  const f32Rerank = RERANK_EFS.map((ef) => {
    const { times, results } = timeAll(bench, count, (i) => bench.search_f32_rerank(i, K, ef));
    return { ef, recallF32: mean(results.map((r, i) => recall(r, truth[i]))), ...stats(times) };
  });
  // The engine's own call (SearchParams::default(): ef 100, rerank 100) must find what ef = rerank = 100 finds.
  const shipped = timeAll(bench, count, (i) => bench.search_default(i, K));
  const row100 = sweep.find((r) => r.ef === 100);
  const shippedRecall = mean(shipped.results.map((r, i) => recall(r, truth[i])));
  if (row100 && shippedRecall !== row100.recallF32) throw new Error("SearchParams::default() differs from ef = rerank = 100");
  return {
    name,
    queries: count,
    gap10_11: stats(gaps),
    exact_f32_reference: { ...stats(f32ref.times) },
    exact_f32_simd: { ...stats(f32simd.times), recallF32: mean(f32simd.results.map((r, i) => recall(r, truth[i]))) },
    exact_int8: { ...stats(int8.times), recallF32: mean(int8.results.map((r, i) => recall(r, truth[i]))) },
    shipped_default: { ...stats(shipped.times), recallF32: shippedRecall },
    f32_rerank: f32Rerank,
    sweep: sweep.map((r) => ({ ef: r.ef, recallF32: r.recallF32, recallInt8: r.recallInt8, ...stats(r.times), bestP50: stats(r.best).p50 })),
  };
}

const SIZES = [
  { key: "small", vectors: "small.f32", index: "small.shipped.bin", label: "the H&M bundle's index part as shipped" },
  { key: "large", vectors: "large.f32", index: "large.index.bin", label: "H&M views, built natively by AnnIndex::build" },
  {
    key: "large_refined",
    vectors: "large.f32",
    index: "large_refined.index.bin",
    label: "the same H&M views with the 4-bit refinement codes (BuildParams { refine: true }, `vitrine-index build --refine`)",
  },
];
const QUERY_SETS = [
  { key: "text", file: "queries_text.f32", label: "article texts (teacher text embeddings through the bundle's projection)" },
  { key: "view", file: "queries_view.f32", label: "held-out views (views left out of the 100k set, so in neither index; other views of their articles are in the 100k set)" },
];

const out = { node: process.version, efs: EFS, rounds: ROUNDS, sizes: {} };
for (const size of SIZES) {
  const bytes = data(size.index);
  const decodeMs = [];
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    AnnBench.decode_only(bytes);
    decodeMs.push(performance.now() - t0);
  }
  const bench = new AnnBench(bytes);
  bench.set_vectors(f32(size.vectors));
  const entry = { items: bench.items(), dim: bench.dim(), index_bytes: bytes.length, decode_ms: stats(decodeMs).p50, sets: {} };
  for (const set of QUERY_SETS) {
    process.stderr.write(`${size.key} × ${set.key} queries …\n`);
    entry.sets[set.key] = runSet(bench, f32(set.file), set.key);
  }
  bench.free();
  out.sizes[size.key] = entry;
}
writeFileSync(resolve(dataDir, "wasm.json"), JSON.stringify(out, null, 1));

// ---- markdown ----
const fmt = (x, d = 0) => x.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
const us = (x) => (x >= 100 ? fmt(x) : fmt(x, 1));
const lines = [];
const p = (s = "") => lines.push(s);

function verdict(set, key = "recallF32") {
  const ok = set.sweep.filter((r) => r[key] >= TARGET.recall);
  const first = ok[0];
  const fastest = ok.length ? ok.reduce((a, b) => (a.mean <= b.mean ? a : b)) : null;
  return { first, met: !!fastest && fastest.mean <= TARGET.us };
}
const cell = (r) => (r ? `ef ${r.ef}: ${r.recallF32.toFixed(4)} / ${r.recallInt8.toFixed(4)}, ${us(r.mean)} / ${us(r.p90)} µs` : "none up to ef " + EFS[EFS.length - 1]);

p(`node ${process.version}, one thread; ${ROUNDS} rounds of the ef sweep (each round: every ef in turn over all queries), k = ${K}, rerank = ef; ${WARM_UP} warm-up searches first. Recall is recall@10 against the exact f32 scan (ground truth) / against the index's own exact scan (AnnIndex::exact_search over the stored codes: int8, plus the refinement codes where the index has them; what the graph alone misses); µs per search in wasm, mean / p90 over ${ROUNDS} × the queries.`);
p();
p("| items | index part | native build, one thread (s) | decode in wasm (ms) | queries | exact scan of the stored codes: recall vs f32 (the ceiling of any ef) | HNSW ef 100, the engine's default | smallest ef with recall vs f32 ≥ 0.98 | smallest ef with recall vs the index's exact scan ≥ 0.98 | exact scan µs mean | exact f32 scan µs mean: reference loop / vectorised |");
p("|---|---|---|---|---|---|---|---|---|---|---|");
for (const size of SIZES) {
  const e = out.sizes[size.key];
  const n = indexMeta[size.key];
  for (const set of QUERY_SETS) {
    const s = e.sets[set.key];
    const row100 = s.sweep.find((r) => r.ef === 100);
    p(
      `| ${fmt(e.items)}${size.key === "large_refined" ? ", refined" : ""} | ${(e.index_bytes / 1e6).toFixed(2)} MB | ${n.build_seconds.toFixed(1)} | ${e.decode_ms.toFixed(1)} | ${set.key} | ${s.exact_int8.recallF32.toFixed(4)} | ${cell(row100)} | ${cell(verdict(s).first)} | ${cell(verdict(s, "recallInt8").first)} | ${us(s.exact_int8.mean)} | ${us(s.exact_f32_reference.mean)} / ${us(s.exact_f32_simd.mean)} |`,
    );
  }
}
p();
const large = out.sizes.large;
const describe = (s) => {
  const v = verdict(s);
  const best = s.sweep.reduce((a, b) => (a.recallF32 >= b.recallF32 ? a : b));
  const vi = verdict(s, "recallInt8");
  const f32part = v.first
    ? `recall@10 ≥ 0.98 from ef ${v.first.ef} (${v.first.recallF32.toFixed(4)}) at ${us(v.first.mean)} µs mean, ${us(v.first.p90)} µs p90`
    : `recall@10 against exact f32 never reaches 0.98: at most ${best.recallF32.toFixed(4)} (ef ${best.ef}, ${us(best.mean)} µs mean), under the index's exact scan's own ${s.exact_int8.recallF32.toFixed(4)}`;
  const int8part = vi.first
    ? `against the index's exact scan the graph reaches ${vi.first.recallInt8.toFixed(4)} at ef ${vi.first.ef}, ${us(vi.first.mean)} µs mean, ${us(vi.first.p90)} µs p90`
    : "against the index's exact scan the graph stays under 0.98 too";
  const rerank = s.f32_rerank.map((r) => `${r.recallF32.toFixed(4)} at ef ${r.ef} (${us(r.mean)} µs mean)`).join(", ");
  return `${f32part}; ${int8part}; the same candidates re-scored with f32 item vectors, a diagnostic and not what ships: ${rerank}`;
};
const refined = out.sizes.large_refined;
const vt = verdict(large.sets.text);
const vv = verdict(large.sets.view);
const rt = verdict(refined.sets.text);
const rv = verdict(refined.sets.view);
out.target = {
  text: vt.met,
  view: vv.met,
  text_vs_int8: verdict(large.sets.text, "recallInt8").met,
  view_vs_int8: verdict(large.sets.view, "recallInt8").met,
  refined_text: rt.met,
  refined_view: rv.met,
};
p(
  `**Target: recall@10 ≥ 0.98 (against exact f32) at ≤ 1 ms per search, ${fmt(large.items)} items, wasm — with the refinement codes, ${rt.met ? "met" : "not met"} on the text queries and ${rv.met ? "met" : "not met"} on the view queries; with int8 codes alone, ${vt.met ? "met" : "not met"} on the text queries and ${vv.met ? "met" : "not met"} on the view queries.**`,
);
p();
p(`- refined (index part ${(refined.index_bytes / 1e6).toFixed(2)} MB against ${(large.index_bytes / 1e6).toFixed(2)} MB), text queries: ${describe(refined.sets.text)}`);
p(`- refined, view queries: ${describe(refined.sets.view)}`);
p(`- int8 alone, text queries: ${describe(large.sets.text)}`);
p(`- int8 alone, view queries: ${describe(large.sets.view)}`);
p();
p("@@details@@");

for (const size of SIZES) {
  const e = out.sizes[size.key];
  const n = indexMeta[size.key];
  p(`## ${fmt(e.items)} items × ${e.dim}-d: ${size.label}`);
  p();
  let built = `native build (AnnIndex::build, BuildParams::default(): one thread, ef_construction 100) ${n.build_seconds.toFixed(1)} s; index part ${fmt(n.index_bytes)} B (${n.layers} layers, ${n.links_per_item.toFixed(1)} links per item); decoded in wasm (AnnIndex::from_bytes) in ${e.decode_ms.toFixed(1)} ms (median of 3)`;
  if (size.key === "small") built += `; the index rebuilt natively from the recomputed f32 vectors is ${n.equals_shipped ? "byte-identical to" : "NOT byte-identical to"} the shipped part (${fmt(n.shipped_bytes)} B), which is what wasm loads`;
  p(`- ${built}`);
  p();
  for (const set of QUERY_SETS) {
    const s = e.sets[set.key];
    const native = new Map(n[`native_${set.key}`].map((r) => [r.ef, r]));
    p(`### ${s.queries} queries: ${set.label}`);
    p();
    p(`- exact f32 score of the 10th item minus the 11th's (how near a tie the cut is; an int8 code moves a score by up to about half a quantisation step per component): median ${s.gap10_11.p50.toExponential(1)}, p90 ${s.gap10_11.p90.toExponential(1)}`);
    p();
    p("| search | recall@10 vs exact f32 | recall@10 vs the index's exact scan | wasm µs mean | p50 | p90 | p99 | p50 of each query's best round | native µs p50 (mean) | wasm / native p50 |");
    p("|---|---|---|---|---|---|---|---|---|---|");
    for (const r of s.sweep) {
      const nr = native.get(r.ef);
      p(
        `| HNSW ef ${r.ef}${r.ef === 100 ? " (the engine's default)" : ""} | ${r.recallF32.toFixed(4)} | ${r.recallInt8.toFixed(4)} | ${us(r.mean)} | ${us(r.p50)} | ${us(r.p90)} | ${us(r.p99)} | ${us(r.bestP50)} | ${nr ? `${us(nr.p50_us)} (${us(nr.mean_us)})` : "–"} | ${nr ? (r.p50 / nr.p50_us).toFixed(2) + "×" : "–"} |`,
      );
    }
    p(`| exact scan of the stored codes (AnnIndex::exact_search) | ${s.exact_int8.recallF32.toFixed(4)} | 1 | ${us(s.exact_int8.mean)} | ${us(s.exact_int8.p50)} | ${us(s.exact_int8.p90)} | ${us(s.exact_int8.p99)} | | | |`);
    p(`| exact f32 scan, reference loop (exact_search_f32): ground truth | 1 | | ${us(s.exact_f32_reference.mean)} | ${us(s.exact_f32_reference.p50)} | ${us(s.exact_f32_reference.p90)} | ${us(s.exact_f32_reference.p99)} | | | |`);
    p(`| exact f32 scan, vectorised dot (bench-local) | ${s.exact_f32_simd.recallF32.toFixed(4)} | | ${us(s.exact_f32_simd.mean)} | ${us(s.exact_f32_simd.p50)} | ${us(s.exact_f32_simd.p90)} | ${us(s.exact_f32_simd.p99)} | | | |`);
    for (const r of s.f32_rerank) {
      p(`| diagnostic, not shipped: HNSW ef ${r.ef}, its ${r.ef} candidates re-scored with the f32 item vectors | ${r.recallF32.toFixed(4)} | | ${us(r.mean)} | ${us(r.p50)} | ${us(r.p90)} | ${us(r.p99)} | | | |`);
    }
    p();
  }
}
writeFileSync(resolve(dataDir, "wasm.json"), JSON.stringify(out, null, 1));
console.log(lines.join("\n"));
