//! The folder layout, what a CDN serves: `manifest.json` and one file per part
//! named `<part>.<sha256 prefix>.<extension>` ([`super::PartName::file_name`]).
//! Parts never change under their name, so they may be cached forever; a new
//! bundle written into the same folder adds its new parts and then replaces
//! `manifest.json` in one rename, so a reader sees the old bundle or the new
//! one, never a mix. In the browser the engine fetches `manifest.json`, then
//! each listed file, and calls [`super::Manifest::parse`] and
//! [`super::Bundle::from_parts`]; `Bundle::read_folder` does the same from a
//! local folder.

#[cfg(not(target_arch = "wasm32"))]
use std::{collections::HashMap, path::Path};

#[cfg(not(target_arch = "wasm32"))]
use super::{Bundle, BundleContents, BundleError, Limits, Manifest};

/// The manifest's file name in a bundle folder.
pub const MANIFEST_FILE: &str = "manifest.json";

#[cfg(not(target_arch = "wasm32"))]
impl BundleContents {
    /// Writes the bundle into `dir` (created if needed): the parts first,
    /// then `manifest.json` through a rename. Returns the manifest.
    pub fn write_folder(&self, dir: &Path) -> Result<Manifest, BundleError> {
        let (manifest, parts) = self.encode()?;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BundleError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        for ((_, bytes), entry) in parts.iter().zip(&manifest.parts) {
            let path = dir.join(&entry.file);
            std::fs::write(&path, bytes).map_err(io(&path))?;
        }
        let temporary = dir.join(format!("{MANIFEST_FILE}.partial"));
        std::fs::write(&temporary, serde_json::to_vec_pretty(&manifest).expect("a manifest serialises to memory"))
            .map_err(io(&temporary))?;
        let path = dir.join(MANIFEST_FILE);
        std::fs::rename(&temporary, &path).map_err(io(&path))?;
        Ok(manifest)
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl Bundle {
    /// Reads a bundle folder. Every file's size is checked against the
    /// manifest and the limits before it is read.
    pub fn read_folder(dir: &Path, limits: &Limits) -> Result<Self, BundleError> {
        Bundle::read_manifest_file(&dir.join(MANIFEST_FILE), limits)
    }

    /// Reads the bundle that a manifest file lists, its parts in the same
    /// folder: a bundle folder's `manifest.json`, or one of the content-named
    /// manifests of a publish folder (vitrine-publish), where several
    /// versions share one folder of parts.
    pub fn read_manifest_file(manifest_path: &Path, limits: &Limits) -> Result<Self, BundleError> {
        let dir = manifest_path.parent().unwrap_or(Path::new("."));
        let manifest_bytes = read_at_most(manifest_path, limits.max_manifest_bytes, "the manifest")?;
        let manifest = Manifest::parse(&manifest_bytes, limits)?;
        let mut parts = HashMap::new();
        for entry in &manifest.parts {
            // The manifest check allows only `<part>.<hex>.<extension>`: the path stays in `dir`.
            let path = dir.join(&entry.file);
            let size = match std::fs::metadata(&path) {
                Ok(metadata) => metadata.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(BundleError::MissingPartFile { part: entry.name, path }),
                Err(source) => return Err(BundleError::Io { path, source }),
            };
            let what = || format!("part `{}` ({})", entry.name, path.display());
            if size < entry.bytes {
                return Err(BundleError::Truncated { what: what(), expected: entry.bytes, found: size });
            }
            if size > entry.bytes {
                return Err(BundleError::LongerThanListed { what: what(), expected: entry.bytes, found: size });
            }
            let bytes = std::fs::read(&path).map_err(|source| BundleError::Io { path: path.clone(), source })?;
            parts.insert(entry.name, bytes);
        }
        Bundle::from_parts(manifest, parts)
    }
}

/// Reads a file of at most `limit` bytes; a larger one is rejected unread.
#[cfg(not(target_arch = "wasm32"))]
fn read_at_most(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>, BundleError> {
    let io = |source| BundleError::Io { path: path.to_path_buf(), source };
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > limit {
        return Err(BundleError::TooLarge { what: format!("{what} ({})", path.display()), size, limit });
    }
    std::fs::read(path).map_err(io)
}
