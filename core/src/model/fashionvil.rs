//! FashionViL for inference: the trainer's `trainer/src/model/fashionvil.rs`
//! without the image CNN and the pretext heads other than ITM, plus the
//! downstream heads of a fine-tuned checkpoint ([`super::downstream`]). Visual
//! tokens come from given image features (the CNN's `[B, C, 7, 7]` map) through
//! `visual_projection`; embeddings are L2-normalised and multiplied by the
//! learnt `embedding_scale`.

use candle_core::{DType, Module, Tensor};
use serde::{Deserialize, Serialize};

use super::bert::{l2_normalize, masked_mean, BertConfig, BertLoad, BertModel};
use super::downstream::DownstreamHeads;
use super::quant::{Linear, LoadOptions};
use super::weights::Weights;
use super::ModelError;

/// The model's own fields of config.json (the `fashionvil` object); the others
/// the trainer writes there (backbone, pretext head sizes) are not needed here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FashionVilConfig {
    /// Channels of the image encoder's last feature map (1280 for Lite0).
    pub image_channels: usize,
    /// Visual tokens: the image encoder's grid (7×7).
    pub visual_tokens: usize,
    pub share_text_fusion: bool,
    /// Category and subcategory classes of the downstream heads; 0 in a
    /// pretraining checkpoint, which has none.
    #[serde(default)]
    pub categories: usize,
    #[serde(default)]
    pub subcategories: usize,
}

/// A checkpoint's config.json: BERT's fields at the top level and the model's
/// under `fashionvil`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointConfig {
    #[serde(flatten)]
    pub bert: BertConfig,
    /// Absent in a plain Hugging Face BERT folder.
    #[serde(default)]
    pub fashionvil: Option<FashionVilConfig>,
    /// The class names of the category head (a fine-tuned checkpoint's).
    #[serde(default)]
    pub categories: Vec<String>,
    /// The class names of the subcategory head.
    #[serde(default)]
    pub subcategories: Vec<String>,
}

impl CheckpointConfig {
    /// Parses a config.json; `origin` names it in errors.
    pub fn from_json(json: &[u8], origin: &str) -> Result<Self, ModelError> {
        let config: CheckpointConfig =
            serde_json::from_slice(json).map_err(|e| ModelError::Config { origin: origin.to_string(), reason: e.to_string() })?;
        config.bert.validate().map_err(|reason| ModelError::Config { origin: origin.to_string(), reason })?;
        Ok(config)
    }
}

/// The FashionViL model: text encoder, fusion encoder (the same BERT unless the
/// checkpoint has a separate `fusion_bert`), visual projection, scale, ITM head
/// and, when fine-tuned, the downstream heads.
#[derive(Debug, Clone)]
pub struct FashionVil {
    pub config: FashionVilConfig,
    pub bert: BertModel,
    /// `Some` when text and fusion are not shared (`fusion_bert.*`).
    pub fusion_bert: Option<BertModel>,
    pub visual_projection: Linear,
    /// A scalar.
    pub embedding_scale: Tensor,
    pub itm_head: Linear,
    /// CR, SCR and OCIR heads, present when the config has categories.
    pub downstream: Option<DownstreamHeads>,
}

impl FashionVil {
    /// Loads the model from a checkpoint's config and weights. With
    /// `options.quantize_text_encoder` the text encoder's layers become int8
    /// (and so does fusion when it shares them).
    pub fn load(config: &CheckpointConfig, w: &Weights, options: LoadOptions) -> Result<Self, ModelError> {
        let model = config.fashionvil.clone().ok_or_else(|| ModelError::Config {
            origin: w.origin().to_string(),
            reason: "no `fashionvil` section: a BERT config, not a FashionViL checkpoint's".to_string(),
        })?;
        let h = config.bert.hidden_size;
        let text = BertLoad { prefix: "bert.", quantize: options.quantize_text_encoder, int8_kernel: options.int8_kernel };
        let bert = BertModel::load(w, &text, &config.bert)?;
        let fusion_bert = if model.share_text_fusion {
            None
        } else {
            let fusion = BertLoad { prefix: "fusion_bert.", quantize: false, int8_kernel: options.int8_kernel };
            Some(BertModel::load(w, &fusion, &config.bert)?)
        };
        let fusion = fusion_bert.as_ref().unwrap_or(&bert);
        if fusion.pooler.is_none() {
            let prefix = if model.share_text_fusion { "bert." } else { "fusion_bert." };
            return Err(w.missing(&format!("{prefix}pooler.dense.weight")));
        }
        let downstream = (model.categories > 0)
            .then(|| DownstreamHeads::load(w, h, model.categories, model.subcategories, config.bert.layer_norm_eps, options.int8_kernel))
            .transpose()?;
        Ok(FashionVil {
            visual_projection: Linear::load(w, "visual_projection", model.image_channels, h, false, options.int8_kernel)?,
            embedding_scale: w.f32("embedding_scale", &[])?,
            itm_head: Linear::load(w, "heads.itm", h, 2, false, options.int8_kernel)?,
            downstream,
            config: model,
            bert,
            fusion_bert,
        })
    }

