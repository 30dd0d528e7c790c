#!/usr/bin/env node
// A tiny static server for vitrine's demo store and its browser tests:
//   /            www/ (the page, src/, sw.js)
//   /pkg/...     www/pkg (the WebAssembly package; `cargo xtask demo` builds it)
//   /bundle/...  the folder given by --bundle (an index builder's output: catalog.vitrine, bundle/manifest.json…)
//   /images/...  the folder given by --images (product photos)
// Every response carries the page's strict Content-Security-Policy.
//
//   node www/serve.mjs --bundle target/e2e-bundle --images target/e2e-bundle/catalog/images [--port 8080]

import { createServer } from 'node:http';
import { createReadStream, promises as fs } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const CSP =
  "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self'; connect-src 'self'; img-src 'self'; " +
  "style-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const WWW = path.dirname(fileURLToPath(import.meta.url));
const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.jsonl': 'application/x-ndjson',
  '.wasm': 'application/wasm',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.png': 'image/png',
  '.webp': 'image/webp',
  '.svg': 'image/svg+xml',
  '.ts': 'text/plain; charset=utf-8',
};

// The file a URL path names under `root`, or null when it would leave it.
function inside(root, rest) {
  const file = path.resolve(root, '.' + path.posix.normalize('/' + rest));
  return file === root || file.startsWith(root + path.sep) ? file : null;
}

function route(pathname, { bundle, images }) {
  const mounts = [
    ['/bundle/', bundle],
    ['/images/', images],
    ['/pkg/', path.join(WWW, 'pkg')],
  ];
  for (const [prefix, dir] of mounts) {
    if (pathname.startsWith(prefix)) return dir ? inside(path.resolve(dir), pathname.slice(prefix.length)) : null;
  }
  if (pathname.startsWith('/node_modules/') || pathname.startsWith('/tests/')) return null;
  return inside(WWW, pathname === '/' ? 'index.html' : pathname.slice(1));
}

export function serve({ bundle = null, images = null, port = 0, host = '127.0.0.1', log = false } = {}) {
  const server = createServer(async (req, res) => {
    const headers = { 'Content-Security-Policy': CSP, 'X-Content-Type-Options': 'nosniff', 'Cache-Control': 'no-cache' };
    let pathname;
    try {
      pathname = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    } catch {
      res.writeHead(400, headers).end('bad request');
      return;
    }
    const file = route(pathname, { bundle, images });
    let stat = null;
    if (file) stat = await fs.stat(file).catch(() => null);
    if (stat?.isDirectory()) stat = null;
    if (log) console.log(`${req.method} ${pathname} ${stat ? 200 : 404}`);
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, headers).end();
      return;
    }
    if (!stat) {
      res.writeHead(404, { ...headers, 'Content-Type': 'text/plain' }).end('not found');
      return;
    }
    // Revalidation (the service worker fetches network-first): an unchanged
    // file answers 304 and the browser's HTTP cache serves it, not a new download.
    const etag = `"${stat.size.toString(16)}-${Math.floor(stat.mtimeMs).toString(16)}"`;
    if (req.headers['if-none-match'] === etag) {
      res.writeHead(304, { ...headers, ETag: etag }).end();
      return;
    }
    const type = TYPES[path.extname(file).toLowerCase()] || 'application/octet-stream';
    res.writeHead(200, { ...headers, 'Content-Type': type, 'Content-Length': stat.size, ETag: etag });
    if (req.method === 'HEAD') res.end();
    else createReadStream(file).pipe(res);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      const { port: actual } = server.address();
      resolve({ server, url: `http://${host}:${actual}/` });
    });
  });
}

function parseArgs(argv) {
  const options = { port: 8080, log: false };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${flag} needs a value`);
      return argv[++i];
    };
    if (flag === '--bundle') options.bundle = value();
    else if (flag === '--images') options.images = value();
    else if (flag === '--port') options.port = Number(value());
    else if (flag === '--host') options.host = value();
    else if (flag === '--log') options.log = true;
    else throw new Error(`unknown flag ${flag} (flags: --bundle DIR --images DIR --port N --host ADDR --log)`);
  }
  return options;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    const options = parseArgs(process.argv.slice(2));
    const { url } = await serve(options);
    console.log(url);
  } catch (e) {
    console.error(`serve.mjs: ${e.message}`);
    process.exit(1);
  }
}
