// The benchmark's static server: both engines from one origin, every response
// `Cache-Control: no-store` (each load is a download), and a log of what was
// served, so that the runner can say which files each engine actually fetched.
//
//   /bench/...   bench/browser_compare/page (the harness page and the transformers.js worker)
//   /src/, /pkg/ www/src and www/pkg (vitrine's element, worker and WebAssembly package, as the store serves them)
//   /bundle/...  the vitrine bundle folder (manifest.json + parts)
//   /tjs/...     @huggingface/transformers/dist
//   /ort/...     onnxruntime-web/dist (the .mjs/.wasm that transformers.js's bundled onnxruntime loads)
//   /models/...  the exported ONNX model folders (transformers.js's env.localModelPath)
//   /data/...    the catalog's f32 vectors

import { createServer } from 'node:http';
import { createReadStream, promises as fs } from 'node:fs';
import path from 'node:path';

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.jsonl': 'application/x-ndjson',
  '.wasm': 'application/wasm',
};

function inside(root, rest) {
  const file = path.resolve(root, '.' + path.posix.normalize('/' + rest));
  return file === root || file.startsWith(root + path.sep) ? file : null;
}

/** mounts: {'/prefix/': dir}. Resolves to {server, url, log}; log is [{path, status, bytes}]. */
export function serve(mounts, { host = '127.0.0.1' } = {}) {
  const log = [];
  const server = createServer(async (req, res) => {
    const headers = { 'Cache-Control': 'no-store', 'X-Content-Type-Options': 'nosniff' };
    let pathname;
    try {
      pathname = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    } catch {
      res.writeHead(400, headers).end();
      return;
    }
    let file = null;
    for (const [prefix, dir] of Object.entries(mounts)) {
      if (pathname.startsWith(prefix)) {
        file = inside(path.resolve(dir), pathname.slice(prefix.length));
        break;
      }
    }
    const stat = file ? await fs.stat(file).catch(() => null) : null;
    if (!stat || !stat.isFile() || (req.method !== 'GET' && req.method !== 'HEAD')) {
      log.push({ path: pathname, status: 404, bytes: 0 });
      res.writeHead(404, { ...headers, 'Content-Type': 'text/plain' }).end('not found');
      return;
    }
    log.push({ path: pathname, status: 200, bytes: stat.size, file });
    const type = TYPES[path.extname(file).toLowerCase()] || 'application/octet-stream';
    res.writeHead(200, { ...headers, 'Content-Type': type, 'Content-Length': stat.size });
    if (req.method === 'HEAD') res.end();
    else createReadStream(file).pipe(res);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => resolve({ server, url: `http://${host}:${server.address().port}/`, log }));
  });
}
