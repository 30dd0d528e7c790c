//! The search engine over a bundle: what the browser runs (through
//! `vitrine-wasm`) and what the index builder runs natively to evaluate a
//! bundle as the browser would see it.
//!
//! A query's text goes through the bundle's text encoder (int8) to a teacher
//! embedding, through the compact heads' projection to a unit vector in the
//! index's space, and then to the ANN index:
//! - [`Engine::search`]: text → items (optionally of one category);
//! - [`Engine::modify`] (TGIR): a product and a change in words → items of the
//!   product's category, without the product;
//! - [`Engine::complete_outfit`] (OCIR): an outfit's products and a category →
//!   items of that category, without the outfit's;
//! - [`Engine::category_intent`]: text → the categories it asks for.
//!
//! Queries and ids come from users of a storefront: every method checks them
//! and answers with an [`EngineError`], never a panic.

use std::sync::Mutex;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::bundle::{Bundle, Product};
use crate::index::{AnnIndex, IndexError, SearchParams};
use crate::model::bert::l2_normalize;
use crate::model::compact::{CompactConfig, CompactHeads, OptionalHead};
use crate::model::{LoadOptions, ModelError, TextEncoder};

pub use crate::index::Hit;

/// The longest query text, in bytes (UTF-8). A search box needs far less; the
/// limit keeps a pasted page from being tokenised at all (the tokenizer then
/// truncates to `max_query_tokens` anyway).
pub const MAX_QUERY_BYTES: usize = 1024;
/// The most products an outfit to complete may have.
pub const MAX_OUTFIT_ITEMS: usize = 16;

/// The bundle manifest's `model_config`, as the index builder writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleModelConfig {
    /// The text encoder checkpoint's `config.json`.
    pub text_encoder: serde_json::Value,
    pub compact: CompactConfig,
    /// Queries are truncated to this many tokens.
    pub max_query_tokens: usize,
    /// The graph search's beam width and re-rank count for this catalog
    /// (`SearchParams::default()`'s when absent): a large catalog of
    /// near-duplicates needs a wider beam for the same recall (bench/ann_wasm.sh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_ef: Option<usize>,
}

/// The widest beam a bundle may ask for: wider ones cost more than an exact scan of a large catalog.
pub const MAX_SEARCH_EF: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("the bundle's model config does not fit the bundle: {0}")]
    Config(String),
    #[error("invalid query: {0}")]
    Query(String),
    #[error("this bundle offers no {}: its catalog had no {} to learn it from", .0.feature(), missing_data(*.0))]
    NoHead(OptionalHead),
}

/// What a catalog lacks when a bundle has no `head`.
fn missing_data(head: OptionalHead) -> &'static str {
    match head {
        OptionalHead::Tgir => "colour variants, nor items that differ in one attribute",
        OptionalHead::Ocir => "baskets or outfits",
    }
}

/// A loaded bundle, ready to answer queries.
pub struct Engine {
    config: BundleModelConfig,
    text_encoder: TextEncoder,
    heads: CompactHeads,
    index: AnnIndex,
    products: Vec<Product>,
    categories: Vec<String>,
    /// The last query text and its vector: a search box asks for results and
    /// for the category intent of the same text, and the text encoder is most
    /// of a query's time.
    last_query: Mutex<Option<(String, Vec<f32>)>>,
}

impl Engine {
    /// Loads the text encoder and the heads of a bundle (as read, so its parts
    /// already agree with each other) after checking that the model config
    /// fits the index, the category list and the text encoder.
    pub fn from_bundle(bundle: Bundle) -> Result<Engine, EngineError> {
        let contents = bundle.contents;
        let config: BundleModelConfig =
            serde_json::from_value(contents.model_config).map_err(|e| EngineError::Config(format!("model_config: {e}")))?;
        let compact = &config.compact;
        compact.validate().map_err(|reason| EngineError::Config(format!("compact.{reason}")))?;
        if config.max_query_tokens == 0 {
            return Err(EngineError::Config("max_query_tokens is 0".to_string()));
        }
        if let Some(ef) = config.search_ef.filter(|ef| !(1..=MAX_SEARCH_EF).contains(ef)) {
            return Err(EngineError::Config(format!("search_ef is {ef}; it must be 1 to {MAX_SEARCH_EF}")));
        }
        if compact.dim != contents.index.dim() {
            return Err(EngineError::Config(format!(
                "compact.dim is {}, but the index's vectors have {} dimensions",
                compact.dim,
                contents.index.dim()
            )));
        }
        if compact.categories != contents.categories.len() {
            return Err(EngineError::Config(format!(
                "compact.categories is {}, but the bundle lists {} categories",
                compact.categories,
                contents.categories.len()
            )));
        }
        let encoder_config = serde_json::to_vec(&config.text_encoder).map_err(|e| EngineError::Config(format!("text_encoder: {e}")))?;
        // Int8 layers load as int8; nothing is quantised on load.
        let text_encoder = TextEncoder::from_bytes(
            &encoder_config,
            &contents.text_encoder,
            &contents.tokenizer,
            LoadOptions::default(),
            config.max_query_tokens,
        )?;
        if text_encoder.dim() != compact.teacher_dim {
            return Err(EngineError::Config(format!(
                "compact.teacher_dim is {}, but the text encoder's hidden size is {}",
                compact.teacher_dim,
                text_encoder.dim()
            )));
        }
        // Last, so that a config that does not fit the other parts is named
        // as such rather than as a shape of some head's tensor.
        let heads = CompactHeads::from_bytes(compact, &contents.heads, "the bundle's heads part")?;
        Ok(Engine {
            config,
            text_encoder,
            heads,
            index: contents.index,
            products: contents.products,
            categories: contents.categories,
            last_query: Mutex::new(None),
        })
    }

