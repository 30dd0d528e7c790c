//! The manifest: what a bundle holds and how to check it. The same JSON is
//! `manifest.json` of a bundle folder and the header of a single-file bundle.
//!
//! ```json
//! {
//!   "format": "vitrine-bundle",
//!   "format_version": 2,
//!   "created_by": "vitrine 0.1.0",
//!   "model_config": { ... },
//!   "dims": 256,
//!   "items": 11800,
//!   "categories": ["Bags", "Dresses", "Shoes"],
//!   "parts": [
//!     {"name": "index", "file": "index.3fa29b01c2d4e5f6.bin", "bytes": 3412345, "sha256": "3fa29b01…"},
//!     ...
//!   ]
//! }
//! ```
//!
//! A part's file is `<name>.<first 16 hex digits of its sha256>.<extension>`,
//! so a changed part gets a new name and a CDN may cache every part forever;
//! only `manifest.json` changes in place.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{BundleError, Limits};

/// The format this code writes, and the newest it reads (it reads every
/// older one). Version 2 added 4-bit text encoder matrices and the index's
/// optional refinement codes.
pub const FORMAT_NAME: &str = "vitrine-bundle";
pub const FORMAT_VERSION: u32 = 2;

/// The parts of a bundle; each is listed exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartName {
    /// The text encoder's weights (safetensors).
    TextEncoder,
    /// The fusion heads' weights (safetensors).
    Heads,
    /// `tokenizer.json`.
    Tokenizer,
    /// The ANN index ([`crate::index::AnnIndex::to_bytes`]).
    Index,
    /// Product metadata, one JSON object a line.
    Products,
}

impl PartName {
    /// Every part, in the order a writer lays them out.
    pub const ALL: [PartName; 5] = [PartName::TextEncoder, PartName::Heads, PartName::Tokenizer, PartName::Index, PartName::Products];

    pub fn as_str(self) -> &'static str {
        match self {
            PartName::TextEncoder => "text_encoder",
            PartName::Heads => "heads",
            PartName::Tokenizer => "tokenizer",
            PartName::Index => "index",
            PartName::Products => "products",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            PartName::TextEncoder | PartName::Heads => "safetensors",
            PartName::Tokenizer => "json",
            PartName::Index => "bin",
            PartName::Products => "jsonl",
        }
    }

    /// The file name of this part with the given content hash.
    pub fn file_name(self, sha256: &str) -> String {
        format!("{}.{}.{}", self.as_str(), &sha256[..16.min(sha256.len())], self.extension())
    }
}

impl std::fmt::Display for PartName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One part: its name, file, length and content hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartEntry {
    pub name: PartName,
    pub file: String,
    pub bytes: u64,
    /// Lowercase hex.
    pub sha256: String,
}

impl PartEntry {
    pub fn describe(name: PartName, content: &[u8]) -> Self {
        let sha256 = sha256_hex(content);
        PartEntry { name, file: name.file_name(&sha256), bytes: content.len() as u64, sha256 }
    }
}

/// The lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    /// The vitrine version that wrote the bundle, e.g. `vitrine 0.1.0`.
    pub created_by: String,
    /// The model's configuration, as the index builder wrote it.
    pub model_config: serde_json::Value,
    /// Dimensions of the compact space (query and item vectors).
    pub dims: usize,
    /// Number of products (and indexed items).
    pub items: usize,
    /// Category names; the index's category ids index this list.
    pub categories: Vec<String>,
    pub parts: Vec<PartEntry>,
}

/// The two fields read first, so that a newer format is reported as such
/// even when the rest of its manifest looks different.
#[derive(Deserialize)]
struct FormatProbe {
    format: String,
    format_version: u32,
}

impl Manifest {
    /// Reads and checks a manifest: its size, format and version, that every
    /// part is listed once with a well-formed hash and file name, and that
    /// the parts together stay within `limits`.
    pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Self, BundleError> {
        if bytes.len() as u64 > limits.max_manifest_bytes {
            return Err(BundleError::TooLarge { what: "the manifest".into(), size: bytes.len() as u64, limit: limits.max_manifest_bytes });
        }
        let probe: FormatProbe = serde_json::from_slice(bytes).map_err(BundleError::Manifest)?;
        if probe.format != FORMAT_NAME {
            return Err(BundleError::NotABundle { found: probe.format });
        }
        check_version(probe.format_version)?;
        let manifest: Manifest = serde_json::from_slice(bytes).map_err(BundleError::Manifest)?;
        manifest.check(limits)?;
        Ok(manifest)
    }

    fn check(&self, limits: &Limits) -> Result<(), BundleError> {
        for name in PartName::ALL {
            match self.parts.iter().filter(|p| p.name == name).count() {
                0 => return Err(BundleError::MissingPart { part: name }),
                1 => {}
                _ => return Err(BundleError::DuplicatePart { part: name }),
            }
        }
        for part in &self.parts {
            if part.sha256.len() != 64 || !part.sha256.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return Err(BundleError::BadHash { part: part.name, found: part.sha256.clone() });
            }
            // Also keeps a folder reader inside its folder: no separators, no `..`.
            let expected = part.name.file_name(&part.sha256);
            if part.file != expected {
                return Err(BundleError::BadFileName { part: part.name, found: part.file.clone(), expected });
            }
        }
        let total = self.parts.iter().try_fold(0u64, |sum, p| sum.checked_add(p.bytes)).unwrap_or(u64::MAX);
        if total > limits.max_total_bytes {
            return Err(BundleError::TooLarge { what: "the bundle (all parts)".into(), size: total, limit: limits.max_total_bytes });
        }
        Ok(())
    }

    /// The entry of a part (every part has one in a checked manifest).
    pub fn part(&self, name: PartName) -> Option<&PartEntry> {
        self.parts.iter().find(|p| p.name == name)
    }

    /// The bytes of all parts together.
    pub fn parts_bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.bytes).sum()
    }
}

/// Whether this reader reads format `version`.
pub(super) fn check_version(version: u32) -> Result<(), BundleError> {
    match version {
        0 => Err(BundleError::UnknownVersion { found: version }),
        v if v > FORMAT_VERSION => Err(BundleError::NewerVersion { found: v, supported: FORMAT_VERSION }),
        _ => Ok(()),
    }
}
