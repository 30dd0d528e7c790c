#!/usr/bin/env node
// vitrine against transformers.js in headless Chromium: per-query latency
// (embed + search, one query at a time, one thread each), load time, shipped
// bytes. bench/browser_compare.sh runs prepare.py first, then this.
//
//   node bench/browser_compare/run.mjs --bundle DIR --work target/browser-compare --model models/all-MiniLM-L6-v2
//        [--results bench/RESULTS.md] [--command "…"] [--load-before "1.0 1.0 1.0"] [--cold-loads 3] [--passes 3]
//
// What it does, in one run (ratios are taken within it; the machine is shared):
//  1. candle check: vitrine's own engine (www/pkg, QueryEncoder, f32 weights of
//     --model) in node against prepare.py's float64 reference, cosine >= 0.999;
//  2. cold loads: each engine in a freshly started Chromium, --cold-loads times,
//     interleaved, until ready and until the answer to a first query; the files each one fetched (the server's log) give the runtime
//     files transformers.js actually loads;
//  3. latency: the three engines in one page, each in its Web Worker; 5 warm-up
//     queries, then the 50 queries --passes times, per query every engine in turn
//     (order rotated); median and p90 over all samples, and over each query's
//     best pass (the machine's load filtered out as far as it can be);
//  4. checks: transformers.js's token counts equal prepare.py's, its fp32
//     embeddings match the reference (cosine >= 0.999), its q8 ones are reported;
//  5. bytes, raw and gzip -9; results to --results (its own section, between
//     markers) and <work>/results.json.

import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { gzipSync } from 'node:zlib';
import { chromium } from 'playwright-core';
import { serve } from './server.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '../..');
const K = 10;
const WARM_UP = 5;
const MIN_COSINE = 0.999;
const TARGET_LATENCY = 0.5;
const TARGET_BYTES = 0.25;
// DESIGN.md §8: load + first result at most 0.3× transformers.js q8's.
const TARGET_FIRST_RESULT = 0.3;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
// www/tests/harness.mjs's flags.
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const ENGINES = [
  { name: 'vitrine', label: 'vitrine (wasm engine, int8 text encoder + HNSW, Web Worker)' },
  { name: 'tjs-q8', dtype: 'q8', label: 'transformers.js q8 + f32 scan' },
  { name: 'tjs-fp32', dtype: 'fp32', label: 'transformers.js fp32 + f32 scan' },
];

function parseArgs(argv) {
  const o = { bundle: null, work: 'target/browser-compare', model: 'models/all-MiniLM-L6-v2', results: 'bench/RESULTS.md', command: 'bash bench/browser_compare.sh', loadBefore: null, coldLoads: 3, passes: 3 };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = () => argv[++i];
    if (flag === '--bundle') o.bundle = value();
    else if (flag === '--work') o.work = value();
    else if (flag === '--model') o.model = value();
    else if (flag === '--results') o.results = value();
    else if (flag === '--command') o.command = value();
    else if (flag === '--load-before') o.loadBefore = value();
    else if (flag === '--cold-loads') o.coldLoads = Number(value());
    else if (flag === '--passes') o.passes = Number(value());
    else throw new Error(`unknown flag ${flag}`);
  }
  if (!o.bundle) throw new Error('--bundle DIR is required');
  return o;
}

