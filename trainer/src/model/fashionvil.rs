//! FashionViL (ECCV 2022): an image encoder whose 7×7 grid becomes 49 visual
//! tokens, one BERT shared by text and fusion, and the heads of the pretext
//! tasks. Embeddings are L2-normalised and multiplied by a learnable scale
//! (init 4.0); similarities are dot products of such embeddings.
//!
//! VarStore names (the checkpoint's `model.safetensors`): `bert.*` (Hugging
//! Face names under a `bert.` prefix), `fusion_bert.*` when text and fusion are
//! not shared, `image_encoder.*` (efficientnet_pytorch or torchvision names), and our own
//! `image_tail.*` (the encoder's last layers trained on cached maps, the
//! encoder's names), `visual_projection`, `embedding_scale`, `heads.{itm,mlm,mpfc,pac}` and, after
//! fine-tuning, `heads.{category,subcategory,ocir}` (see [`super::downstream`]).

use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

use super::bert::{l2_normalize, masked_mean, BertConfig, BertModel, TextFusionBert};
use super::downstream::DownstreamHeads;
use super::efficientnet::{self, Tail};
use super::image_encoder::{Backbone, ImageEncoder};

/// The parts of the model beyond BERT's own config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FashionVilConfig {
    #[serde(default)]
    pub backbone: Backbone,
    /// Channels of the image encoder's last feature map (1280 for Lite0).
    pub image_channels: i64,
    /// With cached maps (a frozen encoder), how many of the encoder's last
    /// layers train on them (`image_tail.*`, under the encoder's own names):
    /// the cache then holds those layers' input. 0: the cache holds the
    /// features and nothing of the encoder trains.
    #[serde(default)]
    pub image_tail_layers: usize,
    /// Visual tokens: the image encoder's grid (7×7).
    pub visual_tokens: i64,
    pub share_text_fusion: bool,
    pub embedding_scale_init: f64,
    /// PAC classes (the mined pseudo-attribute vocabulary).
    pub pac_attributes: i64,
    /// Scale of the PAC cosine classifier's logits.
    pub pac_scale: f64,
    /// MPFC classes: the image tokenizer's codebook size.
    pub mpfc_codes: i64,
    /// Category and subcategory classes of the downstream heads; 0 in a
    /// pretrained model, which has none.
    #[serde(default)]
    pub categories: i64,
    #[serde(default)]
    pub subcategories: i64,
}

impl Default for FashionVilConfig {
    fn default() -> Self {
        FashionVilConfig {
            backbone: Backbone::EfficientnetLite0,
            image_channels: Backbone::EfficientnetLite0.channels(),
            image_tail_layers: 0,
            visual_tokens: 49,
            share_text_fusion: true,
            embedding_scale_init: 4.0,
            pac_attributes: 1,
            pac_scale: 10.0,
            mpfc_codes: 1024,
            categories: 0,
            subcategories: 0,
        }
    }
}

/// The MLM head: transform (dense, GELU, LayerNorm) then the decoder tied to
/// the word embeddings, plus its own bias (BERT's `cls.predictions`).
#[derive(Debug)]
pub struct MlmHead {
    dense: nn::Linear,
    layer_norm: nn::LayerNorm,
    bias: Tensor,
}

impl MlmHead {
    fn new(p: nn::Path, bert: &BertConfig) -> Self {
        let h = bert.hidden_size as i64;
        let ln = nn::LayerNormConfig { eps: bert.layer_norm_eps, ..Default::default() };
        MlmHead {
            dense: nn::linear(&p / "transform" / "dense", h, h, Default::default()),
            layer_norm: nn::layer_norm(&p / "transform" / "LayerNorm", vec![h], ln),
            bias: p.zeros("bias", &[bert.vocab_size as i64]),
        }
    }

    /// Token logits `[N, vocab]` of hidden states `[N, H]`.
    pub fn forward(&self, hidden: &Tensor, word_embeddings: &Tensor) -> Tensor {
        let h = self.layer_norm.forward(&self.dense.forward(hidden).gelu("none"));
        h.matmul(&word_embeddings.tr()) + &self.bias
    }
}

