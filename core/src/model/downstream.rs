//! The heads of the downstream tasks, as the trainer's
//! `trainer/src/model/downstream.rs` defines them; a fine-tuned checkpoint has
//! them, a pretraining one does not.
//!
//! - [`ClassifierHead`] (CR `heads.category`, SCR `heads.subcategory`): pooled
//!   fused output → transform (dense, GELU, LayerNorm) → linear.
//! - [`OutfitHead`] (OCIR, `heads.ocir`): the mean of an outfit's normalised
//!   item embeddings and a learnt embedding of the wanted category, through a
//!   two-layer MLP (GELU) to a unit-length query direction.

use candle_core::{DType, Device, Module, Tensor, D};

use super::bert::l2_normalize;
use super::quant::{Int8Kernel, Linear};
use super::weights::Weights;
use super::ModelError;

/// Pooled fused output → class logits.
#[derive(Debug, Clone)]
pub struct ClassifierHead {
    pub dense: Linear,
    pub layer_norm: candle_nn::LayerNorm,
    pub classifier: Linear,
}

impl ClassifierHead {
    fn load(w: &Weights, p: &str, hidden: usize, classes: usize, layer_norm_eps: f64, kernel: Int8Kernel) -> Result<Self, ModelError> {
        Ok(ClassifierHead {
            dense: Linear::load(w, &format!("{p}.transform.dense"), hidden, hidden, false, kernel)?,
            layer_norm: candle_nn::LayerNorm::new(
                w.f32(&format!("{p}.transform.LayerNorm.weight"), &[hidden])?,
                w.f32(&format!("{p}.transform.LayerNorm.bias"), &[hidden])?,
                layer_norm_eps,
            ),
            classifier: Linear::load(w, &format!("{p}.classifier"), hidden, classes, false, kernel)?,
        })
    }

    /// Logits `[B, classes]` of pooled outputs `[B, H]`.
    pub fn forward(&self, pooled: &Tensor) -> Result<Tensor, ModelError> {
        let h = self.layer_norm.forward(&self.dense.forward(pooled)?.gelu_erf()?)?;
        Ok(self.classifier.forward(&h)?)
    }
}

/// Outfit items + wanted category → query direction.
#[derive(Debug, Clone)]
pub struct OutfitHead {
    /// `[categories, H]`.
    pub category_embeddings: Tensor,
    pub dense: Linear,
    pub output: Linear,
}

impl OutfitHead {
    fn load(w: &Weights, p: &str, hidden: usize, categories: usize, kernel: Int8Kernel) -> Result<Self, ModelError> {
        Ok(OutfitHead {
            category_embeddings: w.f32(&format!("{p}.category_embeddings.weight"), &[categories, hidden])?,
            dense: Linear::load(w, &format!("{p}.dense"), 2 * hidden, hidden, false, kernel)?,
            output: Linear::load(w, &format!("{p}.output"), hidden, hidden, false, kernel)?,
        })
    }

    /// The unit query direction `[B, H]` of outfits given as item embeddings
    /// `[N, H]` with `outfit_of[n]` (row → outfit in `0..B`) and the wanted
    /// category class of each outfit (`B` of them).
    pub fn forward(&self, items: &Tensor, outfit_of: &[u32], categories: &[u32]) -> Result<Tensor, ModelError> {
        let (n, hidden) = items.dims2()?;
        let outfits = categories.len();
        let classes = self.category_embeddings.dim(0)?;
        if outfit_of.len() != n || outfit_of.iter().any(|&o| o as usize >= outfits) || categories.iter().any(|&c| c as usize >= classes) {
            return Err(ModelError::Input(format!(
                "OCIR: {n} items for {} outfit indices (below {outfits}), categories {categories:?} of {classes}",
                outfit_of.len()
            )));
        }
        let device = Device::Cpu;
        let items = l2_normalize(&items.to_dtype(DType::F32)?)?;
        let index = Tensor::from_vec(outfit_of.to_vec(), n, &device)?;
        let sums = Tensor::zeros((outfits, hidden), DType::F32, &device)?.index_add(&index, &items, 0)?;
        let counts = Tensor::zeros(outfits, DType::F32, &device)?
            .index_add(&index, &Tensor::ones(n, DType::F32, &device)?, 0)?
            .clamp(1.0, f64::MAX)?
            .unsqueeze(1)?;
        let outfit = sums.broadcast_div(&counts)?;
        let wanted = self.category_embeddings.index_select(&Tensor::from_vec(categories.to_vec(), outfits, &device)?, 0)?;
        let input = Tensor::cat(&[outfit, wanted], D::Minus1)?;
        Ok(l2_normalize(&self.output.forward(&self.dense.forward(&input)?.gelu_erf()?)?)?)
    }
}

/// The CR, SCR and OCIR heads of a fine-tuned model.
#[derive(Debug, Clone)]
pub struct DownstreamHeads {
    pub category: ClassifierHead,
    pub subcategory: ClassifierHead,
    pub outfit: OutfitHead,
}

impl DownstreamHeads {
    /// Loads `heads.{category,subcategory,ocir}`; the trainer gives the
    /// subcategory head at least one class.
    pub fn load(
        w: &Weights,
        hidden: usize,
        categories: usize,
        subcategories: usize,
        layer_norm_eps: f64,
        kernel: Int8Kernel,
    ) -> Result<Self, ModelError> {
        Ok(DownstreamHeads {
            category: ClassifierHead::load(w, "heads.category", hidden, categories, layer_norm_eps, kernel)?,
            subcategory: ClassifierHead::load(w, "heads.subcategory", hidden, subcategories.max(1), layer_norm_eps, kernel)?,
            outfit: OutfitHead::load(w, "heads.ocir", hidden, categories, kernel)?,
        })
    }
}