const log = (m) => console.log(`[run] ${m}`);
const loadavg = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
const sorted = (v) => [...v].sort((a, b) => a - b);
const median = (v) => {
  const s = sorted(v);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const p90 = (v) => sorted(v)[Math.ceil(0.9 * v.length) - 1]; // nearest rank
const mean = (v) => v.reduce((a, b) => a + b, 0) / v.length;
const cosine = (a, b) => {
  let d = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) {
    d += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return d / Math.sqrt(na * nb);
};
const f1 = (x) => x.toFixed(1);
const mb = (n) => (n / 1e6).toFixed(2);
function assert(ok, message) {
  if (!ok) throw new Error(`check failed: ${message}`);
}

const options = parseArgs(process.argv.slice(2));
const work = path.resolve(ROOT, options.work);
const bundleDir = path.resolve(ROOT, options.bundle);
const modelDir = path.resolve(ROOT, options.model);
const pkgDir = path.join(ROOT, 'www/pkg');
const queries = JSON.parse(readFileSync(path.join(work, 'queries.json'), 'utf8'));
const reference = JSON.parse(readFileSync(path.join(work, 'reference.json'), 'utf8'));
const items = JSON.parse(readFileSync(path.join(work, 'data/items.json'), 'utf8'));
for (const f of [path.join(pkgDir, 'vitrine_wasm_bg.wasm'), path.join(pkgDir, 'vitrine_wasm.js'), path.join(bundleDir, 'manifest.json')]) {
  if (!existsSync(f)) throw new Error(`${f} is missing`);
}
const texts = queries.map((q) => q.text);
const loadBeforeBrowser = loadavg();

// ---------------------------------------------------------- 1. candle check
log(`candle check: www/pkg QueryEncoder (f32 weights of ${options.model}) in node vs the float64 reference …`);
const pkg = await import(pathToFileURL(path.join(pkgDir, 'vitrine_wasm.js')).href);
pkg.initSync({ module: readFileSync(path.join(pkgDir, 'vitrine_wasm_bg.wasm')) });
const encoder = new pkg.QueryEncoder(...['config.json', 'model.safetensors', 'tokenizer.json'].map((f) => readFileSync(path.join(modelDir, f))));
assert(!encoder.isInt8 && encoder.dim === 384, `QueryEncoder is int8=${encoder.isInt8}, dim ${encoder.dim}`);
const candleCos = texts.map((t, i) => cosine(encoder.embed(t), reference.embeddings[i]));
encoder.free();
log(`candle check: cosine min ${Math.min(...candleCos).toFixed(6)} mean ${mean(candleCos).toFixed(6)} over ${texts.length} queries`);
assert(Math.min(...candleCos) >= MIN_COSINE, `candle f32 vs the reference: min cosine ${Math.min(...candleCos)}`);

// -------------------------------------------------------- the browser side
const { server, url, log: served } = await serve({
  '/bench/': path.join(HERE, 'page'),
  '/src/': path.join(ROOT, 'www/src'),
  '/pkg/': pkgDir,
  '/bundle/': bundleDir,
  '/tjs/': path.join(HERE, 'node_modules/@huggingface/transformers/dist'),
  '/ort/': path.join(HERE, 'node_modules/onnxruntime-web/dist'),
  '/models/': path.join(work, 'models'),
  '/data/': path.join(work, 'data'),
});
const launch = () => chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });

