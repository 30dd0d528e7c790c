// vitrine's search engine in a Web Worker: loads the WebAssembly package,
// fetches the bundle with progress, and answers the page's queries, so that
// the page's main thread never waits on a query.
//
// Messages in:  {type: 'load', bundle: URL}            (single file; a folder: URL ending in '/'; a manifest or a
//                                                        publish folder's pointer: URL ending in '.json')
//               {type: 'query', id, op, args}          (op: search | refine | completeLook | classify | similar)
// Messages out: {type: 'progress', loaded, total}      (total is 0 when unknown)
//               {type: 'ready', categories, heads, productCount, bytes, ms, phases, memoryBytes}  (phases: ms per load step; memoryBytes: the engine's WebAssembly memory)
//               {type: 'error', message}               (the bundle could not be loaded)
//               {type: 'result', id, ok, value | message, ms}
//               {type: 'csp', directive, blocked}      (a Content-Security-Policy violation in the worker)

import init, { BundleLoader, SingleFileLoader } from '../pkg/vitrine_wasm.js';

let engine = null;

self.addEventListener('securitypolicyviolation', (e) => {
  self.postMessage({ type: 'csp', directive: e.violatedDirective, blocked: String(e.blockedURI) });
});

// Reads a response's body with progress; `onBytes(n)` is called per chunk.
async function readWithProgress(response, onBytes) {
  if (!response.body) {
    const bytes = new Uint8Array(await response.arrayBuffer());
    onBytes(bytes.length);
    return bytes;
  }
  const length = Number(response.headers.get('Content-Length')) || 0;
  const reader = response.body.getReader();
  let buffer = new Uint8Array(length > 0 ? length : 1 << 20);
  let used = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (used + value.length > buffer.length) {
      const grown = new Uint8Array(Math.max(buffer.length * 2, used + value.length));
      grown.set(buffer.subarray(0, used));
      buffer = grown;
    }
    buffer.set(value, used);
    used += value.length;
    onBytes(value.length);
  }
  return used === buffer.length ? buffer : buffer.slice(0, used);
}

async function fetchOk(url, init = {}) {
  let response;
  try {
    response = await fetch(url, init);
  } catch (e) {
    throw new Error(`cannot fetch ${url}: ${e.message} (offline, and not cached yet?)`);
  }
  if (!response.ok) throw new Error(`cannot fetch ${url}: HTTP ${response.status} ${response.statusText}`);
  return response;
}

// A publish folder's pointer (vitrine-publish's `current.json`): which
// version's manifest is live. It changes in place, so it is always asked of
// the network (`no-cache`); what it names is content-addressed.
const POINTER_FORMAT = 'vitrine-published';
const POINTER_VERSION = 1;

// The manifest a folder URL ('/'), a manifest URL, or a pointer URL leads to, and its URL (parts are beside it).
async function fetchManifest(url) {
  const first = url.pathname.endsWith('/') ? new URL('manifest.json', url) : url;
  const bytes = new Uint8Array(await (await fetchOk(first, { cache: 'no-cache' })).arrayBuffer());
  let json = null;
  try {
    json = JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    // Not JSON: the bundle loader reports the manifest as invalid.
  }
  if (json?.format !== POINTER_FORMAT) return { manifestUrl: first, manifest: bytes };
  if (!(json.format_version <= POINTER_VERSION)) {
    throw new Error(`${first} is a ${POINTER_FORMAT} pointer of format version ${json.format_version}; this widget reads up to ${POINTER_VERSION}: update the widget`);
  }
  if (typeof json.manifest !== 'string') throw new Error(`${first} names no manifest (field "manifest")`);
  const manifestUrl = new URL(json.manifest, first);
  return { manifestUrl, manifest: new Uint8Array(await (await fetchOk(manifestUrl)).arrayBuffer()) };
}

