// A shopper's session in the demo store, in headless Chromium, on a real
// bundle: search a colour and a garment, refine the first result ("like
// this, but …"), complete the look, and keep a screenshot of each step with
// what the cards showed (title, category, colour from the catalog).
//
//   node bench/shopper_session.mjs BUNDLE_DIR IMAGES_DIR OUT_DIR ["black sweater"] ["in red"]
//
// BUNDLE_DIR holds catalog.vitrine and bundle/ (the index builder's output),
// IMAGES_DIR the catalog's photos. Needs www/pkg (`cargo xtask demo` builds it).

import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { openStore } from '../www/tests/harness.mjs';

const [bundle, images, out, query = 'black sweater', refinement = 'in red'] = process.argv.slice(2);
if (!bundle || !images || !out) throw new Error('usage: node bench/shopper_session.mjs BUNDLE_DIR IMAGES_DIR OUT_DIR [query] [refinement]');
await mkdir(out, { recursive: true });

const store = await openStore({ bundle: path.resolve(bundle), images: path.resolve(images) });
const log = [];
const shot = async (name, step) => {
  const cards = await store.cards();
  log.push({ step, cards: cards.map((c) => `${c.title} (${c.category})`) });
  await store.page.screenshot({ path: path.join(out, `${name}.png`), fullPage: true });
};
try {
  await store.goto();
  await store.ready();
  await store.type(query);
  await shot('1-search', `search "${query}"`);

  let before = (await store.probe()).results.length;
  await store.page.locator('vitrine-search li.product').first().locator('button.refine').click();
  await store.page.locator('vitrine-search input.refine-text').fill(refinement);
  await store.page.locator('vitrine-search .refine-form button[type="submit"]').click();
  await store.waitResults(before, 'refine', refinement);
  await shot('2-refine', `first result, "like this, but ${refinement}"`);

  await store.type(query);
  before = (await store.probe()).results.length;
  await store.page.locator('vitrine-search li.product').first().locator('button.look').click();
  const category = await store.page.locator('vitrine-search button.look-category').first().getAttribute('data-category');
  await store.page.locator('vitrine-search button.look-category').first().click();
  await store.waitResults(before, 'completeLook', category);
  await shot('3-complete-the-look', `first result, complete the look in ${category}`);
} finally {
  await store.close();
}
await writeFile(path.join(out, 'session.json'), JSON.stringify(log, null, 2));
for (const { step, cards } of log) console.log(`${step}:\n  ${cards.slice(0, 10).join('\n  ')}`);
