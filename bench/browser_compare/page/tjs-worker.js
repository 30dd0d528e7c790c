// transformers.js in a Web Worker, as a site would run it for search: the
// feature-extraction pipeline (mean pooling, normalised) on all-MiniLM-L6-v2
// from the local model folder, onnxruntime-web's wasm backend on one thread,
// then a brute-force scan of the catalog's f32 vectors (dot products over a
// Float32Array, top k kept by insertion).
//
// Messages in:  {type: 'load', dtype: 'q8' | 'fp32'}
//               {type: 'search', id, text, k}
//               {type: 'embed', id, texts}           (the correctness check; not timed)
// Messages out: {type: 'ready', info} | {type: 'result', id, value} | {type: 'error', id?, message}

import { env, pipeline } from '/tjs/transformers.min.js';

const DIM = 384;
let extractor = null;
let vectors = null;
let count = 0;

async function load(dtype) {
  const started = performance.now();
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = '/models/';
  // No Cache API copies: each load is a download, like vitrine's page here (no service worker).
  env.useBrowserCache = false;
  env.useWasmCache = false;
  env.backends.onnx.wasm.numThreads = 1;
  // The onnxruntime-web build transformers.js picks by default (from a CDN), served locally.
  env.backends.onnx.wasm.wasmPaths = {
    mjs: new URL('/ort/ort-wasm-simd-threaded.asyncify.mjs', self.location.href).href,
    wasm: new URL('/ort/ort-wasm-simd-threaded.asyncify.wasm', self.location.href).href,
  };
  const modelStarted = performance.now();
  const vectorsPromise = fetch('/data/vectors.f32').then(async (r) => {
    if (!r.ok) throw new Error(`/data/vectors.f32: HTTP ${r.status}`);
    const buffer = await r.arrayBuffer();
    return { buffer, ms: performance.now() - modelStarted };
  });
  extractor = await pipeline('feature-extraction', 'all-MiniLM-L6-v2', { dtype, device: 'wasm' });
  const modelMs = performance.now() - modelStarted;
  const fetched = await vectorsPromise;
  vectors = new Float32Array(fetched.buffer);
  count = vectors.length / DIM;
  if (!Number.isInteger(count)) throw new Error(`vectors.f32 holds ${vectors.length} floats, not a multiple of ${DIM}`);
  return {
    worker_ms: performance.now() - started,
    model_ms: modelMs,
    vectors_ms: fetched.ms,
    items: count,
    num_threads: env.backends.onnx.wasm.numThreads,
    onnxruntime_web: env.backends.onnx.versions?.web ?? null,
    transformers: env.version,
    dtype,
  };
}

async function embed(text) {
  const output = await extractor(text, { pooling: 'mean', normalize: true });
  return output.data;
}

function scan(query, k) {
  const bestScore = new Float32Array(k).fill(-Infinity);
  const bestIndex = new Int32Array(k).fill(-1);
  for (let i = 0, off = 0; i < count; i++, off += DIM) {
    let s = 0;
    for (let j = 0; j < DIM; j++) s += query[j] * vectors[off + j];
    if (s > bestScore[k - 1]) {
      let p = k - 1;
      while (p > 0 && bestScore[p - 1] < s) {
        bestScore[p] = bestScore[p - 1];
        bestIndex[p] = bestIndex[p - 1];
        p--;
      }
      bestScore[p] = s;
      bestIndex[p] = i;
    }
  }
  return { indices: Array.from(bestIndex), scores: Array.from(bestScore) };
}

self.addEventListener('message', async ({ data }) => {
  try {
    if (data.type === 'load') {
      self.postMessage({ type: 'ready', info: await load(data.dtype) });
    } else if (data.type === 'search') {
      const started = performance.now();
      const query = await embed(data.text);
      const embedded = performance.now();
      const { indices, scores } = scan(query, data.k);
      const done = performance.now();
      self.postMessage({ type: 'result', id: data.id, value: { indices, scores, ms: done - started, embed_ms: embedded - started, scan_ms: done - embedded } });
    } else if (data.type === 'embed') {
      const out = [];
      for (const text of data.texts) {
        const tokens = extractor.tokenizer(text).input_ids.dims.at(-1);
        out.push({ tokens, embedding: Array.from(await embed(text)) });
      }
      self.postMessage({ type: 'result', id: data.id, value: out });
    }
  } catch (e) {
    self.postMessage({ type: 'error', id: data.id, message: e instanceof Error ? `${e.message}\n${e.stack}` : String(e) });
  }
});
