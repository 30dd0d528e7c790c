//! The heads of the downstream tasks (the pretext heads are in `fashionvil`).
//!
//! - [`ClassifierHead`] (CR and SCR): pooled fused output → transform (dense,
//!   GELU, LayerNorm) → linear, as the paper's classification heads.
//! - [`OutfitHead`] (OCIR): the paper used CSA-Net on top of its image encoder;
//!   ours is smaller so that the browser can run a distilled copy: the mean of
//!   the outfit's normalised item embeddings and a learned embedding of the
//!   wanted category are concatenated and mapped by a two-layer MLP (GELU) to a
//!   query, which is L2-normalised and scaled like every embedding and scored
//!   against candidate image embeddings.
//!
//! VarStore names: `heads.category.*`, `heads.subcategory.*`, `heads.ocir.*`.

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use super::bert::l2_normalize;

/// Pooled fused output → category logits.
#[derive(Debug)]
pub struct ClassifierHead {
    dense: nn::Linear,
    layer_norm: nn::LayerNorm,
    classifier: nn::Linear,
}

impl ClassifierHead {
    pub fn new(p: nn::Path, hidden: i64, classes: i64, layer_norm_eps: f64) -> Self {
        let ln = nn::LayerNormConfig { eps: layer_norm_eps, ..Default::default() };
        ClassifierHead {
            dense: nn::linear(&p / "transform" / "dense", hidden, hidden, Default::default()),
            layer_norm: nn::layer_norm(&p / "transform" / "LayerNorm", vec![hidden], ln),
            classifier: nn::linear(&p / "classifier", hidden, classes, Default::default()),
        }
    }

    /// Logits `[B, classes]` of pooled outputs `[B, H]`.
    pub fn forward(&self, pooled: &Tensor) -> Tensor {
        let h = self.layer_norm.forward(&self.dense.forward(pooled).gelu("none"));
        self.classifier.forward(&h)
    }
}

/// Outfit items + wanted category → query embedding (before scaling).
#[derive(Debug)]
pub struct OutfitHead {
    category_embeddings: nn::Embedding,
    dense: nn::Linear,
    output: nn::Linear,
}

impl OutfitHead {
    pub fn new(p: nn::Path, hidden: i64, categories: i64) -> Self {
        OutfitHead {
            category_embeddings: nn::embedding(&p / "category_embeddings", categories, hidden, Default::default()),
            dense: nn::linear(&p / "dense", 2 * hidden, hidden, Default::default()),
            output: nn::linear(&p / "output", hidden, hidden, Default::default()),
        }
    }

    /// The query direction `[B, H]` (unit length) of outfits given as item
    /// embeddings `[N, H]` with `outfit_of [N]` (row → outfit in `0..B`) and
    /// the wanted category of each outfit `[B]`.
    pub fn forward(&self, items: &Tensor, outfit_of: &Tensor, categories: &Tensor) -> Tensor {
        let outfits = categories.size()[0];
        let hidden = items.size()[1];
        let items = l2_normalize(&items.to_kind(Kind::Float));
        let sums = Tensor::zeros([outfits, hidden], (Kind::Float, items.device())).index_add(0, outfit_of, &items);
        let counts = Tensor::zeros([outfits], (Kind::Float, items.device()))
            .index_add(0, outfit_of, &Tensor::ones([outfit_of.size()[0]], (Kind::Float, items.device())))
            .clamp_min(1.0)
            .unsqueeze(1);
        let outfit = sums / counts;
        let input = Tensor::cat(&[outfit, self.category_embeddings.forward(categories)], 1);
        l2_normalize(&self.output.forward(&self.dense.forward(&input).gelu("none")))
    }
}

/// The downstream heads of a model fine-tuned on a catalog with these label sets.
#[derive(Debug)]
pub struct DownstreamHeads {
    pub category: ClassifierHead,
    pub subcategory: ClassifierHead,
    pub outfit: OutfitHead,
}

impl DownstreamHeads {
    pub fn new(heads: &nn::Path, hidden: i64, categories: i64, subcategories: i64, layer_norm_eps: f64) -> Self {
        DownstreamHeads {
            category: ClassifierHead::new(heads / "category", hidden, categories, layer_norm_eps),
            subcategory: ClassifierHead::new(heads / "subcategory", hidden, subcategories, layer_norm_eps),
            outfit: OutfitHead::new(heads / "ocir", hidden, categories),
        }
    }

    /// VarStore name prefixes of these heads (absent from a pretraining checkpoint).
    pub const PREFIXES: [&'static str; 3] = ["heads.category.", "heads.subcategory.", "heads.ocir."];
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn outfit_query_averages_each_outfits_items() {
        let vs = nn::VarStore::new(Device::Cpu);
        let head = OutfitHead::new(vs.root() / "ocir", 4, 3);
        // Outfit 0 = items 0 and 2, outfit 1 = item 1; item 2 is item 0 scaled,
        // so outfit 0's mean direction equals item 0's.
        let items = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0]).view([3, 4]);
        let outfit_of = Tensor::from_slice(&[0i64, 1, 0]);
        let categories = Tensor::from_slice(&[2i64, 2]);
        let query = head.forward(&items, &outfit_of, &categories);
        assert_eq!(query.size(), [2, 4]);
        let alone = head.forward(&items.narrow(0, 0, 1), &Tensor::from_slice(&[0i64]), &Tensor::from_slice(&[2i64]));
        assert!(query.narrow(0, 0, 1).allclose(&alone, 1e-6, 1e-6, false));
        let norms = query.norm_scalaropt_dim(2.0, [-1i64].as_slice(), false);
        assert!(norms.allclose(&Tensor::ones([2], (Kind::Float, Device::Cpu)), 1e-5, 1e-5, false));
    }

    #[test]
    fn classifier_names_follow_the_checkpoint_layout() {
        let vs = nn::VarStore::new(Device::Cpu);
        let heads = DownstreamHeads::new(&(vs.root() / "heads"), 8, 3, 5, 1e-12);
        let logits = heads.subcategory.forward(&Tensor::randn([2, 8], (Kind::Float, Device::Cpu)));
        assert_eq!(logits.size(), [2, 5]);
        let names = vs.variables();
        for name in ["heads.category.transform.dense.weight", "heads.subcategory.classifier.bias", "heads.ocir.category_embeddings.weight"]
        {
            assert!(names.contains_key(name), "{name}");
        }
        assert!(names.keys().all(|n| DownstreamHeads::PREFIXES.iter().any(|p| n.starts_with(p))));
    }
}
