//! The search engine in the browser: a bundle (single file, or a folder's
//! manifest and parts) loaded into core's [`Engine`], answering with plain
//! JavaScript objects.
//!
//! ```js
//! const engine = new SearchEngine(new Uint8Array(await (await fetch("catalog.vitrine")).arrayBuffer()));
//! engine.search("black leather boots", 10);           // [{id, title, category, image, score, ...}, ...]
//! engine.search("boots", 10, "Shoes");                 // only that category
//! engine.classify("a red dress");                      // [{category: "Full body", probability: 0.93}, ...]
//! engine.refine("0108775015", "in red", 10);           // TGIR: like this product, but…
//! engine.completeLook(["0108775015"], "Shoes", 10);    // OCIR: what completes the outfit
//! engine.similar("0108775015", 10);
//! engine.heads;                                         // ["tgir", "ocir"]: the features this bundle offers
//!
//! // Folder layout: the manifest first (checked before any part is used), then each part.
//! const loader = new BundleLoader(manifestBytes);
//! for (const file of loader.files) loader.addPart(file, await fetchBytes(file));  // or (file, bytes, sha256Hex)
//! const engine2 = loader.finish();
//! ```
//!
//! Product ids and category names are the storefront's; errors are `Error`s
//! with the engine's message (an unknown product, an empty query, a corrupt bundle…).

use std::collections::HashMap;

use serde::Serialize;
use vitrine_core::bundle::single_file::SingleFileLayout;
use vitrine_core::bundle::{Bundle, FetchedPart, Limits, Manifest, PartName};
use vitrine_core::engine::{Engine, Hit};
use vitrine_core::index::SearchParams;
use vitrine_core::model::compact::OptionalHead;
use wasm_bindgen::prelude::*;

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &str = r#"
/** One product of a result list, best first. Catalog text: render it as text. */
export interface SearchHit {
  /** The storefront's product id. */
  id: string;
  title: string;
  category: string;
  subcategory: string;
  /** Photo URL, or a path relative to the catalog (e.g. `images/010/0108775015.jpg`). */
  image: string;
  /** Same garment in another colour or print share a group id. */
  groupId: string;
  /** Cosine similarity in the index's space (higher is better). */
  score: number;
}

/** One category a query asks for, with the category head's probability. */
export interface CategoryIntent {
  category: string;
  probability: number;
}
"#;

/// Most results one call returns.
pub const MAX_RESULTS: usize = 200;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HitOut<'a> {
    id: &'a str,
    title: &'a str,
    category: &'a str,
    subcategory: &'a str,
    image: &'a str,
    group_id: &'a str,
    score: f32,
}

#[derive(Serialize)]
struct IntentOut<'a> {
    category: &'a str,
    probability: f32,
}

/// A loaded bundle: the text encoder, the heads, the ANN index and the products.
#[wasm_bindgen]
pub struct SearchEngine {
    engine: Engine,
    by_id: HashMap<String, u32>,
}

impl SearchEngine {
    /// The engine of a read bundle (Rust API).
    pub fn from_bundle(bundle: Bundle) -> Result<SearchEngine, String> {
        let engine = Engine::from_bundle(bundle).map_err(|e| format!("cannot load the bundle: {e}"))?;
        let by_id = engine.products().iter().enumerate().map(|(i, p)| (p.id.clone(), i as u32)).collect();
        Ok(SearchEngine { engine, by_id })
    }