async function openPage(browser) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console error: ${m.text()}`);
  });
  await page.goto(`${url}bench/index.html`);
  await page.waitForFunction(() => window.benchReady === true);
  return { context, page, problems };
}

// `first`: a query asked once the engine is ready (cold loads), or null.
const load = (page, engine, first = null) =>
  engine.dtype
    ? page.evaluate(([n, d, k, f]) => window.bench.loadTjs(n, d, k, f), [engine.name, engine.dtype, K, first])
    : page.evaluate(([n, k, f]) => window.bench.loadVitrine(n, '/bundle/', k, f), [engine.name, K, first]);

// ---------------------------------------------------------- 2. cold loads
const cold = Object.fromEntries(ENGINES.map((e) => [e.name, []]));
const fetched = {};
for (let round = 0; round < options.coldLoads; round++) {
  for (const engine of ENGINES) {
    // A fresh browser each time: no compiled wasm or HTTP cache carried over.
    const coldBrowser = await launch();
    const { page, problems } = await openPage(coldBrowser);
    const before = served.length;
    const info = await load(page, engine, texts[round % texts.length]);
    await coldBrowser.close();
    const files = served.slice(before).filter((r) => !r.path.startsWith('/bench/'));
    const missing = files.filter((r) => r.status !== 200).map((r) => r.path);
    assert(missing.length === 0, `${engine.name} asked for files that are not there: ${missing.join(', ')}`);
    assert(problems.length === 0, `${engine.name}: ${problems.join('; ')}`);
    if (round === 0) fetched[engine.name] = files;
    cold[engine.name].push(info);
    const phases = info.phases ? ` (in the worker: ${Object.entries(info.phases).map(([k, ms]) => `${k} ${f1(ms)}`).join(', ')})` : '';
    log(`cold load ${round + 1}/${options.coldLoads} ${engine.name}: ready in ${f1(info.page_ms)} ms${phases}, first result at ${f1(info.first_result_ms)} ms (${files.length} files, ${mb(files.reduce((s, r) => s + r.bytes, 0))} MB)`);
  }
}

// ------------------------------------------------------------- 3. latency
log(`latency: the three engines in one page, ${WARM_UP} warm-up queries, then ${texts.length} queries × ${options.passes} passes, each engine in turn …`);
const browser = await launch();
const chromiumVersion = browser.version();
const { page, problems } = await openPage(browser);
const warmLoad = {};
for (const engine of ENGINES) warmLoad[engine.name] = await load(page, engine);
const userAgent = await page.evaluate(() => window.bench.userAgent());
const timings = await page.evaluate(([names, qs, warm, passes]) => window.bench.run(names, qs, warm, passes), [ENGINES.map((e) => e.name), texts, texts.slice(0, WARM_UP), options.passes]);

// -------------------------------------------------------------- 4. checks
const check = {};
for (const engine of ENGINES.filter((e) => e.dtype)) {
  const out = await page.evaluate(([n, t]) => window.bench.embed(n, t), [engine.name, texts]);
  const tokens = out.map((o) => o.tokens);
  const wrong = queries.filter((q, i) => q.tokens !== tokens[i]).length;
  assert(wrong === 0, `${engine.name}: ${wrong} queries tokenised to another length than prepare.py's (padding or truncation?)`);
  const cos = out.map((o, i) => cosine(o.embedding, reference.embeddings[i]));
  check[engine.name] = { min: Math.min(...cos), mean: mean(cos) };
  log(`check: ${engine.name} in Chromium vs the float64 reference, cosine min ${check[engine.name].min.toFixed(6)} mean ${check[engine.name].mean.toFixed(6)}; token counts equal prepare.py's`);
}
assert(check['tjs-fp32'].min >= MIN_COSINE, `transformers.js fp32 vs the reference: min cosine ${check['tjs-fp32'].min}`);
assert(problems.length === 0, problems.join('; '));
await browser.close();
await new Promise((r) => server.close(r));
const loadAfter = loadavg();

const stats = {};
for (const engine of ENGINES) {
  const t = timings[engine.name];
  assert(t.length === texts.length * options.passes, `${engine.name}: ${t.length} timings`);
  const ids = t.map((r) => r.ids ?? r.indices.map((i) => items.ids[i]));
  const groups = t.map((r) => r.groups ?? r.indices.map((i) => items.groups[i]));
  assert(ids.every((l) => l.length === K && l.every(Boolean)), `${engine.name}: a result list is not ${K} products`);
  const first = t.map((r, i) => ({ r, g: groups[i] })).filter(({ r }) => r.pass === 0);
  const rt = t.map((r) => r.round_trip_ms);
  const wk = t.map((r) => r.ms);
  const best = texts.map((_, i) => Math.min(...t.filter((r) => r.query === i).map((r) => r.round_trip_ms)));
  const passMedians = [...Array(options.passes).keys()].map((p) => median(t.filter((r) => r.pass === p).map((r) => r.round_trip_ms)));
  stats[engine.name] = {
    round_trip: { median: median(rt), p90: p90(rt), mean: mean(rt), min: Math.min(...rt), max: Math.max(...rt) },
    best_of_passes: { median: median(best), p90: p90(best) },
    pass_medians: passMedians,
    worker: { median: median(wk), p90: p90(wk) },
    embed_median: t[0].embed_ms === undefined ? null : median(t.map((r) => r.embed_ms)),
    scan_median: t[0].scan_ms === undefined ? null : median(t.map((r) => r.scan_ms)),
    source_in_top10: first.filter(({ r, g }) => g.includes(queries[r.query].group)).length,
    cold_load_ms: cold[engine.name].map((c) => c.page_ms),
    cold_load_median_ms: median(cold[engine.name].map((c) => c.page_ms)),
    cold_first_result_ms: cold[engine.name].map((c) => c.first_result_ms),
    cold_first_result_median_ms: median(cold[engine.name].map((c) => c.first_result_ms)),
    cold_info: cold[engine.name][0],
    warm_page_load: warmLoad[engine.name],
  };
}
// transformers.js fp32 over the exact f32 vectors should find the item its query was cut from.
assert(stats['tjs-fp32'].source_in_top10 >= texts.length / 2, `transformers.js fp32 finds the source product for only ${stats['tjs-fp32'].source_in_top10}/${texts.length} queries: vectors and ids out of step?`);

