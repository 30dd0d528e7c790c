//! Turns a catalog into a [`PretrainSet`]: the train split's texts tokenised,
//! pseudo-attributes mined, image tokenizer codes and (for a frozen image
//! encoder) feature maps computed once and cached in the run folder.

use std::io::Write;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use tch::{nn, Device, Kind, Tensor};
use vitrine_core::catalog::{Catalog, Split};
use vitrine_core::hash::Fnv1a;
use vitrine_core::text::Tokenizer;

use crate::data::{ImageSource, PretrainSet};
use crate::image::ImageTransform;
use crate::masking::MaskTokens;
use crate::model::image_encoder::ImageEncoder;
use crate::pac::PacVocabulary;
use crate::recipe::{ImageEncoderMode, Recipe};
use crate::vqvae::VqVae;

/// Errors of preparing the training data; each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("the catalog has no train items with an image (is there a split file?)")]
    NoTrainItems,
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    #[error(transparent)]
    Text(#[from] vitrine_core::text::TextError),
    #[error("image encoder weights {path}: {reason} (run `cargo xtask setup` to fetch them)")]
    Weights { path: PathBuf, reason: String },
    #[error("feature cache {path}: {source}")]
    Cache { path: PathBuf, source: tch::TchError },
    #[error("the tokenizer has no `{0}` token")]
    MissingToken(&'static str),
}

/// The train examples: catalog item indices, in a fixed order.
pub fn train_examples(catalog: &Catalog, recipe: &Recipe) -> Vec<usize> {
    let mut items: Vec<usize> = catalog.items_in(Split::Train).filter(|(_, it)| !it.images.is_empty()).map(|(i, _)| i).collect();
    if let Some(limit) = recipe.max_examples.filter(|&m| m < items.len()) {
        items.shuffle(&mut ChaCha8Rng::seed_from_u64(recipe.seed));
        items.truncate(limit);
        items.sort_unstable();
    }
    items
}

/// The catalog items with a photo, in catalog order: the rows of the feature
/// cache that pretraining and fine-tuning share.
pub fn items_with_photos(catalog: &Catalog) -> Vec<usize> {
    (0..catalog.items.len()).filter(|&i| !catalog.items[i].images.is_empty()).collect()
}

/// The first image of each example, as a file path.
pub fn first_photos(catalog: &Catalog, examples: &[usize]) -> Vec<PathBuf> {
    examples.iter().map(|&i| catalog.image_path(&catalog.items[i].images[0]).unwrap_or_default()).collect()
}

pub(crate) fn progress(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64).with_prefix(what.to_string());
    bar.set_style(ProgressStyle::with_template("{prefix} {bar:30} {pos}/{len} eta {eta} {msg}").expect("valid template"));
    bar
}

/// Loads the eval view (resize, centre crop) of `paths` in parallel: `[B, 3, 224, 224]`.
pub fn load_eval_batch(paths: &[PathBuf], transform: &ImageTransform) -> Result<Tensor, crate::image::ImageError> {
    let images = paths.par_iter().map(|p| transform.eval(p)).collect::<Result<Vec<_>, _>>()?;
    Ok(Tensor::stack(&images, 0))
}

