//! A fine-tuned checkpoint read back as the model later stages use (the
//! evaluation, the index builder): weights verified, label names, tokenizer.

use std::collections::BTreeSet;
use std::path::Path;

use tch::{nn, Device};
use vitrine_core::text::Tokenizer;

use crate::checkpoint::{self, TRAINED_TASKS_KEY};
use crate::error::TrainError;
use crate::model::bert::BertConfig;
use crate::model::fashionvil::{FashionVil, FashionVilConfig};
use crate::schedule::Downstream;

/// A fine-tuned model read from its checkpoint, with its label names.
pub struct Finetuned {
    pub vs: nn::VarStore,
    pub model: FashionVil,
    pub tokenizer: Tokenizer,
    pub categories: Vec<String>,
    pub subcategories: Vec<String>,
    /// The downstream tasks it was fine-tuned on (every task for a checkpoint
    /// written before the list was kept).
    pub trained_tasks: BTreeSet<Downstream>,
}

/// Loads a fine-tuned checkpoint (weights verified) for evaluation or export.
pub fn load_finetuned(dir: &Path, max_text_tokens: usize, device: Device) -> Result<Finetuned, TrainError> {
    let config = checkpoint::read_config(dir)?;
    if config.get("categories").is_none() {
        return Err(TrainError::File {
            path: dir.join("config.json"),
            reason: "no `categories`: this is not a fine-tuned checkpoint (run `vitrine-train finetune` on it first)".into(),
        });
    }
    let bert: BertConfig = config_part(dir, &config, None)?;
    let model_config: FashionVilConfig = config_part(dir, &config, Some("fashionvil"))?;
    let categories: Vec<String> = config_part(dir, &config, Some("categories"))?;
    let subcategories: Vec<String> = config_part(dir, &config, Some("subcategories"))?;
    let trained_tasks: BTreeSet<Downstream> = match config.get(TRAINED_TASKS_KEY) {
        Some(_) => config_part(dir, &config, Some(TRAINED_TASKS_KEY))?,
        None => Downstream::ALL.into(),
    };
    let vs = nn::VarStore::new(device);
    let has_encoder = vs_has_image_encoder(dir)?;
    let model = FashionVil::new(&vs.root(), &bert, model_config, has_encoder);
    checkpoint::load_model(dir, &vs)?;
    let tokenizer = Tokenizer::from_file(&dir.join("tokenizer.json"), max_text_tokens)?;
    Ok(Finetuned { vs, model, tokenizer, categories, subcategories, trained_tasks })
}

/// A field of a checkpoint's config.json (`None`: the BERT fields at its top level).
pub(crate) fn config_part<T: serde::de::DeserializeOwned>(
    dir: &Path,
    config: &serde_json::Value,
    key: Option<&str>,
) -> Result<T, TrainError> {
    let value = key.map_or_else(|| config.clone(), |k| config[k].clone());
    serde_json::from_value(value)
        .map_err(|e| TrainError::File { path: dir.join("config.json"), reason: format!("{}: {e}", key.unwrap_or("BERT fields")) })
}

/// Whether the checkpoint holds image encoder weights (a recipe that trained it).
fn vs_has_image_encoder(dir: &Path) -> Result<bool, TrainError> {
    let names = checkpoint::tensor_names(dir)?;
    Ok(names.iter().any(|n| n.starts_with("image_encoder.")))
}