// --------------------------------------------------------------- 5. bytes
function sizes(file) {
  const data = readFileSync(file);
  return { raw: data.length, gzip: gzipSync(data, { level: 9 }).length };
}
function group(files) {
  const list = files.map((f) => ({ name: path.relative(ROOT, f).startsWith('..') ? f : path.relative(ROOT, f), ...sizes(f) }));
  return { files: list, raw: list.reduce((s, f) => s + f.raw, 0), gzip: list.reduce((s, f) => s + f.gzip, 0) };
}
const unique = (records) => [...new Set(records.map((r) => r.file))];
const under = (records, prefix) => unique(records.filter((r) => r.path.startsWith(prefix)));
log('bytes: gzip -9 of every shipped file …');
const bundleFiles = readdirSync(bundleDir).map((f) => path.join(bundleDir, f)).filter((f) => statSync(f).isFile()).sort();
const pkgFiles = readdirSync(pkgDir).filter((f) => f.endsWith('.wasm') || f.endsWith('.js')).map((f) => path.join(pkgDir, f)).sort();
const bytes = {
  vitrine_bundle: group(bundleFiles),
  vitrine_pkg: group(pkgFiles),
  // The element's module is fetched with the page, its worker and CSS when the element starts.
  vitrine_widget: group(under(served.filter((r) => r.status === 200), '/src/')),
  tjs_runtime: group([...under(fetched['tjs-q8'], '/tjs/'), ...under(fetched['tjs-q8'], '/ort/')]),
  tjs_q8_model: group(under(fetched['tjs-q8'], '/models/')),
  tjs_fp32_model: group(under(fetched['tjs-fp32'], '/models/')),
  tjs_vectors: group(under(fetched['tjs-q8'], '/data/')),
};
const fetchedBundle = under(fetched.vitrine, '/bundle/').length;
assert(fetchedBundle === bundleFiles.length, `vitrine fetched ${fetchedBundle} of the bundle's ${bundleFiles.length} files`);
const sum = (...gs) => ({ raw: gs.reduce((s, g) => s + g.raw, 0), gzip: gs.reduce((s, g) => s + g.gzip, 0) });
const totals = {
  vitrine: sum(bytes.vitrine_bundle, bytes.vitrine_pkg),
  vitrine_with_widget: sum(bytes.vitrine_bundle, bytes.vitrine_pkg, bytes.vitrine_widget),
  tjs_q8: sum(bytes.tjs_runtime, bytes.tjs_q8_model, bytes.tjs_vectors),
  tjs_fp32: sum(bytes.tjs_runtime, bytes.tjs_fp32_model, bytes.tjs_vectors),
};

const ortDist = path.join(HERE, 'node_modules/onnxruntime-web/dist');
const plain = group([path.join(ortDist, 'ort-wasm-simd-threaded.wasm'), path.join(ortDist, 'ort-wasm-simd-threaded.mjs')]);
const plainRuntime = group(bytes.tjs_runtime.files.filter((f) => !f.name.includes('ort-wasm')).map((f) => path.resolve(ROOT, f.name)));
const plainTotal = sum(plainRuntime, plain, bytes.tjs_q8_model, bytes.tjs_vectors);

// ------------------------------------------------------------- the report
const v = stats.vitrine, q8 = stats['tjs-q8'], fp32 = stats['tjs-fp32'];
const ratio = {
  q8: v.round_trip.median / q8.round_trip.median,
  fp32: v.round_trip.median / fp32.round_trip.median,
  q8_p90: v.round_trip.p90 / q8.round_trip.p90,
  fp32_p90: v.round_trip.p90 / fp32.round_trip.p90,
  q8_best: v.best_of_passes.median / q8.best_of_passes.median,
  fp32_best: v.best_of_passes.median / fp32.best_of_passes.median,
  q8_first_result: v.cold_first_result_median_ms / q8.cold_first_result_median_ms,
};
const byteRatio = { raw: totals.vitrine.raw / totals.tjs_q8.raw, gzip: totals.vitrine.gzip / totals.tjs_q8.gzip };
const latencyMet = ratio.q8 <= TARGET_LATENCY;
const latencyMetBest = ratio.q8_best <= TARGET_LATENCY;
const bytesMet = byteRatio.raw <= TARGET_BYTES && byteRatio.gzip <= TARGET_BYTES;
const firstResultMet = ratio.q8_first_result <= TARGET_FIRST_RESULT;
const sh = (cmd, args) => execFileSync(cmd, args, { cwd: ROOT, encoding: 'utf8' }).trim();
const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
const commit = sh('git', ['rev-parse', '--short', 'HEAD']);
// What the figures depend on: this benchmark, the widget, the engine's sources (www/pkg is built from them).
const dirty = execFileSync('git', ['status', '--porcelain', '--', 'bench/browser_compare', 'bench/browser_compare.sh', 'www/src', 'wasm', 'core/src'], { cwd: ROOT, encoding: 'utf8' })
  .split('\n')
  .filter(Boolean)
  .map((l) => l.slice(3));
