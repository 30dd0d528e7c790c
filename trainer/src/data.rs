//! The pretraining data pipeline: tokenised texts, image inputs (photos decoded
//! and augmented in parallel, or cached feature maps of a frozen image
//! encoder), and the per-task parts of each batch (masks, codes, targets).
//!
//! Every random choice of a step comes from an RNG seeded by (run seed, step),
//! so a resumed run draws exactly what the uninterrupted run drew.

use std::path::PathBuf;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use tch::{Device, Kind, Tensor};
use vitrine_core::metrics::text_twins;
use vitrine_core::text::Encoding;

use crate::image::{ImageError, ImageTransform};
use crate::losses::IGNORE;
use crate::masking::{drop_tokens, patch_block, whole_word_mask, MaskTokens};
use crate::schedule::Task;

/// The tensors of one pretraining step. `features` and the text are always present; the
/// optional parts belong to the task named in `task`.
#[derive(Debug)]
pub struct PretextBatch {
    pub task: Task,
    /// The examples' positions in the set (columns of its [`ItcBank`]).
    pub positions: Vec<usize>,
    /// Image feature maps `[B, C, 7, 7]` (or images `[B, 3, 224, 224]` when the
    /// model has its image encoder).
    pub images: Tensor,
    pub ids: Tensor,
    pub text_mask: Tensor,
    /// MVC: the second view, and the masks with 25% of tokens dropped.
    pub second_view: Option<Tensor>,
    pub mvc_text_mask: Option<Tensor>,
    pub mvc_visual_mask: Option<Tensor>,
    /// MLM: masked ids and labels (`IGNORE` where nothing is predicted).
    pub mlm_ids: Option<Tensor>,
    pub mlm_labels: Option<Tensor>,
    /// MPFC: 1 on masked patches `[B, 49]`, and the codes to predict there.
    pub mpfc_mask: Option<Tensor>,
    pub mpfc_labels: Option<Tensor>,
    /// PAC: soft targets `[B, attributes]`.
    pub pac_targets: Option<Tensor>,
}

impl PretextBatch {
    /// A batch of images and texts only; the task's own parts are added after.
    pub fn new(task: Task, positions: &[usize], images: Tensor, ids: Tensor, text_mask: Tensor) -> PretextBatch {
        PretextBatch {
            task,
            positions: positions.to_vec(),
            images,
            ids,
            text_mask,
            second_view: None,
            mvc_text_mask: None,
            mvc_visual_mask: None,
            mlm_ids: None,
            mlm_labels: None,
            mpfc_mask: None,
            mpfc_labels: None,
            pac_targets: None,
        }
    }
}

/// Where a batch's image inputs come from.
pub enum ImageSource {
    /// Photos, decoded per step with a random crop and flip (training) — the
    /// `gpu` recipe. `views[i]` lists the photos of example i: MVC's second
    /// view is another photo when there is one, else another augmentation.
    Photos { views: Vec<Vec<PathBuf>>, transform: ImageTransform },
    /// Feature maps of a frozen image encoder (the `cpu` recipe): `maps` holds
    /// one `[C, 7, 7]` map per catalog photo (the cache shared with
    /// fine-tuning), and example i reads row `rows[i]`. Augmentation is a
    /// horizontal flip of the grid.
    Features { maps: Tensor, rows: Vec<i64> },
}

/// ITC's negative bank while the image encoder is frozen: every example's
/// pooled feature map, and each example's text twins (other examples with the
/// same tokens: no text tells them apart, so they are no negatives).
pub struct ItcBank {
    /// `[N, C]`, row i for example i.
    pub features: Tensor,
    pub text_twins: Vec<Vec<usize>>,
}

/// Everything the pretext tasks read, one entry per training example.
pub struct PretrainSet {
    pub encodings: Vec<Encoding>,
    pub images: ImageSource,
    /// Image tokenizer codes `[N, 49]` of the unaugmented image (MPFC).
    pub codes: Option<Tensor>,
    /// Pseudo-attribute ids of each example (PAC) and the vocabulary size.
    pub attributes: Vec<Vec<usize>>,
    pub attribute_count: usize,
    pub mask_tokens: MaskTokens,
    pub pad_id: i64,
}

/// Share of text and patch tokens MVC drops; share of word tokens MLM masks;
/// patches MPFC masks.
const MVC_DROP: f64 = 0.25;
const MLM_RATE: f64 = 0.15;
const MPFC_PATCHES: usize = 8;

