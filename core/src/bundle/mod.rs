//! The bundle: everything the browser engine loads to search a catalog, as
//! one versioned and checksummed unit. The index builder writes it; the
//! WebAssembly engine (and the native tools) read it. Each layout's reader and
//! writer live side by side and are tested against each other.
//!
//! Contents ([`BundleContents`]): the model config, the text encoder's and the
//! heads' weights (safetensors, opaque here), `tokenizer.json`, the ANN index
//! ([`crate::index`]; encoding in `index/encode.rs`), the product metadata
//! (JSON lines of [`Product`], in index item order) and the category names
//! that the index's category ids point into. The [`Manifest`] lists them with
//! their lengths and sha256 sums.
//!
//! Two layouts:
//! - a folder ([`folder`]): `manifest.json` and one file per part, named by
//!   its content hash (what a CDN serves; only the manifest changes in place);
//! - a single file ([`single_file`]) for offline catalogs: magic bytes,
//!   version, manifest length, manifest, then the parts back to back.
//!
//! Reading checks sizes against [`Limits`] before allocating, then lengths,
//! then hashes, then decodes the parts and checks that they agree (item
//! counts, dimensions, categories). Any damage gives a [`BundleError`] that
//! names the part and the problem; no input makes a reader panic or hang.

pub mod folder;
pub mod manifest;
mod products;
pub mod single_file;

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::index::AnnIndex;
pub use manifest::{sha256_hex, Manifest, PartEntry, PartName, FORMAT_NAME, FORMAT_VERSION};
pub use products::{decode_products, encode_products};

/// Size limits a reader enforces before it allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most bytes of a whole bundle (all parts, and the manifest).
    pub max_total_bytes: u64,
    pub max_manifest_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        // WebAssembly has 4 GiB of memory at most; a bundle is read whole.
        Limits { max_total_bytes: 1 << 30, max_manifest_bytes: 4 << 20 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("not a vitrine bundle: it starts with {found}, not the magic bytes {:?}", String::from_utf8_lossy(single_file::MAGIC))]
    BadMagic { found: String },
    #[error("{what} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { what: String, size: u64, limit: u64 },
    #[error("{what} is truncated: {expected} bytes expected, {found} present")]
    Truncated { what: String, expected: u64, found: u64 },
    #[error("{what} is {found} bytes, but the manifest says {expected}")]
    LongerThanListed { what: String, expected: u64, found: u64 },
    #[error("{count} bytes follow the last part of the bundle")]
    TrailingBytes { count: u64 },
    #[error("part `{part}` is corrupt: its sha256 is {actual}, the manifest says {expected}")]
    Corrupt { part: PartName, expected: String, actual: String },
    #[error("this bundle is format {found}; this reader reads up to {supported}: rebuild the bundle or update vitrine")]
    NewerVersion { found: u32, supported: u32 },
    #[error("this bundle claims format {found}, which no version of vitrine writes: the file is damaged or not a bundle")]
    UnknownVersion { found: u32 },
    #[error("not a vitrine bundle: the manifest's format is {found:?}, not {FORMAT_NAME:?}")]
    NotABundle { found: String },
    #[error("the manifest is not valid: {0}")]
    Manifest(serde_json::Error),
    #[error("the manifest lists no part `{part}`")]
    MissingPart { part: PartName },
    #[error("the manifest lists part `{part}` twice")]
    DuplicatePart { part: PartName },
    #[error("the manifest gives part `{part}` the sha256 {found:?}, not 64 lowercase hex digits")]
    BadHash { part: PartName, found: String },
    #[error("the manifest names part `{part}`'s file {found:?}; it must be {expected:?}")]
    BadFileName { part: PartName, found: String, expected: String },
    #[error("part `{part}` is missing: no file {}", path.display())]
    MissingPartFile { part: PartName, path: PathBuf },
    #[error("part `{part}` is invalid: {reason}")]
    InvalidPart { part: PartName, reason: String },
    #[error("the bundle is inconsistent: {0}")]
    Inconsistent(String),
}

