//! The browser's heads in the compact space, in tch for distillation. The
//! candle twin that the browser runs, with the same module and tensor names,
//! is `core/src/model/compact.rs`; `tests/tests/compact_parity.rs` binds them.
//!
//! - `projection`: teacher embedding → compact space (linear, no bias, then
//!   L2-normalised); products and queries share it.
//! - [`TgirCombiner`] (`tgir`): compact product vector + compact modification
//!   text → query; a residual MLP on the reference, since most of a
//!   modification keeps the reference as it is.
//! - [`OutfitCompleter`] (`ocir`): the normalised mean of an outfit's compact
//!   product vectors and a learned embedding of the wanted category → query.
//! - [`CategoryHead`] (`category`): compact query text → category logits.

use tch::nn::{self, Module};
use tch::{Kind, Tensor};
use vitrine_core::model::compact::CompactConfig;
use vitrine_trainer::model::bert::l2_normalize;

/// Product vector + modification text → TGIR query.
#[derive(Debug)]
pub struct TgirCombiner {
    dense: nn::Linear,
    output: nn::Linear,
}

impl TgirCombiner {
    fn new(p: nn::Path, dim: i64) -> Self {
        TgirCombiner {
            dense: nn::linear(&p / "dense", 2 * dim, dim, Default::default()),
            output: nn::linear(&p / "output", dim, dim, Default::default()),
        }
    }

    /// Unit queries `[B, D]` of references `[B, D]` and texts `[B, D]` (both compact).
    pub fn forward(&self, reference: &Tensor, text: &Tensor) -> Tensor {
        let change = self.output.forward(&self.dense.forward(&Tensor::cat(&[reference, text], 1)).gelu("none"));
        l2_normalize(&(reference + change))
    }
}

/// Outfit items + wanted category → OCIR query.
#[derive(Debug)]
pub struct OutfitCompleter {
    category_embeddings: nn::Embedding,
    dense: nn::Linear,
    output: nn::Linear,
}

impl OutfitCompleter {
    fn new(p: nn::Path, dim: i64, categories: i64) -> Self {
        OutfitCompleter {
            category_embeddings: nn::embedding(&p / "category_embeddings", categories, dim, Default::default()),
            dense: nn::linear(&p / "dense", 2 * dim, dim, Default::default()),
            output: nn::linear(&p / "output", dim, dim, Default::default()),
        }
    }

    /// Unit queries `[B, D]` of outfits given as compact items `[N, D]`, each
    /// item's outfit `outfit_of [N]` (in `0..B`) and each outfit's category `[B]`.
    pub fn forward(&self, items: &Tensor, outfit_of: &Tensor, categories: &Tensor) -> Tensor {
        let (outfits, dim) = (categories.size()[0], items.size()[1]);
        let sums = Tensor::zeros([outfits, dim], (Kind::Float, items.device())).index_add(0, outfit_of, items);
        let input = Tensor::cat(&[l2_normalize(&sums), self.category_embeddings.forward(categories)], 1);
        l2_normalize(&self.output.forward(&self.dense.forward(&input).gelu("none")))
    }
}

/// Compact query text → category logits.
#[derive(Debug)]
pub struct CategoryHead {
    linear: nn::Linear,
}

impl CategoryHead {
    pub fn forward(&self, text: &Tensor) -> Tensor {
        self.linear.forward(text)
    }
}

/// The projection and the three heads.
#[derive(Debug)]
pub struct CompactHeads {
    projection: nn::Linear,
    pub tgir: TgirCombiner,
    pub ocir: OutfitCompleter,
    pub category: CategoryHead,
}

impl CompactHeads {
    pub fn new(root: &nn::Path, config: &CompactConfig) -> Self {
        let (teacher, dim, categories) = (config.teacher_dim as i64, config.dim as i64, config.categories as i64);
        let no_bias = nn::LinearConfig { bias: false, ..Default::default() };
        CompactHeads {
            projection: nn::linear(root / "projection", teacher, dim, no_bias),
            tgir: TgirCombiner::new(root / "tgir", dim),
            ocir: OutfitCompleter::new(root / "ocir", dim, categories),
            category: CategoryHead { linear: nn::linear(root / "category", dim, categories, Default::default()) },
        }
    }

    /// Unit compact vectors `[B, D]` of teacher embeddings `[B, E]` (any norm).
    pub fn project(&self, teacher: &Tensor) -> Tensor {
        l2_normalize(&self.projection.forward(teacher))
    }

    /// Sets the projection's weight `[D, E]` (the PCA start of distillation).
    pub fn set_projection(&mut self, weight: &Tensor) {
        tch::no_grad(|| self.projection.ws.copy_(weight));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;
    use vitrine_core::model::compact::OptionalHead;

    fn config() -> CompactConfig {
        CompactConfig { teacher_dim: 6, dim: 4, categories: 3, image_weight: 0.5, heads: OptionalHead::all() }
    }

    #[test]
    fn tensor_names_are_the_browser_heads() {
        let vs = nn::VarStore::new(Device::Cpu);
        let _heads = CompactHeads::new(&vs.root(), &config());
        let mut names: Vec<String> = vs.variables().into_keys().collect();
        names.sort();
        let expected = [
            "category.bias",
            "category.weight",
            "ocir.category_embeddings.weight",
            "ocir.dense.bias",
            "ocir.dense.weight",
            "ocir.output.bias",
            "ocir.output.weight",
            "projection.weight",
            "tgir.dense.bias",
            "tgir.dense.weight",
            "tgir.output.bias",
            "tgir.output.weight",
        ];
        assert_eq!(names, expected);
    }

    #[test]
    fn outfit_query_depends_on_the_mean_direction_only() {
        let vs = nn::VarStore::new(Device::Cpu);
        let heads = CompactHeads::new(&vs.root(), &config());
        // Outfit 0 = items 0 and 2 (the same direction), outfit 1 = item 1.
        let items = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]).view([3, 4]);
        let query = heads.ocir.forward(&items, &Tensor::from_slice(&[0i64, 1, 0]), &Tensor::from_slice(&[2i64, 2]));
        let alone = heads.ocir.forward(&items.narrow(0, 0, 1), &Tensor::from_slice(&[0i64]), &Tensor::from_slice(&[2i64]));
        assert!(query.narrow(0, 0, 1).allclose(&alone, 1e-6, 1e-6, false));
        assert!(!query.narrow(0, 1, 1).allclose(&alone, 1e-3, 1e-3, false));
    }

    #[test]
    fn projected_and_combined_vectors_are_unit_length() {
        let vs = nn::VarStore::new(Device::Cpu);
        let heads = CompactHeads::new(&vs.root(), &config());
        let compact = heads.project(&(Tensor::randn([5, 6], (Kind::Float, Device::Cpu)) * 3.0));
        let query = heads.tgir.forward(&compact, &compact.flip([0]));
        for t in [compact, query] {
            let norms = t.norm_scalaropt_dim(2.0, [-1i64].as_slice(), false);
            assert!(norms.allclose(&Tensor::ones([5], (Kind::Float, Device::Cpu)), 1e-5, 1e-5, false));
        }
    }
}