const pkgStat = statSync(path.join(pkgDir, 'vitrine_wasm_bg.wasm'));
const manifestSha = sh('sha256sum', [path.join(bundleDir, 'manifest.json')]).split(' ')[0].slice(0, 16);
const loadBefore = options.loadBefore ?? loadBeforeBrowser;
// The load after the run includes the browser's own work (one busy thread
// and the page): only the loads before it tell whether another job shared the machine.
const maxLoad = Math.max(...[loadBefore, loadBeforeBrowser].map((l) => Number(l.split(' ')[0])));
const busy = maxLoad >= os.cpus().length * 0.5;
const tok = queries.map((q) => q.tokens);
const buildReport = path.join(bundleDir, '..', 'build-report.json');
const buildNote = (() => {
  if (!existsSync(buildReport)) return '';
  const report = JSON.parse(readFileSync(buildReport, 'utf8'));
  const d = report.distill ?? {};
  const parts = [];
  if (d.image_weight !== undefined) parts.push(`\`image_weight\` ${d.image_weight}`);
  if (d.val_title_r10_compact !== undefined) parts.push(`val title→product R@10 ${d.val_title_r10_compact.toFixed(1)}%`);
  const s = report.student;
  if (s) {
    parts.push(
      `text encoder: a student of ${s.teacher_layers.length} layers (the teacher's ${s.teacher_layers.join(', ')}) and ${s.vocab_size.toLocaleString('en-US')} of ${s.teacher_vocab_size.toLocaleString('en-US')} tokens, ` +
        `its compact queries' cosine to the teacher's over ${s.val_titles} val titles mean ${s.val_cosine_mean.toFixed(4)}, min ${s.val_cosine_min.toFixed(4)}; ` +
        `val title→product R@10 with its queries ${s.val_title_r10_student.toFixed(1)}% against ${s.val_title_r10_teacher.toFixed(1)}% with the teacher's`,
    );
  }
  return parts.length ? ` (this bundle's build-report.json: ${parts.join(', ')})` : '';
})();
const teFile = path.join(ROOT, 'target/bench-text-encoder/queries.json');
const textEncoderQueries = existsSync(teFile)
  ? `; ${(() => {
      const te = JSON.parse(readFileSync(teFile, 'utf8'));
      return texts.filter((t, i) => te[i] === t).length;
    })()} of these ${texts.length} equal bench/text_encoder.sh's \`--queries-out\` file (\`target/bench-text-encoder/queries.json\`) query for query`
  : '';
const row = (label, s) =>
  `| ${label} | ${f1(s.round_trip.median)} | ${f1(s.round_trip.p90)} | ${f1(s.round_trip.mean)} | ${f1(s.best_of_passes.median)} | ${f1(s.best_of_passes.p90)} | ${s.pass_medians.map(f1).join(', ')} | ${f1(s.worker.median)} | ${s.embed_median === null ? '–' : f1(s.embed_median)} | ${s.scan_median === null ? '–' : f1(s.scan_median)} | ${f1(s.cold_load_median_ms)} (${s.cold_load_ms.map((x) => Math.round(x)).join(', ')}) | ${f1(s.cold_first_result_median_ms)} (${s.cold_first_result_ms.map((x) => Math.round(x)).join(', ')}) | ${s.source_in_top10}/${texts.length} |`;
