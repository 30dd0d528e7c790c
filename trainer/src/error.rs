//! The trainer's error type: each error names the file or setting to fix.

use std::path::{Path, PathBuf};

/// Errors of training; each names the file or setting to fix.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Prepare(#[from] crate::prepare::PrepareError),
    #[error(transparent)]
    Features(#[from] crate::feature_store::FeatureStoreError),
    #[error(transparent)]
    Bert(#[from] crate::model::bert::BertError),
    #[error(transparent)]
    Optim(#[from] crate::optim::OptimError),
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    #[error(transparent)]
    VqVae(#[from] crate::vqvae::VqVaeError),
    #[error(transparent)]
    Text(#[from] vitrine_core::text::TextError),
    #[error(transparent)]
    Catalog(#[from] vitrine_core::catalog::CatalogError),
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("the recipe enables MPFC but no image tokenizer was given: train one with `vitrine-train vqvae` and pass --vqvae")]
    NoImageTokenizer,
    #[error("image encoder weights {path}: {reason}")]
    ImageWeights { path: PathBuf, reason: String },
    #[error("the loss became {loss} at step {step} ({task}); lower the learning rate")]
    NonFinite { step: u64, task: &'static str, loss: f64 },
    #[error(
        "the catalog has no train examples of any fine-tuning task of the recipe ({0}); give it a split with train items, or other tasks"
    )]
    NoExamples(String),
}

pub(crate) fn file_err(path: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |e| TrainError::File { path: path.to_path_buf(), reason: e.to_string() }
}