/// One product as the storefront shows it; the bundle keeps them in the
/// order of the index's items.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    pub id: String,
    pub title: String,
    pub category: String,
    #[serde(default)]
    pub subcategory: String,
    /// Image URL, or a path relative to the bundle.
    #[serde(default)]
    pub image: String,
    /// Same garment in another colour or print share a group id.
    #[serde(default)]
    pub group_id: String,
}

/// The category list of a catalog (its distinct category names, sorted) and
/// each product's id in it: what [`crate::index::AnnIndex::build`] and
/// [`BundleContents::categories`] take.
pub fn category_ids(products: &[Product]) -> Result<(Vec<String>, Vec<u16>), BundleError> {
    let mut names: Vec<String> = products.iter().map(|p| p.category.clone()).collect();
    names.sort_unstable();
    names.dedup();
    if names.len() > usize::from(u16::MAX) + 1 {
        return Err(BundleError::Inconsistent(format!("{} categories, over the 65536 an index can tell apart", names.len())));
    }
    // Found, since every name came from a product.
    let ids = products.iter().map(|p| names.binary_search(&p.category).unwrap_or_default() as u16).collect();
    Ok((names, ids))
}

/// What a bundle holds, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct BundleContents {
    /// Opaque to the bundle: the model's configuration for the engine.
    pub model_config: serde_json::Value,
    /// Category names; `index.categories()` are indices into this list.
    pub categories: Vec<String>,
    /// safetensors bytes.
    pub text_encoder: Vec<u8>,
    /// safetensors bytes.
    pub heads: Vec<u8>,
    /// `tokenizer.json` bytes.
    pub tokenizer: Vec<u8>,
    pub index: AnnIndex,
    /// One per index item, in item order.
    pub products: Vec<Product>,
}

/// A bundle as read: its manifest and its decoded contents.
#[derive(Debug, Clone, PartialEq)]
pub struct Bundle {
    pub manifest: Manifest,
    pub contents: BundleContents,
}

impl BundleContents {
    /// Checks that the parts agree: one product per item, category names
    /// unique, and each item's category id naming its product's category.
    pub fn check(&self) -> Result<(), BundleError> {
        let (items, products) = (self.index.len(), self.products.len());
        if items != products {
            return Err(BundleError::Inconsistent(format!("the index has {items} items but there are {products} products")));
        }
        let mut names: Vec<&str> = self.categories.iter().map(String::as_str).collect();
        names.sort_unstable();
        if let Some(twice) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(BundleError::Inconsistent(format!("category {:?} is listed twice", twice[0])));
        }
        for (item, (product, &id)) in self.products.iter().zip(self.index.categories()).enumerate() {
            match self.categories.get(usize::from(id)) {
                Some(name) if *name == product.category => {}
                Some(name) => {
                    return Err(BundleError::Inconsistent(format!(
                        "item {item} (product {:?}) is in category {:?}, but the index files it under {name:?}",
                        product.id, product.category
                    )))
                }
                None => {
                    return Err(BundleError::Inconsistent(format!(
                        "item {item} has category id {id}, but there are {} categories",
                        self.categories.len()
                    )))
                }
            }
        }
        Ok(())
    }

    /// The encoded parts in layout order, and the manifest that lists them.
    pub(crate) fn encode(&self) -> Result<(Manifest, Vec<(PartName, Cow<'_, [u8]>)>), BundleError> {
        self.check()?;
        let parts: Vec<(PartName, Cow<[u8]>)> = PartName::ALL
            .into_iter()
            .map(|name| {
                let bytes = match name {
                    PartName::TextEncoder => Cow::Borrowed(self.text_encoder.as_slice()),
                    PartName::Heads => Cow::Borrowed(self.heads.as_slice()),
                    PartName::Tokenizer => Cow::Borrowed(self.tokenizer.as_slice()),
                    PartName::Index => Cow::Owned(self.index.to_bytes()),
                    PartName::Products => Cow::Owned(encode_products(&self.products)),
                };
                (name, bytes)
            })
            .collect();
        let manifest = Manifest {
            format: FORMAT_NAME.to_string(),
            format_version: FORMAT_VERSION,
            created_by: format!("vitrine {}", env!("CARGO_PKG_VERSION")),
            model_config: self.model_config.clone(),
            dims: self.index.dim(),
            items: self.index.len(),
            categories: self.categories.clone(),
            parts: parts.iter().map(|(name, bytes)| PartEntry::describe(*name, bytes)).collect(),
        };
        Ok((manifest, parts))
    }
}