const brow = (label, g) => `| ${label} | ${g.raw.toLocaleString('en-US')} | ${g.gzip.toLocaleString('en-US')} | ${g.files.map((f) => `\`${path.basename(f.name)}\``).join(', ')} |`;
const trow = (label, t) => `| **${label}** | **${t.raw.toLocaleString('en-US')}** | **${t.gzip.toLocaleString('en-US')}** | ${mb(t.raw)} MB raw, ${mb(t.gzip)} MB gzip |`;

const section = `<!-- browser_compare:start (written by bash bench/browser_compare.sh; do not edit by hand) -->
## In-browser query latency: vitrine vs transformers.js (bench/browser_compare.sh)

- command: \`${options.command}\`
- commit: ${commit}${dirty.length ? ` (uncommitted changes in the working tree to ${dirty.slice(0, 6).map((p) => `\`${p}\``).join(', ')}${dirty.length > 6 ? ` and ${dirty.length - 6} more` : ''})` : ''}; run ${new Date().toISOString().replace(/\.\d+Z$/, 'Z')}
- machine: ${os.cpus().length} cores, ${cpu}, ${Math.round(os.totalmem() / 2 ** 30)} GiB; Chromium ${chromiumVersion} headless (${CHROMIUM})
- load average (1, 5, 15 min) before: ${loadBefore}; before the browser: ${loadBeforeBrowser}; after: ${loadAfter}${busy ? ` — **the machine was busy with another job when this run started** (a load of ${maxLoad.toFixed(2)} on ${os.cpus().length} cores): absolute times are inflated and noisy; the ratios are within this one run, the engines interleaved query by query` : ''}
- queries: ${texts.length} H&M texts of ${Math.min(...tok)}–${Math.max(...tok)} tokens (mean ${mean(tok).toFixed(1)}, [CLS]/[SEP] included), chosen by bench/text_encoder.sh's rule (text_encoder_bench.rs: over the test split of articles.csv in order, the i-th query is the longest word prefix of \`title. description\` that fits in 9 + i mod 8 tokens) with one fix: tokens counted without that example's 16-token truncation (there, a budget of 16 takes whole descriptions)${textEncoderQueries}; list in \`${path.relative(ROOT, path.join(work, 'queries.json'))}\` (catalog text, not reproduced here)
- per query, one at a time, k = ${K}: the page posts the query to the engine's Web Worker and awaits the ranked list (round trip, as www/tests/run.mjs's latency test); ${WARM_UP} warm-up queries first, then the ${texts.length} queries ${options.passes} times; the three engines in one page, in turn for every query (order rotated), each on one thread
- **vitrine**: the real \`<vitrine-search>\` element (www/src) and its worker with \`www/pkg\` (vitrine_wasm_bg.wasm ${pkgStat.size.toLocaleString('en-US')} B, built ${pkgStat.mtime.toISOString().slice(0, 16).replace('T', ' ')} UTC), bundle \`${bundleDir}\` (manifest sha256 ${manifestSha}…, ${v.cold_info.products} products): text encoder (int8) + search of its ANN index, in the worker; its WebAssembly linear memory once the bundle is loaded: ${(v.cold_info.memory_bytes / 2 ** 20).toFixed(1)} MiB (the first cold load's \`ready\` event)
- **transformers.js** ${q8.cold_info.transformers} (onnxruntime-web ${q8.cold_info.onnxruntime_web}, \`transformers.min.js\` + \`ort-wasm-simd-threaded.asyncify.{mjs,wasm}\`, the build it picks by default, served locally), in a module Web Worker: \`pipeline('feature-extraction', …, {dtype, device: 'wasm'})\` with \`{pooling: 'mean', normalize: true}\`, \`env.backends.onnx.wasm.numThreads = ${q8.cold_info.num_threads}\`, \`env.allowRemoteModels = false\`, \`env.localModelPath\` = the served \`target/browser-compare/models\`; then a brute-force JS scan (dot products over one Float32Array) of the ${q8.cold_info.items.toLocaleString('en-US')} catalog vectors (f32, 384-d, from the fp32 ONNX model by prepare.py), top ${K} kept
- the ONNX models: all-MiniLM-L6-v2 exported locally from \`${options.model}\` by prepare.py (opset 14, the graph torch.onnx.export gives BertModel, written with onnx.helper: the project's .venv cannot \`import torch\` — it holds libtorch for tch only — and no CPU PyTorch is reachable here); q8 = onnxruntime \`quantize_dynamic\` as transformers.js's scripts/quantize.py makes \`model_quantized.onnx\` (int8 weights, per channel, reduced range: DESIGN.md §8's anchor; MatMul + Gather)
- checks (asserted unless marked): ONNX fp32 in onnxruntime ${reference.onnxruntime_python} vs a float64 numpy forward pass with mean pooling + L2 norm from the same weights: cosine min ${Math.min(...reference.onnx_fp32_cosine).toFixed(6)}; vitrine's candle encoder (www/pkg \`QueryEncoder\`, f32) vs that reference: min ${Math.min(...candleCos).toFixed(6)}; transformers.js fp32 in Chromium vs the reference: min ${check['tjs-fp32'].min.toFixed(6)} (mean ${check['tjs-fp32'].mean.toFixed(6)}); transformers.js's token counts = prepare.py's for all ${texts.length} (no padding to the tokenizer file's 128); transformers.js q8 vs the reference (reported, not asserted): min ${check['tjs-q8'].min.toFixed(4)}, mean ${check['tjs-q8'].mean.toFixed(4)}

| engine | median ms/query | p90 ms | mean ms | best pass: median | best pass: p90 | median of each pass | median in worker | embed (median) | scan (median) | cold load ms, median (each) | cold load + first result ms, median (each) | source product in top ${K} |
|---|---|---|---|---|---|---|---|---|---|---|---|---|
${row('vitrine', v)}
${row('transformers.js q8', q8)}
${row('transformers.js fp32', fp32)}

ms/query: round trip seen by the page (embed + search + messages), over all ${texts.length} × ${options.passes} samples; "best pass": for each query its fastest of the ${options.passes} passes, then median and p90 over the ${texts.length} queries (what the engines do when the other job leaves them the CPU). In worker: the worker's own time for the query; embed/scan: transformers.js's split of it. Cold load: a freshly started Chromium, engine start to ready to search (vitrine: worker, wasm, bundle fetched and parsed; transformers.js: worker, library, onnxruntime wasm, model, tokenizer, and the vectors), ${options.coldLoads} loads per engine, interleaved, every file downloaded from 127.0.0.1 (\`Cache-Control: no-store\`); "+ first result": from the same start until the answer to one query asked once the engine is ready (the i-th load asks the i-th query). "Source product in top ${K}": the query's own article (or another colour of it) among the results — a sanity check, not a quality benchmark: transformers.js scans the very MiniLM text vectors the query was cut from; vitrine ranks by its distilled product vectors${buildNote}.

**Ratio vitrine / transformers.js, median per query: ${ratio.q8.toFixed(2)}× q8, ${ratio.fp32.toFixed(2)}× fp32** (p90: ${ratio.q8_p90.toFixed(2)}× q8, ${ratio.fp32_p90.toFixed(2)}× fp32; best pass, median: ${ratio.q8_best.toFixed(2)}× q8, ${ratio.fp32_best.toFixed(2)}× fp32). Target ≤ ${TARGET_LATENCY}× transformers.js q8: **${latencyMet ? 'met' : 'not met'}**${latencyMet === latencyMetBest ? ' (on the best-pass medians too)' : ` (on the best-pass medians: ${latencyMetBest ? 'met' : 'not met'})`}.

**Cold load + first result, median: ${f1(v.cold_first_result_median_ms)} ms vitrine, ${f1(q8.cold_first_result_median_ms)} ms transformers.js q8: ${ratio.q8_first_result.toFixed(2)}×.** Target ≤ ${TARGET_FIRST_RESULT}×: **${firstResultMet ? 'met' : 'not met'}**.

## Shipped bytes: vitrine vs transformers.js (bench/browser_compare.sh)

Same run. Raw bytes and gzip -9 (Node's zlib, level 9), per file, summed.

| part | raw B | gzip B | files |
|---|---|---|---|
${brow('vitrine bundle (every file of the folder)', bytes.vitrine_bundle)}
${brow('vitrine wasm package (www/pkg .wasm + .js)', bytes.vitrine_pkg)}
${trow('vitrine total', totals.vitrine)}
${brow('transformers.js runtime it fetched', bytes.tjs_runtime)}
${brow('q8 model + tokenizer/config it fetched', bytes.tjs_q8_model)}
${brow('catalog vectors, 11.8k × 384 × f32', bytes.tjs_vectors)}
${trow('transformers.js q8 + f32 vectors total', totals.tjs_q8)}
${brow('(fp32 model + tokenizer/config)', bytes.tjs_fp32_model)}
${trow('(transformers.js fp32 + f32 vectors total)', totals.tjs_fp32)}

**Ratio vitrine / (transformers.js q8 + f32 vectors): ${byteRatio.raw.toFixed(2)}× raw, ${byteRatio.gzip.toFixed(2)}× gzip.** Target ≤ ${TARGET_BYTES}×: **${bytesMet ? 'met' : 'not met'}**.
Not counted above, on either side: the pages' own scripts. vitrine's element, worker and CSS (www/src, fetched: ${bytes.vitrine_widget.raw.toLocaleString('en-US')} B raw, ${bytes.vitrine_widget.gzip.toLocaleString('en-US')} B gzip) would make it ${(totals.vitrine_with_widget.raw / totals.tjs_q8.raw).toFixed(2)}× raw, ${(totals.vitrine_with_widget.gzip / totals.tjs_q8.gzip).toFixed(2)}× gzip. The vitrine bundle also carries what the transformers.js side lacks: product metadata (\`products.*.jsonl\`) and the category/TGIR/OCIR heads; the transformers.js side would still need product metadata to show a result. transformers.js fetched \`config.json\` and \`tokenizer_config.json\` twice per load (counted once).
The runtime is the onnxruntime-web build transformers.js picks by default (asyncify); its plain build (\`ort-wasm-simd-threaded.wasm\` + \`.mjs\`, ${plain.raw.toLocaleString('en-US')} B raw, ${plain.gzip.toLocaleString('en-US')} B gzip, not loaded in this run) would make the transformers.js q8 total ${mb(plainTotal.raw)} MB raw, ${mb(plainTotal.gzip)} MB gzip, and the ratio ${(totals.vitrine.raw / plainTotal.raw).toFixed(2)}× raw, ${(totals.vitrine.gzip / plainTotal.gzip).toFixed(2)}× gzip.
<!-- browser_compare:end -->
`;

