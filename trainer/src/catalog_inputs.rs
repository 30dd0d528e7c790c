//! The catalog as model inputs: every item's tokenised text (and caption),
//! its photo's visual input (cached feature maps of the frozen encoder, or
//! the photo itself), the examples of each downstream task in a split, and
//! the model's queries over them (TGIR, CR/SCR, OCIR) that fine-tuning,
//! evaluation and the index builder share.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};
use vitrine_core::catalog::{attr, Catalog, Split};
use vitrine_core::metrics::text_twins;
use vitrine_core::tasks::{outfit_questions, tgir_triplets, Labels};
use vitrine_core::text::Tokenizer;

use crate::data::pad_ids;
use crate::error::TrainError;
use crate::image::ImageTransform;
use crate::model::fashionvil::FashionVil;
use crate::recipe::{ImageEncoderMode, Recipe};
use crate::schedule::Downstream;

/// Outfit items fed to the OCIR head per question (the largest baskets are cut).
pub const MAX_OUTFIT_ITEMS: usize = 8;

/// Image inputs of every catalog item with a photo.
enum ItemImages {
    /// Feature maps of the frozen image encoder (the memory-mapped photo
    /// feature store) and the store row of each catalog row.
    Features { maps: Tensor, rows: Vec<i64> },
    /// First photo of each item, decoded per batch (the image encoder trains).
    Photos(Vec<PathBuf>),
}

/// Which text of an item the model reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemTexts {
    /// Title and description, as indexed and as the protocols query ([`vitrine_core::catalog::Item::text`]).
    Plain,
    /// For training: the caption with the structured attributes
    /// ([`vitrine_core::catalog::Item::caption`]) in [`CAPTION_SHARE`] of the
    /// draws, the plain text in the others, so the model learns the attribute
    /// words and still matches the plain texts shoppers and the protocols use.
    /// Evaluation inputs (no RNG) read the plain text.
    PlainAndCaptions,
}

/// Share of training draws that read an item's caption ([`ItemTexts::PlainAndCaptions`]).
pub const CAPTION_SHARE: f64 = 0.5;

/// The catalog as model inputs: one row per item with a photo.
pub struct CatalogInputs {
    /// Catalog item index of each row.
    pub items: Vec<usize>,
    row_of: HashMap<usize, usize>,
    images: ItemImages,
    /// Tokenised title and description of each row.
    texts: Vec<Vec<i64>>,
    /// Tokenised caption of each row ([`ItemTexts::PlainAndCaptions`]).
    captions: Option<Vec<Vec<i64>>>,
    pad_id: i64,
    transform: ImageTransform,
}

impl CatalogInputs {
    /// Tokenises every item's text (as `texts` says) and, with a frozen image
    /// encoder, computes (or reads from `cache`) its feature maps.
    pub fn new(
        catalog: &Catalog,
        texts: ItemTexts,
        tokenizer: &Tokenizer,
        recipe: &Recipe,
        image_weights: &Path,
        cache: &Path,
        device: Device,
    ) -> Result<CatalogInputs, TrainError> {
        let items = crate::prepare::items_with_photos(catalog);
        CatalogInputs::for_items(catalog, items, texts, tokenizer, recipe, image_weights, cache, device)
    }