    pub fn config(&self) -> &BundleModelConfig {
        &self.config
    }

    /// Whether the bundle has `head` (the features a widget offers).
    pub fn has_head(&self, head: OptionalHead) -> bool {
        self.config.compact.has(head)
    }

    /// One per index item, in item order.
    pub fn products(&self) -> &[Product] {
        &self.products
    }

    /// Category names; category ids index this list.
    pub fn categories(&self) -> &[String] {
        &self.categories
    }

    pub fn index(&self) -> &AnnIndex {
        &self.index
    }

    /// The unit compact vector of a query text.
    pub fn embed_query(&self, text: &str) -> Result<Vec<f32>, EngineError> {
        if text.len() > MAX_QUERY_BYTES {
            return Err(EngineError::Query(format!("the query is {} bytes, over the limit of {MAX_QUERY_BYTES} bytes", text.len())));
        }
        if text.trim().is_empty() {
            return Err(EngineError::Query("the query is empty".to_string()));
        }
        // A poisoned lock only means another query panicked; the memo is
        // replaced whole, so whatever it holds is consistent.
        let mut last = self.last_query.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((last_text, vector)) = last.as_ref() {
            if last_text == text {
                return Ok(vector.clone());
            }
        }
        let teacher = self.text_encoder.embed(text)?;
        let teacher = Tensor::from_vec(teacher, (1, self.config.compact.teacher_dim), &Device::Cpu).map_err(ModelError::from)?;
        let vector = first_row(&self.heads.project(&teacher)?)?;
        *last = Some((text.to_string(), vector.clone()));
        Ok(vector)
    }

    /// The `k` items nearest to a query text (of `category`, when given), best first.
    pub fn search(&self, text: &str, k: usize, category: Option<u16>) -> Result<Vec<Hit>, EngineError> {
        if let Some(category) = category {
            self.check_category(category)?;
        }
        let query = self.embed_query(text)?;
        self.nearest(&query, k, category, &[])
    }

    /// The categories a query text asks for, as the category head's
    /// probabilities (summing to 1), most likely first.
    pub fn category_intent(&self, text: &str) -> Result<Vec<(u16, f32)>, EngineError> {
        let query = self.embed_query(text)?;
        let query = Tensor::from_vec(query, (1, self.config.compact.dim), &Device::Cpu).map_err(ModelError::from)?;
        let logits = self.heads.category.logits(&query)?;
        let probabilities = first_row(&candle_nn::ops::softmax_last_dim(&logits).map_err(ModelError::from)?)?;
        // `validate` caps the categories at 65536, so every id fits a u16.
        let mut intent: Vec<(u16, f32)> = probabilities.into_iter().enumerate().map(|(id, p)| (id as u16, p)).collect();
        intent.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(intent)
    }

    /// TGIR, "like this, but…": the `k` items of `item`'s category nearest to
    /// the query that the TGIR head makes of the item and the change asked
    /// for in `text`; the item itself is never among them.
    pub fn modify(&self, item: u32, text: &str, k: usize) -> Result<Vec<Hit>, EngineError> {
        let reference = self.item_vector(item)?;
        let query = self.tgir_query(&reference, text)?;
        let category = self.index.categories()[item as usize];
        self.nearest(&query, k, Some(category), &[item])
    }

    /// OCIR, complete the look: the `k` items of `category` nearest to the
    /// query that the OCIR head makes of the outfit's items; the outfit's own
    /// items are never among them.
    pub fn complete_outfit(&self, items: &[u32], category: u16, k: usize) -> Result<Vec<Hit>, EngineError> {
        check_outfit_size(items.len())?;
        for (i, item) in items.iter().enumerate() {
            if items[..i].contains(item) {
                return Err(EngineError::Query(format!("item {item} is in the outfit twice")));
            }
        }
        let vectors = items.iter().map(|&item| self.item_vector(item)).collect::<Result<Vec<_>, _>>()?;
        let query = self.ocir_query(&vectors, category)?;
        self.nearest(&query, k, Some(category), items)
    }