    /// The engine of a single-file bundle's bytes (Rust API).
    pub fn from_single_file(bytes: &[u8]) -> Result<SearchEngine, String> {
        let bundle = Bundle::from_single_file(bytes, &Limits::default()).map_err(|e| format!("cannot read the bundle: {e}"))?;
        Self::from_bundle(bundle)
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    fn item(&self, id: &str) -> Result<u32, String> {
        self.by_id.get(id).copied().ok_or_else(|| format!("unknown product {id:?}"))
    }

    fn category(&self, name: &str) -> Result<u16, String> {
        self.engine
            .categories()
            .iter()
            .position(|c| c == name)
            .map(|i| i as u16)
            .ok_or_else(|| format!("unknown category {name:?}: the catalog's categories are {}", self.engine.categories().join(", ")))
    }

    /// Search results as JSON (Rust API; the JS methods parse it into objects).
    pub fn search_json(&self, text: &str, k: usize, category: Option<&str>) -> Result<String, String> {
        let category = category.map(|c| self.category(c)).transpose()?;
        let hits = self.engine.search(text, clamp(k), category).map_err(|e| e.to_string())?;
        Ok(self.hits_json(&hits))
    }

    pub fn refine_json(&self, product: &str, text: &str, k: usize) -> Result<String, String> {
        let item = self.item(product)?;
        let hits = self.engine.modify(item, text, clamp(k)).map_err(|e| e.to_string())?;
        Ok(self.hits_json(&hits))
    }

    pub fn complete_look_json(&self, products: &[String], category: &str, k: usize) -> Result<String, String> {
        let items = products.iter().map(|p| self.item(p)).collect::<Result<Vec<_>, _>>()?;
        let category = self.category(category)?;
        let hits = self.engine.complete_outfit(&items, category, clamp(k)).map_err(|e| e.to_string())?;
        Ok(self.hits_json(&hits))
    }

    /// The `k` products of the product's category nearest to it, without it.
    pub fn similar_json(&self, product: &str, k: usize) -> Result<String, String> {
        let item = self.item(product)?;
        let index = self.engine.index();
        let vector = index.item_vector(item).ok_or_else(|| format!("product {product:?} has no vector"))?;
        let category = index.categories()[item as usize];
        let k = clamp(k).min(index.len());
        let mut hits = index.search(&vector, k + 1, Some(category), &SearchParams::default()).map_err(|e| e.to_string())?;
        hits.retain(|h| h.item != item);
        hits.truncate(k);
        Ok(self.hits_json(&hits))
    }

    pub fn classify_json(&self, text: &str) -> Result<String, String> {
        let intent = self.engine.category_intent(text).map_err(|e| e.to_string())?;
        let categories = self.engine.categories();
        let out: Vec<IntentOut> =
            intent.iter().map(|&(c, p)| IntentOut { category: categories[usize::from(c)].as_str(), probability: p }).collect();
        Ok(serde_json::to_string(&out).expect("plain structs serialise"))
    }

    fn hits_json(&self, hits: &[Hit]) -> String {
        let products = self.engine.products();
        let out: Vec<HitOut> = hits
            .iter()
            .map(|h| {
                let p = &products[h.item as usize];
                HitOut {
                    id: &p.id,
                    title: &p.title,
                    category: &p.category,
                    subcategory: &p.subcategory,
                    image: &p.image,
                    group_id: &p.group_id,
                    score: h.score,
                }
            })
            .collect();
        serde_json::to_string(&out).expect("plain structs serialise")
    }
}

fn clamp(k: usize) -> usize {
    k.clamp(1, MAX_RESULTS)
}

fn js_error(message: String) -> JsError {
    JsError::new(&message)
}

fn to_js(json: Result<String, String>) -> Result<JsValue, JsError> {
    let json = json.map_err(js_error)?;
    js_sys::JSON::parse(&json).map_err(|_| JsError::new("internal error: the engine's answer is not JSON"))
}

#[wasm_bindgen]
impl SearchEngine {
    /// `new SearchEngine(bytes)`: loads a single-file bundle (`catalog.vitrine`)
    /// given as a `Uint8Array`; throws an `Error` naming what is wrong with a
    /// truncated or corrupt one.
    #[wasm_bindgen(constructor)]
    pub fn new(bundle: &[u8]) -> Result<SearchEngine, JsError> {
        Self::from_single_file(bundle).map_err(js_error)
    }