/// Per-example image tensors computed in batches from the eval view of each
/// photo: feature maps of the frozen encoder (`[N, C, 7, 7]`, f16) and/or
/// image tokenizer codes (`[N, 49]`). Cached in `cache` under a name that
/// encodes the photo list, so a resumed or repeated run skips the work.
///
/// Feature maps take ~125 KB per photo, so they are streamed to a raw f16 file
/// while computed and memory-mapped when read: the operating system pages them
/// in and out, and a large catalog does not have to fit in RAM.
pub(crate) fn image_tensors(
    photos: &[PathBuf],
    encoder: Option<&ImageEncoder>,
    tokenizer: Option<&VqVae>,
    cache: &Path,
    device: Device,
) -> Result<(Option<Tensor>, Option<Tensor>), PrepareError> {
    let key = fingerprint(photos, encoder.is_some(), tokenizer.map(|t| t.fingerprint()));
    let codes_path = cache.join(format!("codes-{key:016x}.safetensors"));
    let features_path = cache.join(format!("features-{key:016x}.f16"));
    let done_path = cache.join(format!("images-{key:016x}.done"));
    if done_path.is_file() {
        let features = encoder.map(|_| mapped_features(&features_path, photos.len())).transpose()?;
        let codes = match tokenizer {
            Some(_) => Some(read_codes(&codes_path)?),
            None => None,
        };
        return Ok((features, codes));
    }
    std::fs::create_dir_all(cache).map_err(cache_io(cache))?;
    let features_tmp = features_path.with_extension("tmp");
    let mut features_file = match encoder {
        Some(_) => Some(std::io::BufWriter::new(std::fs::File::create(&features_tmp).map_err(cache_io(&features_tmp))?)),
        None => None,
    };
    let transform = ImageTransform::default();
    let mut codes = Vec::new();
    let bar = progress(photos.len(), "encoding catalog photos");
    for chunk in photos.chunks(32) {
        let images = load_eval_batch(chunk, &transform)?.to_device(device);
        let features = tch::no_grad(|| encoder.map(|e| e.forward_features(&images, false).to_kind(Kind::Half).to_device(Device::Cpu)));
        if let (Some(features), Some(file)) = (features, features_file.as_mut()) {
            let mut bytes = vec![0u8; features.numel() * 2];
            features.contiguous().copy_data_u8(&mut bytes, features.numel());
            file.write_all(&bytes).map_err(cache_io(&features_tmp))?;
        }
        if let Some(tokenizer) = tokenizer {
            codes.push(tch::no_grad(|| tokenizer.encode(&images)).to_device(Device::Cpu));
        }
        bar.inc(chunk.len() as u64);
        if bar.is_hidden() && bar.position() % 1024 < 32 {
            tracing::info!(done = bar.position(), of = photos.len(), "encoding catalog photos");
        }
    }
    bar.finish_and_clear();
    if let Some(file) = features_file {
        file.into_inner().map_err(|e| e.into_error()).and_then(|f| f.sync_all()).map_err(cache_io(&features_tmp))?;
        std::fs::rename(&features_tmp, &features_path).map_err(cache_io(&features_path))?;
    }
    if !codes.is_empty() {
        let tmp = codes_path.with_extension("tmp");
        Tensor::write_safetensors(&[("codes", Tensor::cat(&codes, 0))], &tmp)
            .map_err(|source| PrepareError::Cache { path: tmp.clone(), source })?;
        std::fs::rename(&tmp, &codes_path).map_err(cache_io(&codes_path))?;
    }
    // Written last: the cache counts only once every part is in place.
    std::fs::write(&done_path, b"").map_err(cache_io(&done_path))?;
    image_tensors(photos, encoder, tokenizer, cache, device)
}

fn cache_io(path: &Path) -> impl Fn(std::io::Error) -> PrepareError + '_ {
    move |e| PrepareError::Cache { path: path.to_path_buf(), source: tch::TchError::Io(e) }
}

/// The cached feature maps `[N, C, 7, 7]` (f16), memory-mapped.
fn mapped_features(path: &Path, photos: usize) -> Result<Tensor, PrepareError> {
    let bytes = std::fs::metadata(path).map_err(cache_io(path))?.len() as usize;
    let per_photo = bytes / 2 / photos.max(1);
    if photos == 0 || bytes != photos * per_photo * 2 || per_photo % 49 != 0 {
        let reason = format!("{bytes} bytes do not hold {photos} feature maps of 7×7 f16 values; delete the file to recompute it");
        return Err(PrepareError::Cache { path: path.to_path_buf(), source: tch::TchError::FileFormat(reason) });
    }
    let name = path.to_str().ok_or_else(|| PrepareError::Cache {
        path: path.to_path_buf(),
        source: tch::TchError::FileFormat("the cache path is not UTF-8".into()),
    })?;
    let flat = Tensor::f_from_file(name, false, Some((bytes / 2) as i64), (Kind::Half, Device::Cpu))
        .map_err(|source| PrepareError::Cache { path: path.to_path_buf(), source })?;
    Ok(flat.view([photos as i64, (per_photo / 49) as i64, 7, 7]))
}

