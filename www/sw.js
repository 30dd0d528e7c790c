// vitrine's service worker: the app shell, the WebAssembly engine, the bundle
// and product photos go into the Cache API as they are fetched, so that a
// reload without a network still searches.
//
// - Content-addressed files (a bundle folder's parts, `<part>.<sha256 prefix>.<ext>`,
//   and a publish folder's manifests, `manifest.<sha256 prefix>.json`) and product
//   photos: cache first (they never change under the same name).
// - Everything else (page, scripts, wasm, a single-file bundle, manifest.json, a
//   publish folder's current.json): network first, the cached copy when the network
//   fails. So offline, a published store loads the last current.json this browser
//   saw, and with it the version whose files it cached.
// - Once a version has loaded, src/worker.js drops the other versions' bundle
//   files from the cache, so that nightly publishes do not pile up in storage.
// - Nothing else is touched: a storefront that registers this worker keeps its
//   own pages and API answers out of the cache (the browser fetches them as if
//   there were no worker).

// src/worker.js evicts old bundle versions from this cache by its name.
const CACHE = 'vitrine-v1';
const SHELL = [
  './',
  'index.html',
  'src/vitrine-search.js',
  'src/vitrine-search.css',
  'src/store.css',
  'favicon.svg',
  'src/worker.js',
  'pkg/vitrine_wasm.js',
  'pkg/vitrine_wasm_bg.wasm',
];
const IMMUTABLE = /(\.[0-9a-f]{16}\.(safetensors|json|bin|jsonl)|\/images\/.*\.(jpe?g|png|webp))$/;
// vitrine's own files that change under their name: the shell, a single-file
// bundle, a bundle folder's manifest and a publish folder's pointer.
const SCOPE = new URL('./', self.location).pathname;
const SHELL_PATHS = new Set(SHELL.map((f) => new URL(f, self.location).pathname));
const MUTABLE = /(\.vitrine|\/manifest\.json|\/current\.json)$/;

/** Whether `url` is one of vitrine's files (the only requests this worker answers). */
function isVitrineFile(url) {
  if (SHELL_PATHS.has(url.pathname) || IMMUTABLE.test(url.pathname) || MUTABLE.test(url.pathname)) return true;
  return url.pathname.startsWith(SCOPE + 'src/') || url.pathname.startsWith(SCOPE + 'pkg/');
}

self.addEventListener('install', (event) => {
  event.waitUntil(
    caches
      .open(CACHE)
      .then((cache) => cache.addAll(SHELL))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith('vitrine-') && k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

async function networkFirst(request) {
  const cache = await caches.open(CACHE);
  try {
    const response = await fetch(request);
    if (response.ok && response.status === 200) {
      // An unchanged file (same ETag) is not written again: a bundle is tens of MB.
      const cached = await cache.match(request, { ignoreSearch: true });
      const etag = response.headers.get('ETag');
      if (!cached || !etag || cached.headers.get('ETag') !== etag) await cache.put(request, response.clone());
    }
    return response;
  } catch (e) {
    const cached = await cache.match(request, { ignoreSearch: true });
    if (cached) return cached;
    throw e;
  }
}

async function cacheFirst(request) {
  const cache = await caches.open(CACHE);
  const cached = await cache.match(request);
  if (cached) return cached;
  const response = await fetch(request);
  if (response.ok && response.status === 200) await cache.put(request, response.clone());
  return response;
}

self.addEventListener('fetch', (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (request.method !== 'GET' || url.origin !== self.location.origin || request.headers.has('range') || !isVitrineFile(url)) return;
  event.respondWith(IMMUTABLE.test(url.pathname) ? cacheFirst(request) : networkFirst(request));
});