    /// The same for some of the catalog's items (each with a photo), e.g. one
    /// shard of a large catalog.
    #[allow(clippy::too_many_arguments)]
    pub fn for_items(
        catalog: &Catalog,
        items: Vec<usize>,
        texts: ItemTexts,
        tokenizer: &Tokenizer,
        recipe: &Recipe,
        image_weights: &Path,
        cache: &Path,
        device: Device,
    ) -> Result<CatalogInputs, TrainError> {
        let row_of = items.iter().enumerate().map(|(row, &item)| (item, row)).collect();
        let tokenise = |text: fn(&vitrine_core::catalog::Item) -> String| {
            items
                .iter()
                .map(|&i| tokenizer.encode(&text(&catalog.items[i])).map(|e| e.ids.iter().map(|&t| i64::from(t)).collect()))
                .collect::<Result<Vec<Vec<i64>>, _>>()
        };
        let captions = match texts {
            ItemTexts::Plain => None,
            ItemTexts::PlainAndCaptions => Some(tokenise(vitrine_core::catalog::Item::caption)?),
        };
        let texts = tokenise(vitrine_core::catalog::Item::text)?;
        let photos = crate::prepare::first_photos(catalog, &items);
        let images = match recipe.image_encoder {
            ImageEncoderMode::Frozen => {
                let features = crate::feature_store::frozen_features(
                    &photos,
                    recipe.image_backbone,
                    recipe.image_tail_layers,
                    image_weights,
                    cache,
                    device,
                )?;
                ItemImages::Features { maps: features.maps, rows: features.rows }
            }
            ImageEncoderMode::Trained => ItemImages::Photos(photos),
        };
        let pad_id = tokenizer.token_to_id("[PAD]").map(i64::from).ok_or(crate::prepare::PrepareError::MissingToken("[PAD]"))?;
        Ok(CatalogInputs { items, row_of, images, texts, captions, pad_id, transform: ImageTransform::default() })
    }

    pub fn row_of(&self, item: usize) -> Option<usize> {
        self.row_of.get(&item).copied()
    }

    /// Visual tokens `[B, 49, H]` of `rows`; `rng` (training) flips or crops them.
    pub fn visual_tokens(
        &self,
        model: &FashionVil,
        rows: &[usize],
        rng: Option<&mut ChaCha8Rng>,
        device: Device,
    ) -> Result<Tensor, TrainError> {
        let features = match &self.images {
            ItemImages::Features { maps, rows: store_rows } => {
                let index = Tensor::from_slice(&rows.iter().map(|&r| store_rows[r]).collect::<Vec<_>>());
                let picked = maps.index_select(0, &index).to_kind(Kind::Float);
                // Augmentation of a cached grid: a horizontal flip.
                let flip = rng.is_some_and(|rng| rng.gen_bool(0.5));
                let picked = if flip { picked.flip([3]) } else { picked };
                if picked.size()[1] != model.cached_channels() {
                    return Err(TrainError::File {
                        path: "recipe".into(),
                        reason: format!(
                            "the photo feature store holds {}-channel maps, the model reads {} (its image_tail_layers is {}): pass the recipe the model was trained with",
                            picked.size()[1],
                            model.cached_channels(),
                            model.config.image_tail_layers
                        ),
                    });
                }
                model.cached_features(&picked.to_device(device))
            }
            ItemImages::Photos(photos) => {
                let images = match rng {
                    Some(rng) => rows.iter().map(|&r| self.transform.train(&photos[r], rng)).collect::<Result<Vec<_>, _>>()?,
                    None => rows.iter().map(|&r| self.transform.eval(&photos[r])).collect::<Result<Vec<_>, _>>()?,
                };
                model.image_features(&Tensor::stack(&images, 0).to_device(device), true)
            }
        };
        Ok(model.visual_tokens(&features))
    }

    /// Padded ids and mask of `texts`.
    pub fn pad(&self, texts: impl Iterator<Item = Vec<i64>>, device: Device) -> (Tensor, Tensor) {
        let (ids, mask) = pad_ids(texts, self.pad_id);
        (ids.to_device(device), mask.to_device(device))
    }

    /// Padded item texts of `rows`; with `rng` (training) and captions, each
    /// row reads its caption in [`CAPTION_SHARE`] of the draws.
    pub fn item_texts(&self, rows: &[usize], mut rng: Option<&mut ChaCha8Rng>, device: Device) -> (Tensor, Tensor) {
        let texts: Vec<Vec<i64>> = rows.iter().map(|&r| self.text_of(r, rng.as_deref_mut())).collect();
        self.pad(texts.into_iter(), device)
    }

