//! The single-file layout, for offline catalogs (kiosks, apps, fairs):
//!
//! | bytes | what |
//! |---|---|
//! | 0..8 | magic `VITRINE\0` |
//! | 8..12 | format version, u32 little-endian |
//! | 12..16 | manifest length `L`, u32 little-endian |
//! | 16..16+L | the manifest (JSON, as `manifest.json` of a folder) |
//! | then | the parts back to back, in the manifest's order, nothing after |
//!
//! The reader checks, in this order and before allocating anything sized by
//! the file: the total size and the manifest size against [`Limits`], the
//! magic bytes, the version (a newer one is reported before its manifest is
//! parsed), the manifest, each part's length ([`SingleFileLayout::read`]),
//! then ([`Bundle::from_fetched_parts`]) each part's sha256.

use std::collections::HashMap;
#[cfg(not(target_arch = "wasm32"))]
use std::path::Path;

use std::ops::Range;

use super::manifest::check_version;
use super::{Bundle, BundleContents, BundleError, FetchedPart, Limits, Manifest, PartName};

pub const MAGIC: &[u8; 8] = b"VITRINE\0";
const HEADER_BYTES: usize = 16;

impl BundleContents {
    /// The bundle as one file's bytes.
    pub fn to_single_file(&self) -> Result<Vec<u8>, BundleError> {
        let (manifest, parts) = self.encode()?;
        let manifest_json = serde_json::to_vec_pretty(&manifest).expect("a manifest serialises to memory");
        let manifest_len = u32::try_from(manifest_json.len()).map_err(|_| BundleError::TooLarge {
            what: "the manifest".into(),
            size: manifest_json.len() as u64,
            limit: u32::MAX.into(),
        })?;
        let mut out = Vec::with_capacity(HEADER_BYTES + manifest_json.len() + manifest.parts_bytes() as usize);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&manifest.format_version.to_le_bytes());
        out.extend_from_slice(&manifest_len.to_le_bytes());
        out.extend_from_slice(&manifest_json);
        for (_, bytes) in &parts {
            out.extend_from_slice(bytes);
        }
        Ok(out)
    }

    /// Writes [`BundleContents::to_single_file`] to `path` (through a
    /// temporary file beside it, so that `path` is never half written).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn write_single_file(&self, path: &Path) -> Result<(), BundleError> {
        let bytes = self.to_single_file()?;
        let io = |source| BundleError::Io { path: path.to_path_buf(), source };
        let temporary = path.with_extension("partial");
        std::fs::write(&temporary, bytes).map_err(io)?;
        std::fs::rename(&temporary, path).map_err(io)
    }
}

impl Bundle {
    /// Reads a single-file bundle from its bytes.
    pub fn from_single_file(bytes: &[u8], limits: &Limits) -> Result<Self, BundleError> {
        SingleFileLayout::read(bytes, limits)?.into_bundle(bytes, None)
    }

    /// Reads a single-file bundle; a file over the size limit is rejected
    /// before it is read.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_single_file(path: &Path, limits: &Limits) -> Result<Self, BundleError> {
        let io = |source| BundleError::Io { path: path.to_path_buf(), source };
        let size = std::fs::metadata(path).map_err(io)?.len();
        if size > limits.max_total_bytes {
            return Err(BundleError::TooLarge { what: format!("{}", path.display()), size, limit: limits.max_total_bytes });
        }
        Bundle::from_single_file(&std::fs::read(path).map_err(io)?, limits)
    }
}

/// Where a single-file bundle's parts lie, once its header, manifest and part
/// lengths are checked: a caller that hashes the parts itself (a browser's
/// WebCrypto) reads the ranges, then hands the digests to
/// [`SingleFileLayout::into_bundle`].
pub struct SingleFileLayout {
    pub manifest: Manifest,
    /// Each part's name and byte range in the file, in the manifest's order.
    pub parts: Vec<(PartName, Range<usize>)>,
    /// The file's length, to tell it from other bytes.
    file_bytes: usize,
}

impl SingleFileLayout {
    /// Checks everything but the parts' hashes and contents.
    pub fn read(bytes: &[u8], limits: &Limits) -> Result<Self, BundleError> {
        let size = bytes.len() as u64;
        if size > limits.max_total_bytes {
            return Err(BundleError::TooLarge { what: "the bundle".into(), size, limit: limits.max_total_bytes });
        }
        let magic_seen = &bytes[..bytes.len().min(MAGIC.len())];
        if !MAGIC.starts_with(magic_seen) || magic_seen.is_empty() {
            return Err(BundleError::BadMagic { found: describe_start(bytes) });
        }
        if bytes.len() < HEADER_BYTES {
            return Err(BundleError::Truncated { what: "the file header".into(), expected: HEADER_BYTES as u64, found: size });
        }
        let word = |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let version = word(8);
        check_version(version)?;
        let manifest_len = u64::from(word(12));
        if manifest_len > limits.max_manifest_bytes {
            return Err(BundleError::TooLarge { what: "the manifest".into(), size: manifest_len, limit: limits.max_manifest_bytes });
        }
        let rest = &bytes[HEADER_BYTES..];
        if manifest_len > rest.len() as u64 {
            return Err(BundleError::Truncated { what: "the manifest".into(), expected: manifest_len, found: rest.len() as u64 });
        }
        let manifest_json = &rest[..manifest_len as usize];
        // The manifest checks its own version too.
        let manifest = Manifest::parse(manifest_json, limits)?;
        // Lengths first, so that a truncated file is reported as such, not as
        // a corrupt part.
        let mut parts = Vec::with_capacity(manifest.parts.len());
        let mut at = HEADER_BYTES + manifest_len as usize;
        for entry in &manifest.parts {
            let left = (bytes.len() - at) as u64;
            if entry.bytes > left {
                let what = format!("part `{}`", entry.name);
                return Err(BundleError::Truncated { what, expected: entry.bytes, found: left });
            }
            parts.push((entry.name, at..at + entry.bytes as usize));
            at += entry.bytes as usize;
        }
        if at < bytes.len() {
            return Err(BundleError::TrailingBytes { count: (bytes.len() - at) as u64 });
        }
        Ok(SingleFileLayout { manifest, parts, file_bytes: bytes.len() })
    }

    /// The bundle of `bytes` (the file this layout was read from): each part
    /// checked against `digests` (the caller's SHA-256 of each part, in the
    /// manifest's order) when given, else hashed here; then decoded.
    pub fn into_bundle(self, bytes: &[u8], digests: Option<Vec<String>>) -> Result<Bundle, BundleError> {
        let digests: Vec<Option<String>> = match digests {
            Some(digests) if digests.len() != self.parts.len() => {
                return Err(BundleError::Inconsistent(format!("{} digests for the {} parts", digests.len(), self.parts.len())));
            }
            Some(digests) => digests.into_iter().map(Some).collect(),
            None => vec![None; self.parts.len()],
        };
        if bytes.len() != self.file_bytes {
            return Err(BundleError::Inconsistent(format!("{} bytes are not the file this layout was read from", bytes.len())));
        }
        let parts: HashMap<_, _> = self
            .parts
            .into_iter()
            .zip(digests)
            .map(|((name, range), sha256)| (name, FetchedPart { bytes: bytes[range].to_vec(), sha256 }))
            .collect();
        Bundle::from_fetched_parts(self.manifest, parts)
    }
}

/// The first bytes of a file, printable, for an error message.
fn describe_start(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "nothing (the file is empty)".into();
    }
    format!("{:?}", String::from_utf8_lossy(&bytes[..bytes.len().min(MAGIC.len())]))
}
