// The harness page's side (run.mjs calls window.bench through page.evaluate).
// Each engine answers in its own Web Worker: vitrine through its real
// <vitrine-search> element (www/src, www/pkg), transformers.js through
// tjs-worker.js. A query's time is taken here, on the page: post the query,
// await the answer (round trip), as www/tests/run.mjs's latency test does;
// each worker also reports its own time.

import '/src/vitrine-search.js';

const engines = {};

// After an engine is ready, `first` (a query text, or null) is asked once:
// `first_result_ms` is the time from the load's start to that answer, what a
// shopper waits for the first results of a page they just opened.
async function withFirstResult(name, started, info, first) {
  if (first === null) return info;
  await engines[name].search(first);
  return { ...info, first_result_ms: performance.now() - started };
}

function loadVitrine(name, bundle, k, first) {
  const started = performance.now();
  const el = document.createElement('vitrine-search');
  el.setAttribute('bundle', bundle);
  el.setAttribute('results', String(k));
  el.id = name;
  document.body.append(el);
  return el.ready.then((ready) => {
    engines[name] = {
      search: async (text) => {
        const { results, ms } = await el.search(text, { k });
        return { ids: results.map((r) => r.id), groups: results.map((r) => r.groupId), ms };
      },
    };
    const info = { page_ms: performance.now() - started, worker_ms: ready.ms, phases: ready.phases, bytes: ready.bytes, products: ready.productCount, memory_bytes: ready.memoryBytes };
    return withFirstResult(name, started, info, first);
  });
}

function loadTjs(name, dtype, k, first) {
  const started = performance.now();
  const worker = new Worker('/bench/tjs-worker.js', { type: 'module', name });
  let next = 1;
  const pending = new Map();
  return new Promise((resolve, reject) => {
    worker.addEventListener('error', (e) => reject(new Error(`${name} worker: ${e.message || 'failed to start'}`)));
    worker.addEventListener('message', ({ data }) => {
      if (data.type === 'ready') {
        engines[name] = {
          search: (text) =>
            new Promise((res, rej) => {
              const id = next++;
              pending.set(id, { res, rej });
              worker.postMessage({ type: 'search', id, text, k });
            }),
          embed: (texts) =>
            new Promise((res, rej) => {
              const id = next++;
              pending.set(id, { res, rej });
              worker.postMessage({ type: 'embed', id, texts });
            }),
        };
        resolve(withFirstResult(name, started, { page_ms: performance.now() - started, ...data.info }, first));
      } else if (data.type === 'error') {
        if (data.id && pending.has(data.id)) {
          pending.get(data.id).rej(new Error(data.message));
          pending.delete(data.id);
        } else reject(new Error(`${name}: ${data.message}`));
      } else if (data.type === 'result') {
        pending.get(data.id).res(data.value);
        pending.delete(data.id);
      }
    });
    worker.postMessage({ type: 'load', dtype });
  });
}

// One query at a time; per query every engine in turn, the order rotated from
// query to query, so that the machine's load swings reach every engine alike;
// the whole list `passes` times.
async function run(names, queries, warmUp, passes) {
  for (const q of warmUp) for (const n of names) await engines[n].search(q);
  const out = Object.fromEntries(names.map((n) => [n, []]));
  let turn = 0;
  for (let pass = 0; pass < passes; pass++) {
    for (let i = 0; i < queries.length; i++, turn++) {
      for (let j = 0; j < names.length; j++) {
        const n = names[(turn + j) % names.length];
        const started = performance.now();
        const answer = await engines[n].search(queries[i]);
        out[n].push({ pass, query: i, round_trip_ms: performance.now() - started, ...answer });
      }
    }
  }
  return out;
}

window.bench = {
  loadVitrine,
  loadTjs,
  run,
  embed: (name, texts) => engines[name].embed(texts),
  userAgent: () => navigator.userAgent,
};
window.benchReady = true;
