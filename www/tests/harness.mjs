// The browser tests' harness: a static server per test (www/serve.mjs), Debian's
// Chromium driven by playwright-core with a fresh profile, and what a page
// reports (dialogs, CSP violations, page errors, the element's events).

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { serve } from '../serve.mjs';

export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

// Runs in every page before its own scripts: records what the tests check.
function pageProbe() {
  window.__probe = { csp: [], results: [], errors: [], ready: [], progress: [] };
  document.addEventListener('securitypolicyviolation', (e) => {
    window.__probe.csp.push({ directive: e.violatedDirective, blocked: String(e.blockedURI), sample: e.sample });
  });
  document.addEventListener('vitrine-csp-violation', (e) => window.__probe.csp.push({ worker: true, ...e.detail }));
  document.addEventListener('vitrine-results', (e) => window.__probe.results.push(e.detail));
  document.addEventListener('vitrine-error', (e) => window.__probe.errors.push(e.detail.message));
  document.addEventListener('vitrine-ready', (e) => window.__probe.ready.push(e.detail));
  document.addEventListener('vitrine-progress', (e) => window.__probe.progress.push(e.detail));
}

/** A store page served with `bundle` (a folder) and `images`, in a fresh Chromium profile. */
export async function openStore({ bundle, images }) {
  const { server, url } = await serve({ bundle, images });
  const profile = await mkdtemp(path.join(tmpdir(), 'vitrine-e2e-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    serviceWorkers: 'allow',
  });
  const page = context.pages()[0] ?? (await context.newPage());
  const seen = { dialogs: [], pageErrors: [], console: [] };
  page.on('dialog', (d) => {
    seen.dialogs.push(d.message());
    d.dismiss().catch(() => {});
  });
  page.on('pageerror', (e) => seen.pageErrors.push(e.message));
  page.on('console', (m) => seen.console.push(`${m.type()}: ${m.text()}`));
  await context.addInitScript(pageProbe);
  const store = {
    url,
    server,
    context,
    page,
    seen,
    async goto() {
      await page.goto(url);
    },
    /** Waits for the element to load its bundle; resolves to its `ready` detail. */
    async ready(selector = 'vitrine-search') {
      return page.evaluate((s) => document.querySelector(s).ready, selector);
    },
    /** Types `text` in the search box and waits for its results. */
    async type(text, { delay = 0 } = {}) {
      const before = await page.evaluate(() => window.__probe.results.length);
      const input = page.locator('vitrine-search input[type="search"]');
      await input.fill('');
      if (delay > 0) await input.pressSequentially(text, { delay });
      else await input.fill(text);
      return store.waitResults(before, 'search', text);
    },
    /** Waits for a results event after the first `before` ones (of `op`, and `query` when given). */
    async waitResults(before, op, query = null) {
      const handle = await page.waitForFunction(
        ([n, o, q]) => window.__probe.results.slice(n).find((r) => r.op === o && (q === null || r.query === q)),
        [before, op, query],
        { timeout: 30000 },
      );
      return handle.jsonValue();
    },
    /** The result cards shown, as {id, category, title}. */
    async cards() {
      return page.$$eval('vitrine-search li.product', (lis) =>
        lis.map((li) => ({ id: li.dataset.productId, category: li.dataset.category, title: li.querySelector('.title').textContent })),
      );
    },
    async probe() {
      return page.evaluate(() => window.__probe);
    },
    async close() {
      await context.close().catch(() => {});
      await new Promise((resolve) => server.close(resolve));
      server.closeAllConnections?.();
      await rm(profile, { recursive: true, force: true });
    },
  };
  return store;
}

export function assert(condition, message) {
  if (!condition) throw new Error(`assertion failed: ${message}`);
}

export function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}
