//! The browser's heads in the compact space: a learned projection of the
//! teacher's embedding space and three small heads distilled from the teacher
//! by the index builder (`index-builder/src/distill.rs`). The tch twin with the
//! same module and tensor names is `index-builder/src/heads.rs`.
//!
//! Tensors (f32), with `E` = `teacher_dim`, `D` = `dim`, `C` = `categories`:
//! - `projection.weight` `[D, E]` (no bias): teacher text embedding → compact;
//! - `tgir.{dense,output}.{weight,bias}` (`[D, 2D]`, `[D, D]`): the TGIR
//!   combiner, a residual on the reference product;
//! - `ocir.category_embeddings.weight` `[C, D]`, `ocir.{dense,output}.{weight,bias}`:
//!   the OCIR head, an outfit's mean direction and the wanted category;
//! - `category.{weight,bias}` `[C, D]`, `[C]`: the category head on a compact query.
//!
//! The TGIR and OCIR heads are there only when the config's `heads` lists
//! them: a catalog without variants or baskets cannot teach them.
//!
//! Every head's output that is a query is unit length, as the index's item
//! vectors are, so that its inner products with them are cosines.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::Linear;
use serde::{Deserialize, Serialize};

use super::bert::l2_normalize;
use super::weights::Weights;
use super::ModelError;

/// The compact space's shape, stored in the bundle's model config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompactConfig {
    /// Width of the teacher's embeddings (the text encoder's hidden size).
    pub teacher_dim: usize,
    /// Width of the compact space (default 256).
    pub dim: usize,
    /// Number of categories the OCIR and category heads know (the bundle's category list).
    pub categories: usize,
    /// Weight of the image embedding in a product vector (the text embedding gets `1 - image_weight`).
    pub image_weight: f32,
    /// The heads beside the projection and the category head (both, in a
    /// bundle written before the list was kept).
    #[serde(default = "OptionalHead::all")]
    pub heads: Vec<OptionalHead>,
}

/// A head a bundle may lack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptionalHead {
    /// "Like this, but …" (text-guided retrieval).
    Tgir,
    /// "Complete the look" (complementary item retrieval).
    Ocir,
}

impl OptionalHead {
    pub const ALL: [OptionalHead; 2] = [OptionalHead::Tgir, OptionalHead::Ocir];

    pub fn all() -> Vec<OptionalHead> {
        Self::ALL.to_vec()
    }

    /// Its name in the config, and its tensors' prefix (`tgir.…`).
    pub fn name(self) -> &'static str {
        match self {
            OptionalHead::Tgir => "tgir",
            OptionalHead::Ocir => "ocir",
        }
    }

    /// What the head does, for a shopper-facing message.
    pub fn feature(self) -> &'static str {
        match self {
            OptionalHead::Tgir => "\"like this, but …\"",
            OptionalHead::Ocir => "\"complete the look\"",
        }
    }
}

impl CompactConfig {
    pub fn has(&self, head: OptionalHead) -> bool {
        self.heads.contains(&head)
    }

    /// Checks the sizes before any tensor is read: a config from an untrusted
    /// bundle must fail naming its field, not as a shape mismatch of some tensor
    /// (or an overflow of `2 × dim`).
    pub fn validate(&self) -> Result<(), String> {
        let max_dim = crate::index::MAX_DIM;
        for (field, value) in [("teacher_dim", self.teacher_dim), ("dim", self.dim)] {
            if !(1..=max_dim).contains(&value) {
                return Err(format!("{field} is {value}; it must be 1 to {max_dim}"));
            }
        }
        // Category ids are u16 in the index.
        let max_categories = usize::from(u16::MAX) + 1;
        if !(1..=max_categories).contains(&self.categories) {
            return Err(format!("categories is {}; it must be 1 to {max_categories}", self.categories));
        }
        if !(0.0..=1.0).contains(&self.image_weight) {
            return Err(format!("image_weight is {}; it must be in 0..=1", self.image_weight));
        }
        if let Some(twice) = self.heads.iter().find(|h| self.heads.iter().filter(|o| o == h).count() > 1) {
            return Err(format!("heads lists {twice:?} twice"));
        }
        Ok(())
    }
}

/// The layer `name` with its f32 weight `[out_dim, in_dim]` and, when `bias`,
/// its bias `[out_dim]`. Not [`super::quant::Linear::load`]: the heads are f32,
/// and that loader takes a missing bias for a layer without one, where here a
/// missing bias is a broken file that must be named.
fn linear(w: &Weights, name: &str, in_dim: usize, out_dim: usize, bias: bool) -> Result<Linear, ModelError> {
    let weight = w.f32(&format!("{name}.weight"), &[out_dim, in_dim])?;
    let bias = if bias { Some(w.f32(&format!("{name}.bias"), &[out_dim])?) } else { None };
    Ok(Linear::new(weight, bias))
}