fn read_codes(path: &Path) -> Result<Tensor, PrepareError> {
    let cache_err = |source| PrepareError::Cache { path: path.to_path_buf(), source };
    let tensors = Tensor::read_safetensors(path).map_err(cache_err)?;
    tensors
        .into_iter()
        .find(|(name, _)| name == "codes")
        .map(|(_, t)| t)
        .ok_or_else(|| cache_err(tch::TchError::FileFormat("no `codes` tensor; delete the file to recompute it".into())))
}

/// FNV-1a over the photo paths and what is computed from them.
fn fingerprint(photos: &[PathBuf], features: bool, tokenizer: Option<u64>) -> u64 {
    let hash = photos.iter().fold(Fnv1a::default(), |h, p| h.write(p.as_os_str().as_encoded_bytes()).write(&[0]));
    hash.write(&[u8::from(features)]).write(&tokenizer.unwrap_or(0).to_le_bytes()).finish()
}

/// Builds the training set of `recipe` from `catalog`.
pub fn pretrain_set(
    catalog: &Catalog,
    recipe: &Recipe,
    tokenizer: &Tokenizer,
    image_weights: &Path,
    image_tokenizer: Option<&VqVae>,
    cache: &Path,
    device: Device,
) -> Result<(PretrainSet, PacVocabulary), PrepareError> {
    let examples = train_examples(catalog, recipe);
    if examples.is_empty() {
        return Err(PrepareError::NoTrainItems);
    }
    let encodings = examples.iter().map(|&i| tokenizer.encode(&catalog.items[i].text())).collect::<Result<Vec<_>, _>>()?;
    let vocabulary = PacVocabulary::mine(examples.iter().map(|&i| &catalog.items[i]), &recipe.pac);
    let attributes = examples.iter().map(|&i| vocabulary.attributes_of(&catalog.items[i])).collect();
    let frozen = recipe.image_encoder == ImageEncoderMode::Frozen;
    let encoder_vs = nn::VarStore::new(device);
    let images = if frozen {
        let root = encoder_vs.root() / "image_encoder";
        let encoder = ImageEncoder::pretrained(&encoder_vs, &root, recipe.image_backbone, image_weights)
            .map_err(|e| PrepareError::Weights { path: image_weights.to_path_buf(), reason: e.to_string() })?;
        let catalog_items = items_with_photos(catalog);
        let (maps, _) = image_tensors(&first_photos(catalog, &catalog_items), Some(&encoder), None, cache, device)?;
        let row_of: std::collections::HashMap<usize, i64> =
            catalog_items.iter().enumerate().map(|(row, &item)| (item, row as i64)).collect();
        ImageSource::Features { maps: maps.expect("features were asked for"), rows: examples.iter().map(|i| row_of[i]).collect() }
    } else {
        ImageSource::Photos {
            views: examples
                .iter()
                .map(|&i| catalog.items[i].images.iter().filter_map(|image| catalog.image_path(image)).collect())
                .collect(),
            transform: ImageTransform::default(),
        }
    };
    let codes = match image_tokenizer {
        Some(tokenizer) => image_tensors(&first_photos(catalog, &examples), None, Some(tokenizer), cache, device)?.1,
        None => None,
    };
    let token = |t: &'static str| tokenizer.token_to_id(t).map(i64::from).ok_or(PrepareError::MissingToken(t));
    let set = PretrainSet {
        encodings,
        images,
        codes,
        attributes,
        attribute_count: vocabulary.len(),
        mask_tokens: MaskTokens { mask: token("[MASK]")?, vocab_size: tokenizer.vocab_size() as i64 },
        pad_id: token("[PAD]")?,
    };
    Ok((set, vocabulary))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_cache_maps_what_was_written_and_rejects_a_truncated_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("features.f16");
        let features = Tensor::randn([3, 2, 7, 7], (Kind::Float, Device::Cpu)).to_kind(Kind::Half);
        let mut bytes = vec![0u8; features.numel() * 2];
        features.copy_data_u8(&mut bytes, features.numel());
        std::fs::write(&path, &bytes).unwrap();
        assert!(mapped_features(&path, 3).unwrap().equal(&features));

        std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
        let message = mapped_features(&path, 3).unwrap_err().to_string();
        assert!(message.contains("features.f16") && message.contains("do not hold 3 feature maps"), "{message}");
    }
}
