// Smoke test of the WebAssembly package in node: the Tokenizer built from
// MiniLM's tokenizer.json gives the reference ids.
//
// Usage: node wasm/tests/tokenize.mjs PKG_DIR TOKENIZER_JSON
//   PKG_DIR: output of `wasm-bindgen --target nodejs` (cargo xtask test: target/wasm-node)
//            or `--target web` (cargo xtask demo: www/pkg)
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import assert from "node:assert/strict";

const [pkgDir, tokenizerPath] = process.argv.slice(2);
if (!pkgDir || !tokenizerPath) {
  console.error("usage: node wasm/tests/tokenize.mjs PKG_DIR TOKENIZER_JSON");
  process.exit(2);
}

// `wasm-bindgen --target nodejs` writes CommonJS that loads the module itself;
// `--target web` writes an ES module whose initSync takes the module's bytes.
const entry = resolve(pkgDir, "vitrine_wasm.js");
let Tokenizer;
if (/^export\b/m.test(readFileSync(entry, "utf8"))) {
  const pkg = await import(pathToFileURL(entry).href);
  pkg.initSync({ module: readFileSync(resolve(pkgDir, "vitrine_wasm_bg.wasm")) });
  Tokenizer = pkg.Tokenizer;
} else {
  Tokenizer = createRequire(import.meta.url)(entry).Tokenizer;
}

const tokenizer = new Tokenizer(readFileSync(tokenizerPath));
const cases = [
  ["a black dress", [101, 1037, 2304, 4377, 102]],
  ["A Black Dress", [101, 1037, 2304, 4377, 102]],
];
for (const [text, expected] of cases) {
  const ids = Array.from(tokenizer.encode(text));
  assert.deepEqual(ids, expected, `ids of ${JSON.stringify(text)}`);
}
assert.equal(tokenizer.vocabSize, 30522);
assert.throws(() => new Tokenizer(new TextEncoder().encode("{ not json")), /tokenizer\.json/);

console.log(`wasm smoke test passed (${pkgDir}): "a black dress" → [${tokenizer.encode("a black dress").join(", ")}] (vocabulary ${tokenizer.vocabSize})`);