/// `x` as f32 after checking that it is `[B, width]`; returns `B` too. `what`
/// names the input in the error.
fn rows(what: &str, x: &Tensor, width: usize) -> Result<(Tensor, usize), ModelError> {
    match x.dims() {
        &[b, w] if w == width => Ok((x.to_dtype(DType::F32)?, b)),
        dims => Err(ModelError::Input(format!("{what} has shape {dims:?}; the head takes [B, {width}]"))),
    }
}

/// Reference product + modification text → query (TGIR, "like this, but…").
/// A residual on the reference: without a change asked for, the query stays
/// near the product.
#[derive(Debug, Clone)]
pub struct TgirCombiner {
    /// `[2D → D]` over `[reference, text]`.
    pub dense: Linear,
    /// `[D → D]`: the change added to the reference.
    pub output: Linear,
}

impl TgirCombiner {
    fn load(w: &Weights, dim: usize) -> Result<Self, ModelError> {
        Ok(TgirCombiner { dense: linear(w, "tgir.dense", 2 * dim, dim, true)?, output: linear(w, "tgir.output", dim, dim, true)? })
    }

    /// The unit query `[B, D]` of compact product vectors `reference [B, D]`
    /// and compact modification texts `text [B, D]`.
    pub fn forward(&self, reference: &Tensor, text: &Tensor) -> Result<Tensor, ModelError> {
        let dim = self.output.weight().dim(0)?;
        let (reference, b) = rows("the TGIR reference", reference, dim)?;
        let (text, bt) = rows("the TGIR text", text, dim)?;
        if b != bt {
            return Err(ModelError::Input(format!("TGIR: {b} references but {bt} texts")));
        }
        let input = Tensor::cat(&[&reference, &text], 1)?;
        let change = self.output.forward(&self.dense.forward(&input)?.gelu_erf()?)?;
        Ok(l2_normalize(&(reference + change)?)?)
    }
}

/// Outfit items + wanted category → query (OCIR, complete the look).
#[derive(Debug, Clone)]
pub struct OutfitCompleter {
    /// `[C, D]`.
    pub category_embeddings: Tensor,
    /// `[2D → D]` over `[outfit direction, category embedding]`.
    pub dense: Linear,
    pub output: Linear,
}

impl OutfitCompleter {
    fn load(w: &Weights, dim: usize, categories: usize) -> Result<Self, ModelError> {
        Ok(OutfitCompleter {
            category_embeddings: w.f32("ocir.category_embeddings.weight", &[categories, dim])?,
            dense: linear(w, "ocir.dense", 2 * dim, dim, true)?,
            output: linear(w, "ocir.output", dim, dim, true)?,
        })
    }

    /// The unit queries `[B, D]` of outfits given as compact item vectors
    /// `items [N, D]` with `outfit_of[n]` (row → outfit in `0..B`) and the
    /// wanted category of each outfit (`B` of them). Every outfit needs at
    /// least one item: an empty one has no direction.
    pub fn forward(&self, items: &Tensor, outfit_of: &[u32], categories: &[u32]) -> Result<Tensor, ModelError> {
        let (classes, dim) = self.category_embeddings.dims2()?;
        let (items, n) = rows("the OCIR items", items, dim)?;
        let outfits = categories.len();
        if outfit_of.len() != n {
            return Err(ModelError::Input(format!("OCIR: {n} items but {} outfit indices", outfit_of.len())));
        }
        if let Some(&c) = categories.iter().find(|&&c| c as usize >= classes) {
            return Err(ModelError::Input(format!("OCIR: category {c}, but the head knows {classes} categories")));
        }
        let mut counts = vec![0usize; outfits];
        for &o in outfit_of {
            let count = counts
                .get_mut(o as usize)
                .ok_or_else(|| ModelError::Input(format!("OCIR: an item of outfit {o}, but there are {outfits} outfits")))?;
            *count += 1;
        }
        if let Some(empty) = counts.iter().position(|&c| c == 0) {
            return Err(ModelError::Input(format!("OCIR: outfit {empty} has no items")));
        }
        let device = Device::Cpu;
        let index = Tensor::from_vec(outfit_of.to_vec(), n, &device)?;
        // The mean's direction is the sum's: normalising the sum gives the
        // normalised mean without dividing by the counts.
        let sums = Tensor::zeros((outfits, dim), DType::F32, &device)?.index_add(&index, &items, 0)?;
        let outfit = l2_normalize(&sums)?;
        let wanted = self.category_embeddings.index_select(&Tensor::from_vec(categories.to_vec(), outfits, &device)?, 0)?;
        let input = Tensor::cat(&[outfit, wanted], 1)?;
        Ok(l2_normalize(&self.output.forward(&self.dense.forward(&input)?.gelu_erf()?)?)?)
    }
}

