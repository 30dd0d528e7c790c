//! Turns a catalog into a [`PretrainSet`]: the train split's texts tokenised,
//! pseudo-attributes mined, image tokenizer codes and (for a frozen image
//! encoder) feature maps computed once and cached in the run folder.

use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Tensor};
use vitrine_core::catalog::{Catalog, Split};
use vitrine_core::hash::Fnv1a;
use vitrine_core::text::Tokenizer;

use crate::data::{ImageSource, PretrainSet};
use crate::feature_store::{frozen_features, FeatureStoreError, PhotoFeatures};
use crate::image::ImageTransform;
use crate::masking::MaskTokens;
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
    #[error(transparent)]
    Features(#[from] FeatureStoreError),
    #[error("image code cache {path}: {source}")]
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

/// Image tokenizer codes (`[N, 49]`) of the eval view of each photo, computed
/// in batches and cached in `cache` under a name that encodes the photo list
/// and the tokenizer, so a resumed or repeated pretraining skips the work.
fn image_codes(photos: &[PathBuf], tokenizer: &VqVae, cache: &Path, device: Device) -> Result<Tensor, PrepareError> {
    let key = fingerprint(photos, tokenizer.fingerprint());
    let codes_path = cache.join(format!("codes-{key:016x}.safetensors"));
    if codes_path.is_file() {
        return read_codes(&codes_path);
    }
    std::fs::create_dir_all(cache).map_err(cache_io(cache))?;
    let transform = ImageTransform::default();
    let mut codes = Vec::new();
    let bar = crate::progress::bar(photos.len(), "image tokenizer codes");
    for chunk in photos.chunks(32) {
        let images = transform.eval_batch(chunk)?.to_device(device);
        codes.push(tch::no_grad(|| tokenizer.encode(&images)).to_device(Device::Cpu));
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let tmp = codes_path.with_extension("tmp");
    Tensor::write_safetensors(&[("codes", Tensor::cat(&codes, 0))], &tmp)
        .map_err(|source| PrepareError::Cache { path: tmp.clone(), source })?;
    std::fs::rename(&tmp, &codes_path).map_err(cache_io(&codes_path))?;
    read_codes(&codes_path)
}

fn cache_io(path: &Path) -> impl Fn(std::io::Error) -> PrepareError + '_ {
    move |e| PrepareError::Cache { path: path.to_path_buf(), source: tch::TchError::Io(e) }
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

/// FNV-1a over the photo paths and the tokenizer.
fn fingerprint(photos: &[PathBuf], tokenizer: u64) -> u64 {
    let hash = photos.iter().fold(Fnv1a::default(), |h, p| h.write(p.as_os_str().as_encoded_bytes()).write(&[0]));
    hash.write(&tokenizer.to_le_bytes()).finish()
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
    let encodings = examples.iter().map(|&i| tokenizer.encode(&catalog.items[i].caption())).collect::<Result<Vec<_>, _>>()?;
    let vocabulary = PacVocabulary::mine(examples.iter().map(|&i| &catalog.items[i]), &recipe.pac);
    let attributes = examples.iter().map(|&i| vocabulary.attributes_of(&catalog.items[i])).collect();
    let images = if recipe.image_encoder == ImageEncoderMode::Frozen {
        let PhotoFeatures { maps, rows, .. } = frozen_features(
            &first_photos(catalog, &examples),
            recipe.image_backbone,
            recipe.image_tail_layers,
            image_weights,
            cache,
            device,
        )?;
        ImageSource::Features { maps, rows }
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
        Some(tokenizer) => Some(image_codes(&first_photos(catalog, &examples), tokenizer, cache, device)?),
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