/// Pads id lists with `pad_id` into `[B, T]` ids and a `[B, T]` mask.
pub fn pad_ids(rows: impl Iterator<Item = Vec<i64>>, pad_id: i64) -> (Tensor, Tensor) {
    let rows: Vec<Vec<i64>> = rows.collect();
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(rows.len() * width);
    let mut mask = Vec::with_capacity(rows.len() * width);
    for row in &rows {
        ids.extend(row.iter().copied().chain(std::iter::repeat_n(pad_id, width - row.len())));
        mask.extend((0..width).map(|t| i64::from(t < row.len())));
    }
    let shape = [rows.len() as i64, width as i64];
    (Tensor::from_slice(&ids).view(shape), Tensor::from_slice(&mask).view(shape))
}

impl PretrainSet {
    pub fn len(&self) -> usize {
        self.encodings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.encodings.is_empty()
    }

    /// The ITC bank of every example, when the images are cached maps:
    /// `pool` gives the pooled features `[rows, C]` of the maps at store rows
    /// (the model's [`crate::model::fashionvil::FashionVil::pooled_cached_features`]).
    pub fn itc_bank(&self, pool: impl FnOnce(&Tensor, &[i64]) -> Tensor) -> Option<ItcBank> {
        let ImageSource::Features { maps, rows } = &self.images else { return None };
        let text_twins = text_twins(&self.encodings.iter().map(|encoding| &encoding.ids).collect::<Vec<_>>());
        Some(ItcBank { features: pool(maps, rows), text_twins })
    }

    /// The batch of `task` for the examples at `positions`.
    pub fn batch(&self, task: Task, positions: &[usize], rng: &mut ChaCha8Rng, device: Device) -> Result<PretextBatch, ImageError> {
        let (ids, text_mask) = self.pad(positions.iter().map(|&i| self.encodings[i].ids.iter().map(|&t| i64::from(t)).collect()));
        // MPFC predicts codes of the unaugmented image, so its view is not flipped.
        let (images, second_view) = self.images(positions, task == Task::Mpfc, task == Task::Mvc, rng)?;
        let mut batch = PretextBatch::new(task, positions, images.to_device(device), ids.to_device(device), text_mask.to_device(device));
        batch.second_view = second_view.map(|v| v.to_device(device));
        let width = batch.ids.size()[1] as usize;
        match task {
            Task::Mvc => {
                let mut text_keep = Vec::new();
                let mut visual_keep = Vec::new();
                for &i in positions {
                    let mut keep: Vec<bool> = (0..width).map(|t| t < self.encodings[i].ids.len()).collect();
                    drop_tokens(&mut keep, MVC_DROP, &[0], rng);
                    text_keep.extend(keep.iter().map(|&k| i64::from(k)));
                    let mut patches = vec![true; 49];
                    drop_tokens(&mut patches, MVC_DROP, &[], rng);
                    visual_keep.extend(patches.iter().map(|&k| i64::from(k)));
                }
                batch.mvc_text_mask = Some(Tensor::from_slice(&text_keep).view([positions.len() as i64, width as i64]).to_device(device));
                batch.mvc_visual_mask = Some(Tensor::from_slice(&visual_keep).view([positions.len() as i64, 49]).to_device(device));
            }
            Task::Mlm => {
                let mut masked_ids = Vec::new();
                let mut labels = Vec::new();
                for &i in positions {
                    let enc = &self.encodings[i];
                    let ids: Vec<i64> = enc.ids.iter().map(|&t| i64::from(t)).collect();
                    let (input, label) = whole_word_mask(&ids, &enc.word_ids, MLM_RATE, self.mask_tokens, rng);
                    masked_ids.push(input);
                    labels.push(label);
                }
                let (mlm_ids, _) = self.pad(masked_ids.into_iter());
                let labels: Vec<i64> = labels
                    .into_iter()
                    .flat_map(|mut l| {
                        l.resize(width, IGNORE);
                        l
                    })
                    .collect();
                batch.mlm_ids = Some(mlm_ids.to_device(device));
                batch.mlm_labels = Some(Tensor::from_slice(&labels).view([positions.len() as i64, width as i64]).to_device(device));
            }
            Task::Mpfc => {
                let codes = self.codes.as_ref().expect("MPFC needs the image tokenizer's codes");
                let index = Tensor::from_slice(&positions.iter().map(|&p| p as i64).collect::<Vec<_>>());
                let codes = codes.index_select(0, &index);
                let mut mask = vec![0i64; positions.len() * 49];
                for row in 0..positions.len() {
                    for patch in patch_block(7, MPFC_PATCHES, rng) {
                        mask[row * 49 + patch] = 1;
                    }
                }
                let mask = Tensor::from_slice(&mask).view([positions.len() as i64, 49]);
                let labels = codes.where_self(&mask.eq(1), &Tensor::from(IGNORE));
                batch.mpfc_mask = Some(mask.to_device(device));
                batch.mpfc_labels = Some(labels.to_device(device));
            }
            Task::Pac => {
                let mut targets = vec![0f32; positions.len() * self.attribute_count];
                for (row, &i) in positions.iter().enumerate() {
                    let attrs = &self.attributes[i];
                    for &a in attrs {
                        targets[row * self.attribute_count + a] = 1.0 / attrs.len() as f32;
                    }
                }
                let targets = Tensor::from_slice(&targets).view([positions.len() as i64, self.attribute_count as i64]);
                batch.pac_targets = Some(targets.to_device(device));
            }
            Task::Itc | Task::Itm => {}
        }
        Ok(batch)
    }