/// Compact query → category logits (the query's category intent).
#[derive(Debug, Clone)]
pub struct CategoryHead {
    /// `[D → C]`.
    pub linear: Linear,
}

impl CategoryHead {
    /// Logits `[B, C]` of compact queries `text [B, D]`.
    pub fn logits(&self, text: &Tensor) -> Result<Tensor, ModelError> {
        let dim = self.linear.weight().dim(1)?;
        let (text, _) = rows("the category head's input", text, dim)?;
        Ok(self.linear.forward(&text)?)
    }
}

/// The projection and the heads of a bundle's `heads` part.
#[derive(Debug, Clone)]
pub struct CompactHeads {
    /// `[E → D]`, no bias.
    pub projection: Linear,
    pub tgir: Option<TgirCombiner>,
    pub ocir: Option<OutfitCompleter>,
    pub category: CategoryHead,
    config: CompactConfig,
}

impl CompactHeads {
    /// Loads the heads from a safetensors file's bytes, checking every
    /// tensor's shape against `config`; `origin` names the file in errors.
    pub fn from_bytes(config: &CompactConfig, safetensors: &[u8], origin: &str) -> Result<Self, ModelError> {
        config.validate().map_err(|reason| ModelError::Config { origin: origin.to_string(), reason })?;
        let w = Weights::from_bytes(safetensors, origin)?;
        let (e, d, c) = (config.teacher_dim, config.dim, config.categories);
        Ok(CompactHeads {
            projection: linear(&w, "projection", e, d, false)?,
            tgir: config.has(OptionalHead::Tgir).then(|| TgirCombiner::load(&w, d)).transpose()?,
            ocir: config.has(OptionalHead::Ocir).then(|| OutfitCompleter::load(&w, d, c)).transpose()?,
            category: CategoryHead { linear: linear(&w, "category", d, c, true)? },
            config: config.clone(),
        })
    }

    pub fn config(&self) -> &CompactConfig {
        &self.config
    }