/// The FashionViL model.
#[derive(Debug)]
pub struct FashionVil {
    pub config: FashionVilConfig,
    /// `None` when the recipe feeds cached features of a frozen image encoder.
    pub image_encoder: Option<ImageEncoder>,
    /// The encoder's last layers, trained on cached maps (`image_tail_layers`).
    pub image_tail: Option<Tail>,
    pub bert: TextFusionBert,
    pub visual_projection: nn::Linear,
    pub embedding_scale: Tensor,
    pub itm_head: nn::Linear,
    pub mlm_head: MlmHead,
    pub mpfc_head: nn::Linear,
    /// Class weights of the PAC cosine classifier `[attributes, H]`, shared by
    /// image and text embeddings.
    pub pac_weights: Tensor,
    /// CR, SCR and OCIR heads, present when the config has categories.
    pub downstream: Option<DownstreamHeads>,
}

impl FashionVil {
    /// Builds the model under `root`; `with_image_encoder` is false for recipes
    /// that train on cached features.
    pub fn new(root: &nn::Path, bert: &BertConfig, config: FashionVilConfig, with_image_encoder: bool) -> Self {
        let h = bert.hidden_size as i64;
        let heads = root / "heads";
        FashionVil {
            image_encoder: with_image_encoder.then(|| ImageEncoder::new(&(root / "image_encoder"), config.backbone)),
            image_tail: (!with_image_encoder && config.image_tail_layers > 0)
                .then(|| Tail::new(&(root / "image_tail"), &efficientnet::Config::lite0_features(), config.image_tail_layers)),
            bert: TextFusionBert::new(&(root / "bert"), &(root / "fusion_bert"), bert, config.share_text_fusion),
            visual_projection: nn::linear(root / "visual_projection", config.image_channels, h, Default::default()),
            embedding_scale: root.var("embedding_scale", &[], nn::Init::Const(config.embedding_scale_init)),
            itm_head: nn::linear(&heads / "itm", h, 2, Default::default()),
            mlm_head: MlmHead::new(&heads / "mlm", bert),
            mpfc_head: nn::linear(&heads / "mpfc", h, config.mpfc_codes, Default::default()),
            pac_weights: heads.var("pac_weights", &[config.pac_attributes, h], nn::Init::Randn { mean: 0.0, stdev: 0.02 }),
            downstream: (config.categories > 0)
                .then(|| DownstreamHeads::new(&heads, h, config.categories, config.subcategories.max(1), bert.layer_norm_eps)),
            config,
        }
    }

    /// The image encoder's feature map `[B, C, 7, 7]` of normalised images.
    pub fn image_features(&self, images: &Tensor, train: bool) -> Tensor {
        let encoder = self.image_encoder.as_ref().expect("this model trains on cached image features and has no image encoder");
        encoder.forward_features(images, train)
    }

    /// Channels of the cached maps the model reads without an image encoder.
    pub fn cached_channels(&self) -> i64 {
        if self.config.image_tail_layers == 0 {
            self.config.image_channels
        } else {
            self.config.backbone.tail_input_channels(self.config.image_tail_layers)
        }
    }

    /// The feature map `[B, C, 7, 7]` of cached maps: through the trained
    /// tail when the model has one, else the maps are the features.
    pub fn cached_features(&self, cached: &Tensor) -> Tensor {
        match &self.image_tail {
            Some(tail) => tail.forward(&cached.to_kind(Kind::Float)),
            None => cached.shallow_clone(),
        }
    }

    /// The grid mean `[rows, C]` (f32, on `device`) of the features of the
    /// cached maps at `store_rows` of `maps` (memory-mapped f16), in chunks and
    /// without gradients: a bank of image embeddings through
    /// [`FashionVil::pooled_image_embedding`]. With a trained tail it is a
    /// snapshot of today's weights.
    pub fn pooled_cached_features(&self, maps: &Tensor, store_rows: &[i64], device: Device) -> Tensor {
        let chunks: Vec<Tensor> = store_rows
            .chunks(256)
            .map(|chunk| {
                let cached = maps.index_select(0, &Tensor::from_slice(chunk)).to_device(device).to_kind(Kind::Float);
                tch::no_grad(|| self.cached_features(&cached).mean_dim(&[-2i64, -1][..], false, Kind::Float))
            })
            .collect();
        if chunks.is_empty() {
            Tensor::zeros([0, self.config.image_channels], (Kind::Float, device))
        } else {
            Tensor::cat(&chunks, 0)
        }
    }

    /// Visual tokens `[B, 49, H]` of a feature map `[B, C, 7, 7]` (row-major grid).
    pub fn visual_tokens(&self, features: &Tensor) -> Tensor {
        let tokens = features.flatten(2, 3).transpose(1, 2);
        self.visual_projection.forward(&tokens.to_kind(Kind::Float))
    }