impl Bundle {
    /// Assembles a bundle from a checked manifest and every part's bytes (as a
    /// browser fetches them: `manifest.json`, then each part's file): checks
    /// each part's length and hash, decodes the index and the products, and
    /// checks that everything agrees with the manifest and with each other.
    pub fn from_parts(manifest: Manifest, parts: HashMap<PartName, Vec<u8>>) -> Result<Self, BundleError> {
        Self::from_fetched_parts(manifest, parts.into_iter().map(|(name, bytes)| (name, FetchedPart { bytes, sha256: None })).collect())
    }

    /// [`Bundle::from_parts`] for parts whose SHA-256 the caller may already
    /// have computed: a given digest is compared with the manifest's instead
    /// of hashing the bytes again.
    pub fn from_fetched_parts(manifest: Manifest, mut parts: HashMap<PartName, FetchedPart>) -> Result<Self, BundleError> {
        let mut take = |name: PartName| -> Result<Vec<u8>, BundleError> {
            let entry = manifest.part(name).ok_or(BundleError::MissingPart { part: name })?;
            let part = parts.remove(&name).ok_or(BundleError::MissingPart { part: name })?;
            check_part(entry, &part.bytes, part.sha256.as_deref())?;
            Ok(part.bytes)
        };
        let text_encoder = take(PartName::TextEncoder)?;
        let heads = take(PartName::Heads)?;
        let tokenizer = take(PartName::Tokenizer)?;
        let index_bytes = take(PartName::Index)?;
        let product_bytes = take(PartName::Products)?;
        let invalid = |part: PartName| move |reason: String| BundleError::InvalidPart { part, reason };
        let index = AnnIndex::from_bytes(&index_bytes).map_err(|e| invalid(PartName::Index)(e.to_string()))?;
        let products = decode_products(&product_bytes).map_err(invalid(PartName::Products))?;
        let contents = BundleContents {
            model_config: manifest.model_config.clone(),
            categories: manifest.categories.clone(),
            text_encoder,
            heads,
            tokenizer,
            index,
            products,
        };
        if contents.index.dim() != manifest.dims || contents.index.len() != manifest.items {
            return Err(BundleError::Inconsistent(format!(
                "the manifest says {} items of {} dimensions, the index has {} of {}",
                manifest.items,
                manifest.dims,
                contents.index.len(),
                contents.index.dim()
            )));
        }
        contents.check()?;
        Ok(Bundle { manifest, contents })
    }
}

/// A part's bytes as fetched, with their SHA-256 (lowercase hex) when the
/// fetcher computed it: a browser's WebCrypto digest is many times faster
/// than hashing in WebAssembly.
pub struct FetchedPart {
    pub bytes: Vec<u8>,
    pub sha256: Option<String>,
}

/// Checks a part's bytes against its manifest entry: length, then sha256
/// (`sha256`, when the caller computed it; else the bytes' own).
pub(crate) fn check_part(entry: &PartEntry, bytes: &[u8], sha256: Option<&str>) -> Result<(), BundleError> {
    let (expected, found) = (entry.bytes, bytes.len() as u64);
    let what = || format!("part `{}`", entry.name);
    if found < expected {
        return Err(BundleError::Truncated { what: what(), expected, found });
    }
    if found > expected {
        return Err(BundleError::LongerThanListed { what: what(), expected, found });
    }
    let actual = sha256.map_or_else(|| sha256_hex(bytes), str::to_ascii_lowercase);
    if actual != entry.sha256 {
        return Err(BundleError::Corrupt { part: entry.name, expected: entry.sha256.clone(), actual });
    }
    Ok(())
}