// The browser's SHA-256 of `bytes` in lowercase hex, or undefined where
// WebCrypto is missing (plain http): the engine then hashes them itself, many
// times slower.
async function sha256Hex(bytes) {
  if (!self.crypto?.subtle) return undefined;
  const digest = new Uint8Array(await self.crypto.subtle.digest('SHA-256', bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

// The part files a manifest's JSON lists that are safe to fetch before the
// engine has checked the manifest (it checks it before any part is used):
// only content-named files beside the manifest, at most 16.
function partFilesToPrefetch(manifestBytes) {
  try {
    const parts = JSON.parse(new TextDecoder().decode(manifestBytes)).parts;
    return Array.isArray(parts) ? parts.map((p) => p?.file).filter((f) => typeof f === 'string' && PART_FILE.test(f)).slice(0, 16) : [];
  } catch {
    return [];
  }
}

async function load(bundleUrl) {
  const start = performance.now();
  // Where a load's time goes, in ms, each step from the end of the one before:
  // `bundle` (the manifest, or the single file), `wasm` (what is left of
  // fetching and compiling the engine, which starts first), `parts` (what is
  // left of the parts' download and digests), `copy` (the parts into the
  // engine's memory), `engine` (parts checked and decoded, text encoder and
  // index ready), `housekeeping` (old versions leave the offline cache).
  const phases = {};
  let phaseStart = start;
  const phase = (name) => {
    const now = performance.now();
    phases[name] = now - phaseStart;
    phaseStart = now;
  };
  // The engine compiles while the bundle downloads.
  const wasmReady = init({ module_or_path: new URL('../pkg/vitrine_wasm_bg.wasm', import.meta.url) });
  wasmReady.catch(() => {});
  const url = new URL(bundleUrl, self.location.href);
  let loaded = 0;
  let total = 0;
  let lastSent = 0;
  const progress = (n) => {
    loaded += n;
    const now = performance.now();
    if (now - lastSent > 50 || loaded === total) {
      lastSent = now;
      self.postMessage({ type: 'progress', loaded, total });
    }
  };
  let wasm;
  if (url.pathname.endsWith('/') || url.pathname.endsWith('.json')) {
    const { manifestUrl, manifest } = await fetchManifest(url);
    // Each part is checked against the manifest's hash in `finish`, by its
    // WebCrypto digest where the page has one (secure contexts).
    const fetchPart = async (file) => {
      const bytes = await readWithProgress(await fetchOk(new URL(file, manifestUrl)), progress);
      return { bytes, sha256: await sha256Hex(bytes) };
    };
    const prefetched = new Map(partFilesToPrefetch(manifest).map((file) => [file, fetchPart(file)]));
    prefetched.forEach((part) => part.catch(() => {}));
    phase('bundle');
    wasm = await wasmReady;
    phase('wasm');
    const loader = new BundleLoader(manifest);
    total = loader.totalBytes;
    const files = loader.files;
    const parts = await Promise.all(files.map((file) => prefetched.get(file) ?? fetchPart(file)));
    phase('parts');
    files.forEach((file, i) => loader.addPart(file, parts[i].bytes, parts[i].sha256));
    phase('copy');
    engine = loader.finish();
    phase('engine');
    await evictOtherVersions(manifestUrl, files);
    phase('housekeeping');
  } else {
    const response = await fetchOk(url);
    total = Number(response.headers.get('Content-Length')) || 0;
    const bytes = await readWithProgress(response, progress);
    total = bytes.length;
    phase('bundle');
    wasm = await wasmReady;
    phase('wasm');
    const loader = new SingleFileLoader(bytes);
    const ranges = loader.partRanges;
    const digests = await Promise.all(
      Array.from({ length: ranges.length / 2 }, (_, i) => sha256Hex(bytes.subarray(ranges[2 * i], ranges[2 * i] + ranges[2 * i + 1]))),
    );
    phase('parts');
    engine = loader.finish(digests.includes(undefined) ? undefined : digests);
    phase('engine');
  }
  self.postMessage({ type: 'progress', loaded: total, total });
  return {
    categories: engine.categories,
    heads: engine.heads,
    productCount: engine.productCount,
    bytes: total,
    ms: performance.now() - start,
    phases,
    memoryBytes: wasm.memory.buffer.byteLength,
  };
}

// The service worker's cache (www/sw.js names it) and what it keeps forever:
// content-named bundle files, `<part>.<sha256 prefix>.<ext>`.
const OFFLINE_CACHE = 'vitrine-v1';
const CONTENT_NAMED = /\.[0-9a-f]{16}\.(safetensors|json|bin|jsonl)$/;
// A part file a manifest may name: content-named, in the manifest's own folder.
const PART_FILE = new RegExp(`^[a-z_]+${CONTENT_NAMED.source}`);

// Once a version has loaded whole, the content-named files of other versions
// in its folder leave the offline cache: their names are never asked for
// again, and each publish would otherwise add tens of MB to the browser's
// storage. Offline, the cached pointer names this version, which stays.
async function evictOtherVersions(manifestUrl, files) {
  if (!self.caches) return;
  try {
    const live = new Set([manifestUrl.href, ...files.map((file) => new URL(file, manifestUrl).href)]);
    const folder = new URL('./', manifestUrl).href;
    const cache = await caches.open(OFFLINE_CACHE);
    const stale = (await cache.keys()).filter(
      (request) => request.url.startsWith(folder) && CONTENT_NAMED.test(new URL(request.url).pathname) && !live.has(request.url),
    );
    await Promise.all(stale.map((request) => cache.delete(request)));
  } catch (e) {
    // Storage housekeeping never stops a search.
    console.warn(`vitrine: old bundle files stay cached (${e instanceof Error ? e.message : e})`);
  }
}

// The first query after a load runs code the engine has not run yet, which
// the browser compiles and optimises then (about 90 ms in Chromium against 5
// for the next ones): one query of each kind the widget asks, answered while
// the shopper has yet to type, takes that off their first search. A query
// the page sends meanwhile waits behind it.
function warmUp() {
  try {
    engine.search('black dress', 12);
    engine.classify('black dress');
  } catch {
    // A catalog the warm-up query cannot be asked of still answers real ones.
  }
}

const ops = {
  search: (text, k, category) => engine.search(text, k, category ?? undefined),
  refine: (productId, text, k) => engine.refine(productId, text, k),
  completeLook: (productIds, category, k) => engine.completeLook(productIds, category, k),
  classify: (text) => engine.classify(text),
  similar: (productId, k) => engine.similar(productId, k),
};

self.addEventListener('message', async (event) => {
  const msg = event.data;
  if (msg.type === 'load') {
    try {
      const info = await load(msg.bundle);
      self.postMessage({ type: 'ready', ...info });
      warmUp();
    } catch (e) {
      self.postMessage({ type: 'error', message: e instanceof Error ? e.message : String(e) });
    }
    return;
  }
  if (msg.type === 'query') {
    const start = performance.now();
    try {
      if (!engine) throw new Error('the catalog is not loaded yet');
      const run = ops[msg.op];
      if (!run) throw new Error(`unknown operation ${msg.op}`);
      const value = run(...msg.args);
      self.postMessage({ type: 'result', id: msg.id, ok: true, value, ms: performance.now() - start });
    } catch (e) {
      self.postMessage({ type: 'result', id: msg.id, ok: false, message: e instanceof Error ? e.message : String(e), ms: performance.now() - start });
    }
  }
});