    /// `x` L2-normalised and multiplied by the learnable scale: an embedding.
    pub fn scaled(&self, x: &Tensor) -> Tensor {
        l2_normalize(x) * &self.embedding_scale
    }

    /// Image embedding `[B, H]`: mean of the visual tokens, normalised, scaled.
    pub fn image_embedding(&self, tokens: &Tensor) -> Tensor {
        self.scaled(&tokens.mean_dim(1, false, Kind::Float))
    }

    /// Image embedding `[B, H]` of mean-pooled feature maps `[B, C]`: the same
    /// as [`FashionVil::image_embedding`] of their visual tokens (the visual
    /// projection is linear, so it commutes with the mean), at 1/49 the cost.
    pub fn pooled_image_embedding(&self, pooled_features: &Tensor) -> Tensor {
        self.scaled(&self.visual_projection.forward(&pooled_features.to_kind(Kind::Float)))
    }

    /// Text embedding `[B, H]`: masked mean of the text encoder's output, normalised, scaled.
    pub fn text_embedding(&self, ids: &Tensor, mask: &Tensor, train: bool) -> Tensor {
        let out = self.bert.text().forward_text(ids, mask, train);
        self.scaled(&masked_mean(&out, mask))
    }

    /// Fusion of text and visual tokens: (`text_out [B,T,H]`, `visual_out [B,V,H]`).
    pub fn fuse(&self, ids: &Tensor, text_mask: &Tensor, tokens: &Tensor, visual_mask: &Tensor, train: bool) -> (Tensor, Tensor) {
        self.bert.fusion().forward_fusion(ids, text_mask, tokens, visual_mask, train)
    }

    /// Mean of the fused visual outputs over the attended tokens, normalised
    /// and scaled: the query of MVC and of TGIR.
    pub fn fused_visual_embedding(&self, visual_out: &Tensor, visual_mask: &Tensor) -> Tensor {
        self.scaled(&masked_mean(visual_out, visual_mask))
    }

    /// Pooled fused output `[B, H]` (the `[CLS]` token through BERT's pooler).
    pub fn pooled(&self, text_out: &Tensor) -> Tensor {
        self.bert.fusion().pooled(text_out)
    }

    /// TGIR queries `[B, H]` of modification texts with their reference
    /// images' visual tokens: the fused visual embedding.
    pub fn tgir_query(&self, ids: &Tensor, mask: &Tensor, reference_tokens: &Tensor, train: bool) -> Tensor {
        let visual_mask = all_tokens(reference_tokens);
        let (_, visual_out) = self.fuse(ids, mask, reference_tokens, &visual_mask, train);
        self.fused_visual_embedding(&visual_out, &visual_mask)
    }

    /// Pooled fused output `[B, H]` of texts with their images' visual tokens
    /// (the input of the CR/SCR heads).
    pub fn fused_pooled(&self, ids: &Tensor, mask: &Tensor, tokens: &Tensor, train: bool) -> Tensor {
        let (text_out, _) = self.fuse(ids, mask, tokens, &all_tokens(tokens), train);
        self.pooled(&text_out)
    }

    /// OCIR queries `[outfits, H]`: the outfit head over the image embeddings
    /// of the outfits' items (`outfit_of[i]`: the outfit of item i) and the
    /// category asked for, normalised and scaled.
    ///
    /// # Panics
    /// If the model has no downstream heads (it is not fine-tuned).
    pub fn ocir_query(&self, item_embeddings: &Tensor, outfit_of: &Tensor, categories: &Tensor) -> Tensor {
        let heads = self.downstream.as_ref().expect("a fine-tuned model has downstream heads");
        self.scaled(&heads.outfit.forward(item_embeddings, outfit_of, categories))
    }

    pub fn fusion_bert(&self) -> &BertModel {
        self.bert.fusion()
    }
}