    fn pad(&self, rows: impl Iterator<Item = Vec<i64>>) -> (Tensor, Tensor) {
        pad_ids(rows, self.pad_id)
    }

    /// The first view of each example and, for MVC, a second one.
    fn images(&self, positions: &[usize], plain: bool, second: bool, rng: &mut ChaCha8Rng) -> Result<(Tensor, Option<Tensor>), ImageError> {
        match &self.images {
            ImageSource::Features { maps, rows } => {
                let index = Tensor::from_slice(&positions.iter().map(|&p| rows[p]).collect::<Vec<_>>());
                let picked = maps.index_select(0, &index).to_kind(Kind::Float);
                let flips: Vec<bool> = positions.iter().map(|_| !plain && rng.gen_bool(0.5)).collect();
                let first = flip_rows(&picked, &flips);
                // The second view is the mirror image of the first.
                let second = second.then(|| flip_rows(&picked, &flips.iter().map(|f| !f).collect::<Vec<_>>()));
                Ok((first, second))
            }
            ImageSource::Photos { views, transform } => {
                let seeds: Vec<(u64, u64)> = positions.iter().map(|_| (rng.gen(), rng.gen())).collect();
                let load = |pick_other: bool| -> Result<Tensor, ImageError> {
                    let tensors = positions
                        .par_iter()
                        .zip(&seeds)
                        .map(|(&i, &(seed_a, seed_b))| {
                            let photos = &views[i];
                            let mut local = ChaCha8Rng::seed_from_u64(if pick_other { seed_b } else { seed_a });
                            let photo =
                                if pick_other && photos.len() > 1 { &photos[1 + local.gen_range(0..photos.len() - 1)] } else { &photos[0] };
                            if plain {
                                transform.eval(photo)
                            } else {
                                transform.train(photo, &mut local)
                            }
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok(Tensor::stack(&tensors, 0))
                };
                let first = load(false)?;
                let second = if second { Some(load(true)?) } else { None };
                Ok((first, second))
            }
        }
    }
}

/// Mirrors the rows of `[B, C, H, W]` whose flag is set (along W).
fn flip_rows(x: &Tensor, flips: &[bool]) -> Tensor {
    if !flips.iter().any(|f| *f) {
        return x.shallow_clone();
    }
    let flags = Tensor::from_slice(&flips.iter().map(|&f| i64::from(f)).collect::<Vec<_>>()).view([-1, 1, 1, 1]).to_device(x.device());
    x.flip([3]).where_self(&flags.eq(1), x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{epoch_order, step_rng};

    fn set(n: usize) -> PretrainSet {
        let encodings = (0..n)
            .map(|i| {
                let len = 4 + i % 3;
                let ids: Vec<u32> = (0..len as u32)
                    .map(|t| {
                        if t == 0 {
                            101
                        } else if t as usize == len - 1 {
                            102
                        } else {
                            1000 + t
                        }
                    })
                    .collect();
                let word_ids = (0..len).map(|t| if t == 0 || t == len - 1 { None } else { Some(t as u32 - 1) }).collect();
                Encoding { attention_mask: vec![1; len], ids, word_ids }
            })
            .collect();
        let features = Tensor::arange((n * 8 * 49) as i64, (Kind::Float, Device::Cpu)).view([n as i64, 8, 7, 7]);
        PretrainSet {
            encodings,
            images: ImageSource::Features { maps: features, rows: (0..n as i64).collect() },
            codes: Some(Tensor::arange((n * 49) as i64, (Kind::Int64, Device::Cpu)).view([n as i64, 49]).remainder(16)),
            attributes: (0..n).map(|i| vec![i % 3, 3]).collect(),
            attribute_count: 4,
            mask_tokens: MaskTokens { mask: 103, vocab_size: 2000 },
            pad_id: 0,
        }
    }

    #[test]
    fn the_itc_bank_pools_every_example_and_pairs_identical_texts() {
        let data = set(6);
        let bank = data
            .itc_bank(|maps, rows| maps.index_select(0, &Tensor::from_slice(rows)).sum_dim_intlist(&[-2i64, -1][..], false, Kind::Float))
            .expect("cached features make a bank");
        let ImageSource::Features { maps, .. } = &data.images else { unreachable!() };
        assert!(bank.features.allclose(&maps.sum_dim_intlist(&[-2i64, -1][..], false, Kind::Float), 1e-6, 1e-6, false));
        // Texts repeat with period 3 in `set`.
        assert_eq!(bank.text_twins, vec![vec![3], vec![4], vec![5], vec![0], vec![1], vec![2]]);
    }

    #[test]
    fn batches_carry_what_their_task_needs() {
        let data = set(6);
        let mut rng = step_rng(1, 0);
        let positions = [0, 2, 4];
        for task in Task::ALL {
            let b = data.batch(task, &positions, &mut rng, Device::Cpu).unwrap();
            assert_eq!(b.ids.size(), [3, 6]);
            assert_eq!(i64::try_from(b.text_mask.sum(Kind::Int64)).unwrap(), 4 + 6 + 5);
            assert_eq!(b.images.size(), [3, 8, 7, 7]);
            assert_eq!(b.second_view.is_some(), task == Task::Mvc);
            assert_eq!(b.mlm_labels.is_some(), task == Task::Mlm);
            assert_eq!(b.mpfc_labels.is_some(), task == Task::Mpfc);
            assert_eq!(b.pac_targets.is_some(), task == Task::Pac);
        }
        let b = data.batch(Task::Mpfc, &positions, &mut rng, Device::Cpu).unwrap();
        let mask = b.mpfc_mask.unwrap();
        assert_eq!(Vec::<i64>::try_from(mask.sum_dim_intlist(1, false, Kind::Int64)).unwrap(), [8, 8, 8]);
        let labels = b.mpfc_labels.unwrap();
        assert_eq!(i64::try_from(labels.ne(IGNORE).sum(Kind::Int64)).unwrap(), 24);
        // MPFC images are unflipped: the cached rows themselves.
        assert!(b.images.equal(&data.images_of(&positions)));
        let b = data.batch(Task::Pac, &positions, &mut rng, Device::Cpu).unwrap();
        let t = b.pac_targets.unwrap();
        assert!(t.sum_dim_intlist(1, false, Kind::Float).allclose(&Tensor::ones([3], (Kind::Float, Device::Cpu)), 1e-6, 1e-6, false));
        let b = data.batch(Task::Mvc, &positions, &mut rng, Device::Cpu).unwrap();
        assert!(b.second_view.unwrap().equal(&b.images.flip([3])), "the second view mirrors the first");
    }

    #[test]
    fn same_seed_and_step_give_the_same_batch() {
        let data = set(6);
        let a = data.batch(Task::Mlm, &[1, 3], &mut step_rng(9, 5), Device::Cpu).unwrap();
        let b = data.batch(Task::Mlm, &[1, 3], &mut step_rng(9, 5), Device::Cpu).unwrap();
        assert!(a.mlm_ids.unwrap().equal(&b.mlm_ids.unwrap()) && a.images.equal(&b.images));
        assert_eq!(epoch_order(10, 3, 1), epoch_order(10, 3, 1));
        assert_ne!(epoch_order(10, 3, 1), epoch_order(10, 3, 2));
    }

    impl PretrainSet {
        fn images_of(&self, positions: &[usize]) -> Tensor {
            let ImageSource::Features { maps, rows } = &self.images else { unreachable!() };
            maps.index_select(0, &Tensor::from_slice(&positions.iter().map(|&p| rows[p]).collect::<Vec<_>>()))
        }
    }
}