    /// The `k` products nearest to a query text, best first; only of
    /// `category` (a name from `categories`) when given.
    #[wasm_bindgen(unchecked_return_type = "SearchHit[]")]
    pub fn search(&self, text: &str, k: usize, category: Option<String>) -> Result<JsValue, JsError> {
        to_js(self.search_json(text, k, category.as_deref()))
    }

    /// "Like this, but…" (TGIR): products of the product's category like it,
    /// changed as `text` says ("in red", "with long sleeves"); never the product itself.
    #[wasm_bindgen(unchecked_return_type = "SearchHit[]")]
    pub fn refine(&self, #[wasm_bindgen(js_name = productId)] product_id: &str, text: &str, k: usize) -> Result<JsValue, JsError> {
        to_js(self.refine_json(product_id, text, k))
    }

    /// Complete the look (OCIR): products of `category` that go with the
    /// outfit's products (at most 16, each once); never the outfit's own.
    #[wasm_bindgen(js_name = completeLook, unchecked_return_type = "SearchHit[]")]
    pub fn complete_look(
        &self,
        #[wasm_bindgen(js_name = productIds)] product_ids: Vec<String>,
        category: &str,
        k: usize,
    ) -> Result<JsValue, JsError> {
        to_js(self.complete_look_json(&product_ids, category, k))
    }

    /// The categories a query asks for, most likely first (probabilities sum to 1).
    #[wasm_bindgen(unchecked_return_type = "CategoryIntent[]")]
    pub fn classify(&self, text: &str) -> Result<JsValue, JsError> {
        to_js(self.classify_json(text))
    }

    /// Products of the product's category nearest to it, without it.
    #[wasm_bindgen(unchecked_return_type = "SearchHit[]")]
    pub fn similar(&self, #[wasm_bindgen(js_name = productId)] product_id: &str, k: usize) -> Result<JsValue, JsError> {
        to_js(self.similar_json(product_id, k))
    }

    /// The catalog's category names (what `search`'s and `completeLook`'s `category` take).
    #[wasm_bindgen(getter)]
    pub fn categories(&self) -> Vec<String> {
        self.engine.categories().to_vec()
    }

    /// The optional heads the bundle has: `"tgir"` (refine, "like this, but…")
    /// and `"ocir"` (`completeLook`); a widget offers only what is listed.
    #[wasm_bindgen(getter)]
    pub fn heads(&self) -> Vec<String> {
        OptionalHead::ALL.into_iter().filter(|&h| self.engine.has_head(h)).map(|h| h.name().to_string()).collect()
    }

    /// Number of products.
    #[wasm_bindgen(getter, js_name = productCount)]
    pub fn product_count(&self) -> usize {
        self.engine.products().len()
    }
}

/// The folder layout's loader: the manifest is checked first (format,
/// version, part names, hashes' form, total size), then each part it lists is
/// added; `finish` checks every part's length and SHA-256 and loads the engine.
#[wasm_bindgen]
pub struct BundleLoader {
    manifest: Manifest,
    parts: HashMap<PartName, FetchedPart>,
}

impl BundleLoader {
    /// Rust API of [`BundleLoader::new`].
    pub fn from_manifest(manifest: &[u8]) -> Result<BundleLoader, String> {
        let manifest = Manifest::parse(manifest, &Limits::default()).map_err(|e| format!("cannot read the bundle's manifest: {e}"))?;
        Ok(BundleLoader { manifest, parts: HashMap::new() })
    }

    /// Rust API of [`BundleLoader::add_part`].
    pub fn add(&mut self, file: &str, bytes: Vec<u8>, sha256: Option<String>) -> Result<(), String> {
        let entry = self.manifest.parts.iter().find(|p| p.file == file).ok_or_else(|| format!("{file:?} is not a part of this bundle"))?;
        self.parts.insert(entry.name, FetchedPart { bytes, sha256 });
        Ok(())
    }