    /// Teacher embeddings `[B, E]` → unit compact vectors `[B, D]`. The text
    /// encoder's embeddings carry its learnt scale; normalising after the
    /// projection removes it.
    pub fn project(&self, teacher: &Tensor) -> Result<Tensor, ModelError> {
        let (teacher, _) = rows("the projection's input", teacher, self.config.teacher_dim)?;
        Ok(l2_normalize(&self.projection.forward(&teacher)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: usize = 3;
    const D: usize = 2;
    const C: usize = 3;

    fn config() -> CompactConfig {
        CompactConfig { teacher_dim: E, dim: D, categories: C, image_weight: 0.5, heads: OptionalHead::all() }
    }

    /// Small values of both signs that differ from tensor to tensor.
    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 7 + seed * 5) % 11) as f32 / 5.0 - 1.0).collect()
    }

    /// Every tensor of the heads: name, shape, row-major values.
    fn tensors() -> Vec<(&'static str, Vec<usize>, Vec<f32>)> {
        let shapes: [(&str, Vec<usize>); 10] = [
            ("projection.weight", vec![D, E]),
            ("tgir.dense.weight", vec![D, 2 * D]),
            ("tgir.dense.bias", vec![D]),
            ("tgir.output.weight", vec![D, D]),
            ("tgir.output.bias", vec![D]),
            ("ocir.category_embeddings.weight", vec![C, D]),
            ("ocir.dense.weight", vec![D, 2 * D]),
            ("ocir.dense.bias", vec![D]),
            ("ocir.output.weight", vec![D, D]),
            ("ocir.output.bias", vec![D]),
        ];
        let mut all: Vec<_> = shapes
            .into_iter()
            .enumerate()
            .map(|(seed, (name, shape))| (name, shape.clone(), values(shape.iter().product(), seed)))
            .collect();
        all.push(("category.weight", vec![C, D], values(C * D, 10)));
        all.push(("category.bias", vec![C], values(C, 11)));
        all
    }

    fn file(tensors: &[(&str, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
        let tensors: Vec<(&str, Tensor)> =
            tensors.iter().map(|(name, shape, v)| (*name, Tensor::from_vec(v.clone(), shape.as_slice(), &Device::Cpu).unwrap())).collect();
        safetensors::serialize(tensors.iter().map(|(n, t)| (*n, t)), None).unwrap()
    }

    fn weights(name: &str) -> Vec<f32> {
        tensors().into_iter().find(|(n, _, _)| *n == name).unwrap().2
    }

    fn heads() -> CompactHeads {
        CompactHeads::from_bytes(&config(), &file(&tensors()), "heads.safetensors").unwrap()
    }

    /// `W x + b` for `W` `[rows, x.len()]`, in plain f32.
    fn affine(w: &[f32], x: &[f32], b: Option<&[f32]>) -> Vec<f32> {
        w.chunks_exact(x.len())
            .enumerate()
            .map(|(o, row)| row.iter().zip(x).map(|(w, x)| w * x).sum::<f32>() + b.map_or(0.0, |b| b[o]))
            .collect()
    }

    fn gelu(x: &[f32]) -> Vec<f32> {
        x.iter().map(|&x| 0.5 * x * (1.0 + candle_core::cpu::erf::erf_f32(x / std::f32::consts::SQRT_2))).collect()
    }

    fn normalize(x: &[f32]) -> Vec<f32> {
        let norm = x.iter().map(|x| x * x).sum::<f32>().sqrt();
        x.iter().map(|x| x / norm).collect()
    }

    fn mlp(prefix: &str, input: &[f32]) -> Vec<f32> {
        let hidden = gelu(&affine(&weights(&format!("{prefix}.dense.weight")), input, Some(&weights(&format!("{prefix}.dense.bias")))));
        affine(&weights(&format!("{prefix}.output.weight")), &hidden, Some(&weights(&format!("{prefix}.output.bias"))))
    }

    fn row(t: &Tensor) -> Vec<Vec<f32>> {
        t.to_vec2().unwrap()
    }

    fn tensor(rows: &[&[f32]]) -> Tensor {
        let width = rows[0].len();
        Tensor::from_vec(rows.concat(), (rows.len(), width), &Device::Cpu).unwrap()
    }

    fn assert_close(got: &[f32], expected: &[f32]) {
        assert_eq!(got.len(), expected.len());
        for (g, e) in got.iter().zip(expected) {
            assert!((g - e).abs() < 1e-5, "{got:?} vs {expected:?}");
        }
    }

    #[test]
    fn the_projection_is_a_unit_vector_whatever_the_teachers_scale() {
        let heads = heads();
        let x = [0.3f32, -1.2, 2.0];
        let scaled: Vec<f32> = x.iter().map(|v| v * 7.5).collect();
        let got = row(&heads.project(&tensor(&[&x, &scaled])).unwrap());
        let expected = normalize(&affine(&weights("projection.weight"), &x, None));
        assert_close(&got[0], &expected);
        assert_close(&got[1], &expected);
    }

    #[test]
    fn tgir_adds_the_mlps_change_to_the_reference() {
        let heads = heads();
        let (reference, text) = ([0.6f32, -0.8], [0.0f32, 1.0]);
        let (reference2, text2) = ([1.0f32, 0.0], [-0.6f32, 0.8]);
        let got = row(&heads.tgir.as_ref().unwrap().forward(&tensor(&[&reference, &reference2]), &tensor(&[&text, &text2])).unwrap());
        for (got, (r, t)) in got.iter().zip([(reference, text), (reference2, text2)]) {
            let change = mlp("tgir", &[r, t].concat());
            assert_close(got, &normalize(&[r[0] + change[0], r[1] + change[1]]));
        }
    }

    #[test]
    fn ocir_takes_each_outfits_mean_direction_and_its_category() {
        let heads = heads();
        let items: [&[f32]; 3] = [&[1.0, 0.0], &[0.2, 0.9], &[-0.5, 0.4]];
        // Outfit 0: items 0 and 2, category 2; outfit 1: item 1, category 0.
        let got = row(&heads.ocir.as_ref().unwrap().forward(&tensor(&items), &[0, 1, 0], &[2, 0]).unwrap());
        let embeddings = weights("ocir.category_embeddings.weight");
        let expected = |members: &[usize], category: usize| {
            let mean: Vec<f32> = (0..D).map(|j| members.iter().map(|&i| items[i][j]).sum::<f32>() / members.len() as f32).collect();
            normalize(&mlp("ocir", &[normalize(&mean), embeddings[category * D..(category + 1) * D].to_vec()].concat()))
        };
        assert_close(&got[0], &expected(&[0, 2], 2));
        assert_close(&got[1], &expected(&[1], 0));
    }

    #[test]
    fn ocir_refuses_outfits_without_items_and_unknown_categories() {
        let heads = heads();
        let items = tensor(&[&[1.0, 0.0]]);
        let err = heads.ocir.as_ref().unwrap().forward(&items, &[0], &[0, 1]).unwrap_err().to_string();
        assert!(err.contains("outfit 1 has no items"), "{err}");
        let err = heads.ocir.as_ref().unwrap().forward(&items, &[0], &[C as u32]).unwrap_err().to_string();
        assert!(err.contains(&format!("category {C}")), "{err}");
        let err = heads.ocir.as_ref().unwrap().forward(&items, &[1], &[0]).unwrap_err().to_string();
        assert!(err.contains("outfit 1"), "{err}");
    }

    #[test]
    fn category_logits_are_affine_in_the_query() {
        let heads = heads();
        let q = [0.28f32, -0.96];
        let got = row(&heads.category.logits(&tensor(&[&q])).unwrap());
        assert_close(&got[0], &affine(&weights("category.weight"), &q, Some(&weights("category.bias"))));
    }

    #[test]
    fn inputs_of_the_wrong_width_are_refused() {
        let heads = heads();
        let err = heads.project(&tensor(&[&[1.0, 2.0]])).unwrap_err().to_string();
        assert!(err.contains("projection") && err.contains("[B, 3]"), "{err}");
        let err =
            heads.tgir.as_ref().unwrap().forward(&tensor(&[&[1.0, 0.0]]), &tensor(&[&[1.0, 0.0], &[0.0, 1.0]])).unwrap_err().to_string();
        assert!(err.contains("1 references but 2 texts"), "{err}");
    }

    #[test]
    fn a_head_the_config_does_not_list_is_not_read() {
        let without_ocir: Vec<_> = tensors().into_iter().filter(|(name, ..)| !name.starts_with("ocir.")).collect();
        let config = CompactConfig { heads: vec![OptionalHead::Tgir], ..config() };
        let heads = CompactHeads::from_bytes(&config, &file(&without_ocir), "heads.safetensors").unwrap();
        assert!(heads.ocir.is_none() && heads.tgir.is_some());
        // Listed but absent is a broken file, named as such.
        let err = CompactHeads::from_bytes(&super::tests::config(), &file(&without_ocir), "heads.safetensors").unwrap_err().to_string();
        assert!(err.contains("ocir.category_embeddings.weight"), "{err}");
    }

    #[test]
    fn a_missing_tensor_is_named() {
        for missing in ["tgir.output.bias", "ocir.category_embeddings.weight", "category.bias"] {
            let without: Vec<_> = tensors().into_iter().filter(|(n, _, _)| *n != missing).collect();
            let err = CompactHeads::from_bytes(&config(), &file(&without), "heads.safetensors").unwrap_err();
            assert!(
                matches!(&err, ModelError::MissingTensor { name, origin } if name == missing && origin == "heads.safetensors"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_tensor_of_the_wrong_shape_is_named() {
        let mut wrong = tensors();
        wrong[0] = ("projection.weight", vec![E, D], values(E * D, 0));
        let err = CompactHeads::from_bytes(&config(), &file(&wrong), "heads.safetensors").unwrap_err();
        assert!(
            matches!(&err, ModelError::Shape { name, expected, found, .. } if name == "projection.weight" && *expected == [D, E] && *found == [E, D]),
            "{err}"
        );
        // A config whose dim does not match the file: the first tensor read says so.
        let err = CompactHeads::from_bytes(&CompactConfig { dim: 4, ..config() }, &file(&tensors()), "heads.safetensors").unwrap_err();
        assert!(err.to_string().contains("projection.weight"), "{err}");
    }

    #[test]
    fn an_impossible_config_names_its_field() {
        for (config, field) in [
            (CompactConfig { dim: 0, ..config() }, "dim is 0"),
            (CompactConfig { teacher_dim: usize::MAX, ..config() }, "teacher_dim"),
            (CompactConfig { categories: 0, ..config() }, "categories"),
            (CompactConfig { image_weight: f32::NAN, ..config() }, "image_weight"),
            (CompactConfig { heads: vec![OptionalHead::Ocir, OptionalHead::Ocir], ..config() }, "Ocir twice"),
        ] {
            let err = CompactHeads::from_bytes(&config, &file(&tensors()), "heads.safetensors").unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
        }
    }
}