/// A mask `[B, V]` that attends to every visual token of `tokens` `[B, V, H]`.
fn all_tokens(tokens: &Tensor) -> Tensor {
    Tensor::ones([tokens.size()[0], tokens.size()[1]], (Kind::Int64, tokens.device()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_bert() -> BertConfig {
        let mut c = BertConfig::all_minilm_l6_v2();
        c.vocab_size = 50;
        c.hidden_size = 16;
        c.num_hidden_layers = 2;
        c.num_attention_heads = 2;
        c.intermediate_size = 32;
        c
    }

    #[test]
    fn embeddings_have_the_learnable_scale_as_norm() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let config = FashionVilConfig { image_channels: 8, pac_attributes: 5, mpfc_codes: 12, ..Default::default() };
        let model = FashionVil::new(&vs.root(), &tiny_bert(), config, false);
        let features = Tensor::randn([3, 8, 7, 7], (Kind::Float, tch::Device::Cpu));
        let tokens = model.visual_tokens(&features);
        assert_eq!(tokens.size(), [3, 49, 16]);
        let norms = model.image_embedding(&tokens).norm_scalaropt_dim(2, [-1], false);
        assert!(norms.allclose(&Tensor::full([3], 4.0, (Kind::Float, tch::Device::Cpu)), 1e-5, 1e-5, false));
        // The bank's shortcut: the embedding of the pooled map is the embedding of the tokens.
        let pooled = model.pooled_image_embedding(&features.mean_dim(&[-2i64, -1][..], false, Kind::Float));
        assert!(pooled.allclose(&model.image_embedding(&tokens), 1e-5, 1e-5, false));
        let ids = Tensor::from_slice(&[1i64, 5, 6, 2, 1, 7, 2, 0, 1, 8, 9, 2]).view([3, 4]);
        let mask = ids.ne(0).to_kind(Kind::Int64);
        let text = model.text_embedding(&ids, &mask, false);
        assert!(text.norm_scalaropt_dim(2, [-1], false).allclose(&norms, 1e-5, 1e-5, false));
        let visual_mask = Tensor::ones([3, 49], (Kind::Int64, tch::Device::Cpu));
        let (text_out, visual_out) = model.fuse(&ids, &mask, &tokens, &visual_mask, false);
        assert_eq!((text_out.size(), visual_out.size()), (vec![3, 4, 16], vec![3, 49, 16]));
        let word_embeddings = model.bert.text().embeddings.word_embeddings.ws.shallow_clone();
        assert_eq!(model.mlm_head.forward(&text_out.reshape([-1, 16]), &word_embeddings).size(), [12, 50]);
    }

    #[test]
    fn itc_over_a_bank_of_the_batch_is_in_batch_itc_and_twins_are_left_out() {
        use crate::data::{ItcBank, PretextBatch};
        use crate::schedule::Task;
        tch::manual_seed(1);
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let config = FashionVilConfig { image_channels: 8, pac_attributes: 5, mpfc_codes: 12, ..Default::default() };
        let model = FashionVil::new(&vs.root(), &tiny_bert(), config, false);
        let features = Tensor::randn([3, 8, 7, 7], (Kind::Float, tch::Device::Cpu));
        let ids = Tensor::from_slice(&[1i64, 5, 6, 2, 1, 7, 2, 0, 1, 8, 9, 2]).view([3, 4]);
        let mask = ids.ne(0).to_kind(Kind::Int64);
        let batch = PretextBatch::new(Task::Itc, &[0, 1, 2], features.shallow_clone(), ids, mask);
        let pooled = features.mean_dim(&[-2i64, -1][..], false, Kind::Float);
        let in_batch = model.pretext_loss(&batch, None, false).double_value(&[]);
        let bank = ItcBank { features: pooled.shallow_clone(), text_twins: vec![Vec::new(); 3] };
        let over_bank = model.pretext_loss(&batch, Some(&bank), false).double_value(&[]);
        assert!((in_batch - over_bank).abs() < 1e-5, "{in_batch} vs {over_bank}");
        // Example 0's text twin (example 1) is no negative of its text: the text→image half drops that logit.
        let twins = ItcBank { features: pooled, text_twins: vec![vec![1], vec![0], Vec::new()] };
        let with_twins = model.pretext_loss(&batch, Some(&twins), false).double_value(&[]);
        assert!(with_twins < over_bank, "leaving out negatives lowers the loss: {with_twins} vs {over_bank}");
    }

    #[test]
    fn variable_names_follow_the_checkpoint_layout() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let config =
            FashionVilConfig { image_channels: 8, pac_attributes: 5, mpfc_codes: 12, share_text_fusion: false, ..Default::default() };
        let _model = FashionVil::new(&vs.root(), &tiny_bert(), config, false);
        let names = vs.variables();
        for expected in [
            "bert.embeddings.word_embeddings.weight",
            "fusion_bert.encoder.layer.1.output.dense.weight",
            "visual_projection.weight",
            "embedding_scale",
            "heads.itm.weight",
            "heads.mlm.transform.LayerNorm.weight",
            "heads.mlm.bias",
            "heads.mpfc.weight",
            "heads.pac_weights",
        ] {
            assert!(names.contains_key(expected), "{expected} missing from {:?}", names.keys().collect::<Vec<_>>());
        }
    }
}