    /// Rust API of [`BundleLoader::finish`].
    pub fn load(self) -> Result<SearchEngine, String> {
        let bundle = Bundle::from_fetched_parts(self.manifest, self.parts).map_err(|e| format!("cannot read the bundle: {e}"))?;
        SearchEngine::from_bundle(bundle)
    }
}

#[wasm_bindgen]
impl BundleLoader {
    /// `new BundleLoader(manifestBytes)`: checks a bundle folder's `manifest.json`.
    #[wasm_bindgen(constructor)]
    pub fn new(manifest: &[u8]) -> Result<BundleLoader, JsError> {
        Self::from_manifest(manifest).map_err(js_error)
    }

    /// The part files to fetch, relative to the manifest.
    #[wasm_bindgen(getter)]
    pub fn files(&self) -> Vec<String> {
        self.manifest.parts.iter().map(|p| p.file.clone()).collect()
    }

    /// All parts' bytes together (for a progress bar).
    #[wasm_bindgen(getter, js_name = totalBytes)]
    pub fn total_bytes(&self) -> f64 {
        self.manifest.parts_bytes() as f64
    }

    /// Adds the bytes of one part file (one of `files`), with their SHA-256
    /// (lowercase hex) when the caller computed it, e.g. with
    /// `crypto.subtle.digest`: `finish` then compares that digest with the
    /// manifest's instead of hashing the bytes in WebAssembly.
    #[wasm_bindgen(js_name = addPart)]
    pub fn add_part(&mut self, file: &str, bytes: Vec<u8>, sha256: Option<String>) -> Result<(), JsError> {
        self.add(file, bytes, sha256).map_err(js_error)
    }

    /// Checks every part and loads the engine (the loader is used up).
    pub fn finish(self) -> Result<SearchEngine, JsError> {
        self.load().map_err(js_error)
    }
}

/// The single-file layout's loader, for a caller that hashes the parts itself
/// (WebCrypto is many times faster than SHA-256 in WebAssembly): the header,
/// manifest and part lengths are checked first; `partRanges` says where each
/// part lies; `finish` takes the parts' digests, in that order.
#[wasm_bindgen]
pub struct SingleFileLoader {
    bytes: Vec<u8>,
    layout: SingleFileLayout,
}

impl SingleFileLoader {
    /// Rust API of [`SingleFileLoader::new`].
    pub fn read(bytes: Vec<u8>) -> Result<SingleFileLoader, String> {
        let layout = SingleFileLayout::read(&bytes, &Limits::default()).map_err(|e| format!("cannot read the bundle: {e}"))?;
        Ok(SingleFileLoader { bytes, layout })
    }

    /// Rust API of [`SingleFileLoader::finish`].
    pub fn load(self, digests: Option<Vec<String>>) -> Result<SearchEngine, String> {
        let bundle = self.layout.into_bundle(&self.bytes, digests).map_err(|e| format!("cannot read the bundle: {e}"))?;
        SearchEngine::from_bundle(bundle)
    }
}

#[wasm_bindgen]
impl SingleFileLoader {
    /// `new SingleFileLoader(bytes)`: checks a single-file bundle's header, manifest and part lengths.
    #[wasm_bindgen(constructor)]
    pub fn new(bytes: Vec<u8>) -> Result<SingleFileLoader, JsError> {
        Self::read(bytes).map_err(js_error)
    }

    /// Each part's offset and length in the file, one pair after another, in the manifest's order.
    #[wasm_bindgen(getter, js_name = partRanges)]
    pub fn part_ranges(&self) -> Vec<f64> {
        self.layout.parts.iter().flat_map(|(_, range)| [range.start as f64, range.len() as f64]).collect()
    }

    /// Checks every part (against `digests`, the SHA-256 of each part in
    /// lowercase hex and in `partRanges`' order, when given; else by hashing
    /// it here) and loads the engine (the loader is used up).
    pub fn finish(self, digests: Option<Vec<String>>) -> Result<SearchEngine, JsError> {
        self.load(digests).map_err(js_error)
    }
}