    fn text_of(&self, row: usize, rng: Option<&mut ChaCha8Rng>) -> Vec<i64> {
        let caption = self.captions.as_ref().filter(|_| rng.is_some_and(|rng| rng.gen_bool(CAPTION_SHARE)));
        caption.map_or(&self.texts[row], |captions| &captions[row]).clone()
    }

    /// The features of `rows`' cached maps, mean-pooled `[rows, C]` (f32) on
    /// `device` ([`FashionVil::pooled_cached_features`]): through
    /// [`FashionVil::pooled_image_embedding`], the image embeddings of all of
    /// them at once, the negative bank of a frozen encoder. `None` when the
    /// encoder trains (a bank of photos would cost a pass over each of them
    /// per step).
    pub fn pooled_features(&self, model: &FashionVil, rows: &[usize], device: Device) -> Option<Tensor> {
        match &self.images {
            ItemImages::Features { maps, rows: store_rows } => {
                Some(model.pooled_cached_features(maps, &rows.iter().map(|&r| store_rows[r]).collect::<Vec<_>>(), device))
            }
            ItemImages::Photos(_) => None,
        }
    }

    /// TGIR queries of (modification text, reference row).
    pub fn tgir_query(
        &self,
        model: &FashionVil,
        references: &[usize],
        modifications: impl Iterator<Item = Vec<i64>>,
        rng: Option<&mut ChaCha8Rng>,
        train: bool,
        device: Device,
    ) -> Result<Tensor, TrainError> {
        let tokens = self.visual_tokens(model, references, rng, device)?;
        let (ids, mask) = self.pad(modifications, device);
        Ok(model.tgir_query(&ids, &mask, &tokens, train))
    }

    /// Pooled fused output of each row's text and image (the CR/SCR heads' input).
    pub fn fused_pooled(
        &self,
        model: &FashionVil,
        rows: &[usize],
        mut rng: Option<&mut ChaCha8Rng>,
        train: bool,
        device: Device,
    ) -> Result<Tensor, TrainError> {
        let texts: Vec<Vec<i64>> = rows.iter().map(|&r| self.text_of(r, rng.as_deref_mut())).collect();
        let tokens = self.visual_tokens(model, rows, rng, device)?;
        let (ids, mask) = self.pad(texts.into_iter(), device);
        Ok(model.fused_pooled(&ids, &mask, &tokens, train))
    }

    /// OCIR queries of outfits.
    pub fn ocir_query(
        &self,
        model: &FashionVil,
        outfits: &[&OcirExample],
        rng: Option<&mut ChaCha8Rng>,
        device: Device,
    ) -> Result<Tensor, TrainError> {
        let rows: Vec<usize> = outfits.iter().flat_map(|e| e.outfit.iter().copied()).collect();
        let outfit_of: Vec<i64> = outfits.iter().enumerate().flat_map(|(i, e)| std::iter::repeat_n(i as i64, e.outfit.len())).collect();
        let items = model.image_embedding(&self.visual_tokens(model, &rows, rng, device)?);
        let categories = Tensor::from_slice(&outfits.iter().map(|e| e.category as i64).collect::<Vec<_>>()).to_device(device);
        Ok(model.ocir_query(&items, &Tensor::from_slice(&outfit_of).to_device(device), &categories))
    }
}

/// A TGIR example as rows and a tokenised modification text.
#[derive(Debug, Clone)]
pub struct TgirExample {
    pub reference: usize,
    pub target: usize,
    pub modification: Vec<i64>,
    /// Rows of the reference's colour siblings that do not look like the
    /// target (the reference included): the negatives the evaluation gallery
    /// holds, kept in the training softmax.
    pub siblings: Vec<usize>,
}

/// Colour siblings per TGIR example in the training softmax (the largest groups are cut).
pub const MAX_TGIR_SIBLINGS: usize = 6;

/// An OCIR example as rows: outfit items, the answer and its category class.
#[derive(Debug, Clone)]
pub struct OcirExample {
    pub outfit: Vec<usize>,
    pub answer: usize,
    pub category: usize,
}