const resultsPath = path.resolve(ROOT, options.results);
let doc = existsSync(resultsPath) ? readFileSync(resultsPath, 'utf8') : '# Benchmark results\n\nSections are written by the benchmarks named in their headings.\n';
const start = doc.indexOf('<!-- browser_compare:start');
const endMarker = '<!-- browser_compare:end -->';
const end = doc.indexOf(endMarker);
if (start >= 0 && end > start) doc = doc.slice(0, start) + section + doc.slice(end + endMarker.length).replace(/^\n/, '');
else doc = doc.replace(/\n*$/, '\n\n') + section;
writeFileSync(resultsPath, doc);
writeFileSync(
  path.join(work, 'results.json'),
  JSON.stringify({ commit, chromium: chromiumVersion, userAgent, loadBefore, loadBeforeBrowser, loadAfter, candleCos, check, stats, ratio, byteRatio, bytes, totals, fetched, timings }, null, 1) + '\n',
);
console.log(section);
log(`latency: vitrine ${f1(v.round_trip.median)} ms, transformers.js q8 ${f1(q8.round_trip.median)} ms, fp32 ${f1(fp32.round_trip.median)} ms per query (median) → ${ratio.q8.toFixed(2)}× q8 (best pass ${ratio.q8_best.toFixed(2)}×): target ≤ ${TARGET_LATENCY}× ${latencyMet ? 'met' : 'not met'}`);
log(`load + first result: vitrine ${f1(v.cold_first_result_median_ms)} ms / transformers.js q8 ${f1(q8.cold_first_result_median_ms)} ms = ${ratio.q8_first_result.toFixed(2)}×: target ≤ ${TARGET_FIRST_RESULT}× ${firstResultMet ? 'met' : 'not met'}`);
log(`bytes: vitrine ${mb(totals.vitrine.raw)} MB / transformers.js q8 + vectors ${mb(totals.tjs_q8.raw)} MB = ${byteRatio.raw.toFixed(2)}× raw (${byteRatio.gzip.toFixed(2)}× gzip): target ≤ ${TARGET_BYTES}× ${bytesMet ? 'met' : 'not met'}`);
log(`wrote ${path.relative(ROOT, resultsPath)} and ${path.relative(ROOT, path.join(work, 'results.json'))}`);
