//! Embedding a catalog with the full model.
//!
//! Items with a photo are split round-robin into `n` shards; a shard's items
//! are embedded in chunks, each written atomically as
//! `<out>/shard-<i>-of-<n>/chunk-<c>.safetensors` (`items`: catalog indices,
//! `image` and `text`: f32 embeddings), so a killed job resumes at its first
//! missing chunk. Each shard folder holds a `manifest.json` naming the model
//! and the catalog it was made from; resuming into a folder of another model
//! or catalog is refused. [`merge`] joins the shards of a finished run.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};
use vitrine_core::catalog::Catalog;
use vitrine_core::hash::{fnv1a64, Fnv1a};
use vitrine_trainer::catalog_inputs::CatalogInputs;
use vitrine_trainer::error::TrainError;
use vitrine_trainer::prepare::items_with_photos;
use vitrine_trainer::teacher::Finetuned;

/// Items embedded per forward pass (and per chunk file, times [`BATCHES_PER_CHUNK`]).
const BATCH: usize = 64;
const BATCHES_PER_CHUNK: usize = 16;

/// Errors of embedding; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Tensors { path: PathBuf, source: tch::TchError },
    #[error("{folder} holds embeddings of another {what}; delete it or choose another --out")]
    Mismatch { folder: PathBuf, what: &'static str },
    #[error("shard `{0}`: expected i/n with 0 <= i < n, e.g. 0/4")]
    BadShard(String),
    #[error("{folder}: shard {index} of {count} is missing or unfinished; run `vitrine-index embed --shard {index}/{count}` first")]
    MissingShard { folder: PathBuf, index: usize, count: usize },
}

fn file_err(path: &Path) -> impl Fn(std::io::Error) -> EmbedError + '_ {
    move |e| EmbedError::File { path: path.to_path_buf(), reason: e.to_string() }
}

/// Shard `index` of `count` (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    fn folder(self, out: &Path) -> PathBuf {
        out.join(format!("shard-{}-of-{}", self.index, self.count))
    }
}

impl FromStr for Shard {
    type Err = EmbedError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || EmbedError::BadShard(s.to_string());
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

/// What a shard folder was made from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ShardManifest {
    /// FNV-1a of the checkpoint's manifest (which lists the sha256 of its weights).
    model: String,
    /// FNV-1a of the catalog's item ids in order.
    catalog: String,
    shard: Shard,
    items: usize,
    dims: usize,
}

/// FNV-1a of the catalog's item ids, in order.
pub fn catalog_fingerprint(catalog: &Catalog) -> String {
    let hash = catalog.items.iter().fold(Fnv1a::default(), |h, it| h.write(it.id.as_bytes()).write(&[0]));
    format!("{:016x}", hash.finish())
}

fn model_fingerprint(checkpoint: &Path) -> Result<String, EmbedError> {
    let path = checkpoint.join("manifest.json");
    let bytes = std::fs::read(&path).map_err(file_err(&path))?;
    Ok(format!("{:016x}", fnv1a64(&bytes)))
}

/// The items of `shard`: every `count`-th item with a photo, starting at `index`.
pub fn shard_items(catalog: &Catalog, shard: Shard) -> Vec<usize> {
    items_with_photos(catalog).into_iter().skip(shard.index).step_by(shard.count).collect()
}

/// What [`embed_shard`] did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmbedSummary {
    pub items: usize,
    pub chunks: usize,
    /// Chunks found complete from an earlier run.
    pub reused_chunks: usize,
    pub items_per_s: f64,
}