    /// The TGIR query of a compact product vector and a modification text.
    /// The vector is renormalised first: the heads were distilled on unit
    /// product vectors, and the index's int8 copies are a little off unit
    /// length; so the builder's evaluator, passing stored vectors, gets the
    /// queries [`Engine::modify`] searches with.
    pub fn tgir_query(&self, reference: &[f32], text: &str) -> Result<Vec<f32>, EngineError> {
        let head = self.heads.tgir.as_ref().ok_or(EngineError::NoHead(OptionalHead::Tgir))?;
        self.check_vector("the reference", reference)?;
        let text = self.embed_query(text)?;
        let dim = self.config.compact.dim;
        let reference = Tensor::from_slice(reference, (1, dim), &Device::Cpu).and_then(|r| l2_normalize(&r)).map_err(ModelError::from)?;
        let text = Tensor::from_vec(text, (1, dim), &Device::Cpu).map_err(ModelError::from)?;
        first_row(&head.forward(&reference, &text)?)
    }

    /// The OCIR query of an outfit's compact product vectors and the wanted
    /// category; each vector is renormalised first (as in [`Engine::tgir_query`]).
    pub fn ocir_query(&self, items: &[Vec<f32>], category: u16) -> Result<Vec<f32>, EngineError> {
        let head = self.heads.ocir.as_ref().ok_or(EngineError::NoHead(OptionalHead::Ocir))?;
        check_outfit_size(items.len())?;
        self.check_category(category)?;
        for (i, item) in items.iter().enumerate() {
            self.check_vector(&format!("outfit item {i}"), item)?;
        }
        let items = Tensor::from_vec(items.concat(), (items.len(), self.config.compact.dim), &Device::Cpu)
            .and_then(|items| l2_normalize(&items))
            .map_err(ModelError::from)?;
        let outfit_of = vec![0; items.dim(0).map_err(ModelError::from)?];
        first_row(&head.forward(&items, &outfit_of, &[u32::from(category)])?)
    }

    /// The `k` best items for a compact query, leaving out `excluded`.
    fn nearest(&self, query: &[f32], k: usize, category: Option<u16>, excluded: &[u32]) -> Result<Vec<Hit>, EngineError> {
        // No search finds more items than there are; a huge `k` from a caller
        // must not size the search's beam.
        let k = k.min(self.index.len());
        let params = match self.config.search_ef {
            Some(ef) => SearchParams { ef, rerank: ef, ..SearchParams::default() },
            None => SearchParams::default(),
        };
        let mut hits = self.index.search(query, k + excluded.len(), category, &params)?;
        hits.retain(|hit| !excluded.contains(&hit.item));
        hits.truncate(k);
        Ok(hits)
    }

    /// An item's stored vector (dequantised).
    fn item_vector(&self, item: u32) -> Result<Vec<f32>, EngineError> {
        self.index
            .item_vector(item)
            .ok_or_else(|| EngineError::Query(format!("unknown item {item}: the catalog has {} items", self.index.len())))
    }

    fn check_category(&self, category: u16) -> Result<(), EngineError> {
        if usize::from(category) >= self.categories.len() {
            return Err(EngineError::Query(format!("unknown category {category}: the catalog has {} categories", self.categories.len())));
        }
        Ok(())
    }

    fn check_vector(&self, what: &str, vector: &[f32]) -> Result<(), EngineError> {
        let dim = self.config.compact.dim;
        if vector.len() != dim {
            return Err(EngineError::Query(format!("{what} has {} dimensions, the compact space {dim}", vector.len())));
        }
        if vector.iter().any(|x| !x.is_finite()) {
            return Err(EngineError::Query(format!("{what} has a value that is not finite")));
        }
        Ok(())
    }
}

fn check_outfit_size(items: usize) -> Result<(), EngineError> {
    if items == 0 {
        return Err(EngineError::Query("the outfit has no items".to_string()));
    }
    if items > MAX_OUTFIT_ITEMS {
        return Err(EngineError::Query(format!("the outfit has {items} items, over the limit of {MAX_OUTFIT_ITEMS}")));
    }
    Ok(())
}

/// The only row of a `[1, n]` tensor.
fn first_row(t: &Tensor) -> Result<Vec<f32>, EngineError> {
    Ok(t.squeeze(0).and_then(|t| t.to_vec1()).map_err(ModelError::from)?)
}