/// The examples of every downstream task in one split, as rows of [`CatalogInputs`].
pub struct SplitExamples {
    /// Rows of the split's items (XMR pairs: each item's photo and text).
    pub rows: Vec<usize>,
    /// Position in `rows` of each of its rows.
    pub position_of: HashMap<usize, usize>,
    /// Per position in `rows`: the other positions whose item has the same
    /// text (colour siblings sold under one title and description). No text
    /// tells them apart, so they are never each other's negatives.
    pub text_twins: Vec<Vec<usize>>,
    /// (row, category class, subcategory class) of items whose labels the heads know.
    pub labelled: Vec<(usize, usize, usize)>,
    pub tgir: Vec<TgirExample>,
    pub ocir: Vec<OcirExample>,
}

impl SplitExamples {
    pub fn new(
        catalog: &Catalog,
        labels: &Labels,
        inputs: &CatalogInputs,
        tokenizer: &Tokenizer,
        split: Split,
    ) -> Result<SplitExamples, TrainError> {
        let rows: Vec<usize> = catalog.items_in(split).filter_map(|(i, _)| inputs.row_of(i)).collect();
        let subcategory_of: HashMap<usize, usize> = labels.subcategory.get(&split).into_iter().flatten().copied().collect();
        let labelled = labels
            .category
            .get(&split)
            .into_iter()
            .flatten()
            .filter_map(|&(item, category)| Some((inputs.row_of(item)?, category, *subcategory_of.get(&item)?)))
            .collect();
        let mut groups: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, item) in catalog.items_in(split) {
            groups.entry(item.group_id.as_str()).or_default().push(i);
        }
        let looks = |i: usize| {
            let item = &catalog.items[i];
            (item.attribute(attr::COLOUR), item.attribute(attr::PRINT))
        };
        let mut tgir = Vec::new();
        for triplet in tgir_triplets(catalog).into_iter().filter(|t| t.split == split) {
            let (Some(reference), Some(target)) = (inputs.row_of(triplet.reference), inputs.row_of(triplet.target)) else { continue };
            let modification = tokenizer.encode(&triplet.modification)?.ids.iter().map(|&t| i64::from(t)).collect();
            let group = &groups[catalog.items[triplet.reference].group_id.as_str()];
            // The reference first, so a cut never drops it.
            let others = group.iter().copied().filter(|&i| i != triplet.reference);
            let siblings = std::iter::once(triplet.reference)
                .chain(others)
                .filter(|&i| i != triplet.target && looks(i) != looks(triplet.target))
                .filter_map(|i| inputs.row_of(i))
                .take(MAX_TGIR_SIBLINGS)
                .collect();
            tgir.push(TgirExample { reference, target, modification, siblings });
        }
        let category_class: HashMap<&str, usize> = labels.categories.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
        let ocir = outfit_questions(catalog)
            .into_iter()
            .filter(|q| q.split == split)
            .filter_map(|q| {
                let outfit: Vec<usize> = q.context.iter().filter_map(|&i| inputs.row_of(i)).take(MAX_OUTFIT_ITEMS).collect();
                let category = *category_class.get(q.category.as_str())?;
                (!outfit.is_empty()).then_some(OcirExample { outfit, answer: inputs.row_of(q.answer)?, category })
            })
            .collect();
        let position_of: HashMap<usize, usize> = rows.iter().enumerate().map(|(p, &r)| (r, p)).collect();
        let text_twins = text_twins(&rows.iter().map(|&r| &inputs.texts[r]).collect::<Vec<_>>());
        Ok(SplitExamples { rows, position_of, text_twins, labelled, tgir, ocir })
    }

    pub(crate) fn count(&self, task: Downstream) -> usize {
        match task {
            Downstream::Xmr => self.rows.len(),
            Downstream::Tgir => self.tgir.len(),
            Downstream::Cr => self.labelled.len(),
            Downstream::Ocir => self.ocir.len(),
        }
    }
}