/// Embeds the items of `shard` with `model` into `out`, reusing finished chunks.
pub fn embed_shard(
    model: &Finetuned,
    checkpoint: &Path,
    catalog: &Catalog,
    inputs: &CatalogInputs,
    shard: Shard,
    out: &Path,
    device: Device,
) -> Result<EmbedSummary, EmbedError> {
    let folder = shard.folder(out);
    std::fs::create_dir_all(&folder).map_err(file_err(&folder))?;
    let items = shard_items(catalog, shard);
    let manifest = ShardManifest {
        model: model_fingerprint(checkpoint)?,
        catalog: catalog_fingerprint(catalog),
        shard,
        items: items.len(),
        dims: model.model.visual_projection.ws.size()[0] as usize,
    };
    let manifest_path = folder.join("manifest.json");
    match std::fs::read_to_string(&manifest_path) {
        Ok(text) => {
            let existing: ShardManifest = serde_json::from_str(&text)
                .map_err(|e| EmbedError::File { path: manifest_path.clone(), reason: format!("{e}; delete the folder to start again") })?;
            if existing.model != manifest.model {
                return Err(EmbedError::Mismatch { folder, what: "model" });
            }
            if existing != manifest {
                return Err(EmbedError::Mismatch { folder, what: "catalog or shard" });
            }
        }
        Err(_) => write_atomically(&manifest_path, serde_json::to_string_pretty(&manifest).expect("manifest serialises").as_bytes())?,
    }

    let chunk_len = BATCH * BATCHES_PER_CHUNK;
    let chunks: Vec<&[usize]> = items.chunks(chunk_len).collect();
    let bar = indicatif::ProgressBar::new(items.len() as u64).with_prefix("embedding catalog");
    bar.set_style(indicatif::ProgressStyle::with_template("{prefix} {bar:30} {pos}/{len} eta {eta}").expect("valid template"));
    let started = std::time::Instant::now();
    let (mut reused, mut computed) = (0, 0);
    for (c, chunk) in chunks.iter().enumerate() {
        let path = folder.join(format!("chunk-{c:06}.safetensors"));
        if read_chunk(&path).is_ok_and(|(found, ..)| found == chunk.iter().map(|&i| i as i64).collect::<Vec<_>>()) {
            reused += 1;
            bar.inc(chunk.len() as u64);
            continue;
        }
        let rows: Vec<usize> = chunk.iter().map(|&i| inputs.row_of(i).expect("shard items have photos")).collect();
        let (mut images, mut texts) = (Vec::new(), Vec::new());
        for batch in rows.chunks(BATCH) {
            tch::no_grad(|| -> Result<(), TrainError> {
                let tokens = inputs.visual_tokens(&model.model, batch, None, device)?;
                images.push(model.model.image_embedding(&tokens).to_kind(Kind::Float).to_device(Device::Cpu));
                let (ids, mask) = inputs.item_texts(batch, None, device);
                texts.push(model.model.text_embedding(&ids, &mask, false).to_kind(Kind::Float).to_device(Device::Cpu));
                Ok(())
            })?;
            bar.inc(batch.len() as u64);
        }
        let indices = Tensor::from_slice(&chunk.iter().map(|&i| i as i64).collect::<Vec<_>>());
        let tmp = path.with_extension("tmp");
        Tensor::write_safetensors(&[("items", indices), ("image", Tensor::cat(&images, 0)), ("text", Tensor::cat(&texts, 0))], &tmp)
            .map_err(|source| EmbedError::Tensors { path: tmp.clone(), source })?;
        std::fs::rename(&tmp, &path).map_err(file_err(&path))?;
        computed += chunk.len();
        tracing::info!("embedded chunk {} of {}", c + 1, chunks.len());
    }
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    Ok(EmbedSummary {
        items: items.len(),
        chunks: chunks.len(),
        reused_chunks: reused,
        items_per_s: if seconds > 0.0 { computed as f64 / seconds } else { 0.0 },
    })
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), EmbedError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(file_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(file_err(path))
}

/// A chunk's catalog indices and embeddings.
fn read_chunk(path: &Path) -> Result<(Vec<i64>, Tensor, Tensor), EmbedError> {
    let tensors = Tensor::read_safetensors(path).map_err(|source| EmbedError::Tensors { path: path.to_path_buf(), source })?;
    let get = |name: &str| {
        tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t.shallow_clone()).ok_or_else(|| EmbedError::File {
            path: path.to_path_buf(),
            reason: format!("no `{name}` tensor; delete the chunk to recompute it"),
        })
    };
    let items = Vec::<i64>::try_from(get("items")?).map_err(|source| EmbedError::Tensors { path: path.to_path_buf(), source })?;
    Ok((items, get("image")?, get("text")?))
}

/// The embeddings of a catalog, in catalog order of the items with a photo.
pub struct Embeddings {
    pub items: Vec<usize>,
    pub image: Tensor,
    pub text: Tensor,
}

/// Joins the `count` shards in `out` (all finished, same model and catalog).
pub fn merge(out: &Path, count: usize, catalog: &Catalog) -> Result<Embeddings, EmbedError> {
    let mut model = None;
    let mut parts: Vec<(Vec<i64>, Tensor, Tensor)> = Vec::new();
    for index in 0..count {
        let shard = Shard { index, count };
        let folder = shard.folder(out);
        let missing = || EmbedError::MissingShard { folder: folder.clone(), index, count };
        let manifest_path = folder.join("manifest.json");
        let manifest: ShardManifest =
            serde_json::from_str(&std::fs::read_to_string(&manifest_path).map_err(|_| missing())?).map_err(|_| missing())?;
        if manifest.catalog != catalog_fingerprint(catalog) {
            return Err(EmbedError::Mismatch { folder, what: "catalog" });
        }
        if model.get_or_insert_with(|| manifest.model.clone()) != &manifest.model {
            return Err(EmbedError::Mismatch { folder, what: "model" });
        }
        let chunks = manifest.items.div_ceil(BATCH * BATCHES_PER_CHUNK);
        let mut found = 0;
        for c in 0..chunks {
            let part = read_chunk(&folder.join(format!("chunk-{c:06}.safetensors"))).map_err(|_| missing())?;
            found += part.0.len();
            parts.push(part);
        }
        if found != manifest.items {
            return Err(missing());
        }
    }
    // Parts concatenated in reading order, then rows put in catalog order.
    let items: Vec<i64> = parts.iter().flat_map(|(items, ..)| items.iter().copied()).collect();
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_unstable_by_key(|&r| items[r]);
    let index = Tensor::from_slice(&order.iter().map(|&r| r as i64).collect::<Vec<_>>());
    let image = Tensor::cat(&parts.iter().map(|p| p.1.shallow_clone()).collect::<Vec<_>>(), 0).index_select(0, &index);
    let text = Tensor::cat(&parts.iter().map(|p| p.2.shallow_clone()).collect::<Vec<_>>(), 0).index_select(0, &index);
    Ok(Embeddings { items: order.iter().map(|&r| items[r] as usize).collect(), image, text })
}