    /// Loads `config.json` and `model.safetensors` of a checkpoint folder.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_dir(dir: &std::path::Path, options: LoadOptions) -> Result<Self, ModelError> {
        let config_path = dir.join(super::CONFIG_FILE);
        let config = CheckpointConfig::from_json(&super::read_file(&config_path)?, &config_path.display().to_string())?;
        let model_path = dir.join(super::MODEL_FILE);
        let bytes = super::read_file(&model_path)?;
        FashionVil::load(&config, &Weights::from_bytes(&bytes, &model_path.display().to_string())?, options)
    }

    /// The fusion encoder: the text one when shared.
    pub fn fusion(&self) -> &BertModel {
        self.fusion_bert.as_ref().unwrap_or(&self.bert)
    }

    fn scaled(&self, xs: &Tensor) -> Result<Tensor, ModelError> {
        Ok(l2_normalize(xs)?.broadcast_mul(&self.embedding_scale)?)
    }

    /// Visual tokens `[B, V, H]` of a feature map `[B, C, h, w]` (row-major grid).
    pub fn visual_tokens(&self, features: &Tensor) -> Result<Tensor, ModelError> {
        let tokens = features.to_dtype(DType::F32)?.flatten_from(2)?.transpose(1, 2)?.contiguous()?;
        Ok(self.visual_projection.forward(&tokens)?)
    }

    /// Image embedding `[B, H]`: mean of the visual tokens, normalised, scaled.
    pub fn image_embedding(&self, tokens: &Tensor) -> Result<Tensor, ModelError> {
        self.scaled(&tokens.mean(1)?)
    }

    /// Text embedding `[B, H]` of ids `[B, T]` (u32) and their keep-mask `[B, T]`
    /// (none: no padding): masked mean of the text encoder's output, normalised,
    /// scaled.
    pub fn text_embedding(&self, ids: &Tensor, mask: Option<&Tensor>) -> Result<Tensor, ModelError> {
        let out = self.bert.forward_text(ids, mask)?;
        let mask = match mask {
            Some(m) => m.clone(),
            None => Tensor::ones(ids.dims(), DType::F32, ids.device())?,
        };
        self.scaled(&masked_mean(&out, &mask)?)
    }

    /// Fusion of text and visual tokens: (`text_out [B, T, H]`, `visual_out [B, V, H]`).
    pub fn fuse(&self, ids: &Tensor, text_mask: &Tensor, tokens: &Tensor, visual_mask: &Tensor) -> Result<(Tensor, Tensor), ModelError> {
        self.fusion().forward_fusion(ids, text_mask, tokens, visual_mask)
    }

    /// Mean of the fused visual outputs over the attended tokens, normalised
    /// and scaled: the query of MVC and of TGIR.
    pub fn fused_visual_embedding(&self, visual_out: &Tensor, visual_mask: &Tensor) -> Result<Tensor, ModelError> {
        self.scaled(&masked_mean(visual_out, visual_mask)?)
    }

    /// The TGIR query `[B, H]` of a modification text (ids and keep-mask
    /// `[B, T]`) and the reference image's visual tokens `[B, V, H]`, all attended.
    pub fn tgir_query(&self, ids: &Tensor, text_mask: &Tensor, reference_tokens: &Tensor) -> Result<Tensor, ModelError> {
        let (b, v, _) = reference_tokens.dims3()?;
        let visual_mask = Tensor::ones((b, v), DType::F32, reference_tokens.device())?;
        let (_, visual_out) = self.fuse(ids, text_mask, reference_tokens, &visual_mask)?;
        self.fused_visual_embedding(&visual_out, &visual_mask)
    }

    /// Pooled fused output `[B, H]` (the `[CLS]` token through BERT's pooler).
    pub fn pooled(&self, text_out: &Tensor) -> Result<Tensor, ModelError> {
        self.fusion().pooled(text_out)
    }

    /// ITM logits `[B, 2]` of pooled fused outputs (index 1: the text matches the image).
    pub fn itm_logits(&self, pooled: &Tensor) -> Result<Tensor, ModelError> {
        Ok(self.itm_head.forward(pooled)?)
    }

    fn downstream(&self) -> Result<&DownstreamHeads, ModelError> {
        self.downstream
            .as_ref()
            .ok_or_else(|| ModelError::Input("this checkpoint has no downstream heads (it is not fine-tuned)".to_string()))
    }

    /// Category logits `[B, categories]` (CR) of pooled fused outputs.
    pub fn category_logits(&self, pooled: &Tensor) -> Result<Tensor, ModelError> {
        self.downstream()?.category.forward(pooled)
    }

    /// Subcategory logits `[B, subcategories]` (SCR) of pooled fused outputs.
    pub fn subcategory_logits(&self, pooled: &Tensor) -> Result<Tensor, ModelError> {
        self.downstream()?.subcategory.forward(pooled)
    }

    /// The OCIR query `[B, H]` of outfits: item image embeddings `[N, H]`, the
    /// outfit of each (`0..B`) and each outfit's wanted category class; scaled
    /// like every embedding.
    pub fn ocir_query(&self, items: &Tensor, outfit_of: &[u32], categories: &[u32]) -> Result<Tensor, ModelError> {
        self.scaled(&self.downstream()?.outfit.forward(items, outfit_of, categories)?)
    }
}
