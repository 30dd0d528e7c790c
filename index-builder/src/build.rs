//! From a fine-tuned checkpoint and its catalog's embeddings to the bundle:
//! distillation into the compact space, int8 item vectors and the HNSW graph,
//! the int8 text encoder, product metadata, written as a folder and, for
//! offline catalogs, a single file. Each stage is timed.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};
use vitrine_core::bundle::{category_ids, BundleContents, Manifest, Product};
use vitrine_core::catalog::Catalog;
use vitrine_core::engine::BundleModelConfig;
use vitrine_core::index::{AnnIndex, BuildParams};
use vitrine_core::model::compact::OptionalHead;
use vitrine_core::model::quant::{quantize_safetensors_to, StoredBits};
use vitrine_core::tasks::Labels;
use vitrine_trainer::catalog_inputs::CatalogInputs;
use vitrine_trainer::teacher::Finetuned;

use crate::distill::{distill, DistillOptions, DistillReport, TeacherRun, TeacherSpace};
use crate::embed::{embed_shard, merge, EmbedError, Shard};
use crate::student::{distill_student, Student, StudentOptions, StudentReport};

/// Errors of building a bundle; each names the file or stage.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Train(#[from] vitrine_trainer::error::TrainError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error(transparent)]
    Bundle(#[from] vitrine_core::bundle::BundleError),
    #[error("building the index: {0}")]
    Index(#[from] vitrine_core::index::IndexError),
    #[error("the text encoder: {0}")]
    Model(#[from] vitrine_core::model::ModelError),
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("--dim {dim}: the compact space must be 1 to {teacher} wide (the teacher's embedding width)")]
    Dim { dim: usize, teacher: usize },
    #[error("the student text encoder: {0}")]
    Student(String),
}

fn file_err(path: &Path) -> impl Fn(std::io::Error) -> BuildError + '_ {
    move |e| BuildError::File { path: path.to_path_buf(), reason: e.to_string() }
}

/// The bytes of `path`; an error names it.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, BuildError> {
    std::fs::read(path).map_err(file_err(path))
}

/// Shows what the build is doing: on the progress line, and in the log (which
/// is what a job without a terminal keeps).
pub fn stage(bar: &indicatif::ProgressBar, what: impl Into<std::borrow::Cow<'static, str>>) {
    let what = what.into();
    tracing::info!("{what}");
    bar.set_message(what);
}

/// Seconds spent in each stage, in order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StageTimes(pub Vec<(String, f64)>);

impl StageTimes {
    /// Runs `stage`, recording how long it took.
    pub fn time<T>(&mut self, name: &str, stage: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let out = stage();
        self.0.push((name.to_string(), started.elapsed().as_secs_f64()));
        out
    }
}

/// What `vitrine-index build` reports (also written as `<out>/build-report.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildReport {
    pub items: usize,
    pub dims: usize,
    pub teacher_dims: usize,
    pub stages: StageTimes,
    /// Bytes of each part of the bundle.
    pub part_bytes: Vec<(String, u64)>,
    pub total_bytes: u64,
    pub single_file_bytes: u64,
    /// Bytes of the int8 item vectors (codes and scale), per item.
    pub index_bytes_per_item: f64,
    /// f32 teacher product vectors of the same items (what an uncompressed index would hold).
    pub teacher_f32_vector_bytes: u64,
    pub distill: DistillReport,
    /// The student text encoder's figures, when the bundle ships one.
    #[serde(default)]
    pub student: Option<StudentReport>,
}

/// Where the bundle goes: `<out>/bundle/` (folder layout) and `<out>/catalog.vitrine` (single file).
pub fn bundle_folder(out: &Path) -> PathBuf {
    out.join("bundle")
}

pub fn single_file(out: &Path) -> PathBuf {
    out.join("catalog.vitrine")
}

/// The variables of `vs` that `keep` names, as `kind`, sorted by name.
fn variables(vs: &tch::nn::VarStore, keep: impl Fn(&str) -> bool, kind: Kind) -> Vec<(String, Tensor)> {
    let mut tensors: Vec<(String, Tensor)> =
        vs.variables().into_iter().filter(|(n, _)| keep(n)).map(|(n, t)| (n, t.to_kind(kind))).collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    tensors
}

/// `tensors` as safetensors bytes, through the scratch file `path` (tch writes files only).
fn safetensors_bytes(tensors: &[(String, Tensor)], path: &Path) -> Result<Vec<u8>, BuildError> {
    Tensor::write_safetensors(tensors, path).map_err(|e| BuildError::File { path: path.to_path_buf(), reason: e.to_string() })?;
    let bytes = read_file(path)?;
    std::fs::remove_file(path).map_err(file_err(path))?;
    Ok(bytes)
}

/// A text tower as safetensors bytes with its matrices in int8 or 4 bits.
fn text_encoder_part(tensors: &[(String, Tensor)], scratch: &Path, bits: StoredBits) -> Result<Vec<u8>, BuildError> {
    let path = scratch.join("text-encoder-f32.safetensors");
    let (quantised, _) = quantize_safetensors_to(&safetensors_bytes(tensors, &path)?, &path.display().to_string(), bits)?;
    Ok(quantised)
}

/// The products of the embedded items, in their order.
pub fn products(catalog: &Catalog, items: &[usize]) -> Vec<Product> {
    items
        .iter()
        .map(|&i| {
            let item = &catalog.items[i];
            Product {
                id: item.id.clone(),
                title: item.title.clone(),
                category: item.category.clone(),
                subcategory: item.subcategory.clone(),
                image: item.images.first().cloned().unwrap_or_default(),
                group_id: item.group_id.clone(),
            }
        })
        .collect()
}

/// Inputs of [`build`] besides the teacher run.
pub struct BuildInputs<'a> {
    /// The checkpoint folder (its `config.json` and `tokenizer.json` go into the bundle).
    pub checkpoint: &'a Path,
    pub max_query_tokens: usize,
    pub distill: &'a DistillOptions,
    /// Ship a distilled student text encoder instead of the teacher's text tower.
    pub student: Option<&'a StudentOptions>,
    /// How the text encoder's matrices are stored: int8, or 4 bits widened to int8 when loaded.
    pub text_encoder_bits: StoredBits,
    pub index: &'a BuildParams,
    /// The browser's beam width for this catalog (the engine's default when `None`).
    pub search_ef: Option<usize>,
    pub out: &'a Path,
}

/// Where the teacher's embeddings of the catalog come from.
pub enum EmbeddingSource<'a> {
    /// Embed here into this folder (finished chunks of an earlier run are kept).
    Embed(&'a Path),
    /// The shards of a finished `vitrine-index embed` run.
    Shards { folder: &'a Path, count: usize },
}

/// The teacher: a fine-tuned model and the catalog it embeds.
pub struct Teacher<'a> {
    pub finetuned: &'a Finetuned,
    pub catalog: &'a Catalog,
    pub labels: &'a Labels,
    pub inputs: &'a CatalogInputs,
    pub device: tch::Device,
}

/// Everything after loading: the embeddings, then [`build`].
pub fn build_catalog(
    teacher: &Teacher,
    source: EmbeddingSource,
    inputs: &BuildInputs,
    mut stages: StageTimes,
) -> Result<BuildReport, BuildError> {
    let Teacher { finetuned, catalog, labels, inputs: catalog_inputs, device } = *teacher;
    let embeddings = stages.time("embed", || -> Result<_, BuildError> {
        let (folder, count) = match source {
            EmbeddingSource::Embed(folder) => {
                let summary = embed_shard(finetuned, inputs.checkpoint, catalog, catalog_inputs, Shard::WHOLE, folder, device)?;
                tracing::info!(
                    "embedded {} items ({} chunks reused), {:.1} items/s",
                    summary.items,
                    summary.reused_chunks,
                    summary.items_per_s
                );
                (folder, 1)
            }
            EmbeddingSource::Shards { folder, count } => (folder, count),
        };
        Ok(merge(folder, count, catalog)?)
    })?;
    let space = TeacherSpace::new(&embeddings);
    let (categories, _) = category_ids(&products(catalog, space.items()))?;
    let run = TeacherRun { finetuned, catalog, labels, inputs: catalog_inputs, space: &space, categories: &categories, device };
    build(&run, inputs, stages)
}

/// Builds the bundle (stages after embedding; `stages` already holds the earlier ones).
pub fn build(run: &TeacherRun, inputs: &BuildInputs, mut stages: StageTimes) -> Result<BuildReport, BuildError> {
    let teacher = run.space.dim();
    if inputs.distill.dim == 0 || inputs.distill.dim > teacher {
        return Err(BuildError::Dim { dim: inputs.distill.dim, teacher });
    }
    let bar = indicatif::ProgressBar::new_spinner().with_prefix("building bundle");
    bar.set_style(indicatif::ProgressStyle::with_template("{prefix} {spinner} {msg} {elapsed}").expect("valid template"));
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let distilled = stages.time("distil", || distill(run, inputs.distill, &bar))?;
    let student = match inputs.student {
        Some(options) => {
            Some(stages.time("student", || distill_student(run, &distilled, inputs.checkpoint, inputs.max_query_tokens, options, &bar))?)
        }
        None => None,
    };

    stage(&bar, "int8 vectors and HNSW graph");
    let items = run.space.items();
    let products = products(run.catalog, items);
    let (categories, ids) = category_ids(&products)?;
    let dims = distilled.config.dim;
    let vectors: Vec<f32> = Vec::<f32>::try_from(distilled.products.flatten(0, -1)).expect("f32 vectors");
    let index = stages.time("index", || AnnIndex::build(dims, &vectors, ids, inputs.index))?;

    stage(&bar, "quantised text encoder");
    std::fs::create_dir_all(inputs.out).map_err(file_err(inputs.out))?;
    let text_encoder = stages.time("text encoder", || {
        // The teacher's text tower: `bert.*` and `embedding_scale`.
        let teacher = || variables(&run.finetuned.vs, |n| n.starts_with("bert.") || n == "embedding_scale", Kind::Float);
        let tensors = student.as_ref().map_or_else(teacher, Student::tensors);
        text_encoder_part(&tensors, inputs.out, inputs.text_encoder_bits)
    })?;

    stage(&bar, "writing");
    // f16: half the download; its relative rounding (2^-11) is well under that of the int8 item vectors the queries meet (2^-8).
    // A head the catalog could not teach is left out (the config's `heads` says which are in).
    let absent: Vec<String> =
        OptionalHead::ALL.into_iter().filter(|&h| !distilled.config.has(h)).map(|h| format!("{}.", h.name())).collect();
    let shipped = |name: &str| !absent.iter().any(|prefix| name.starts_with(prefix.as_str()));
    let heads = safetensors_bytes(&variables(&distilled.vs, shipped, Kind::Half), &inputs.out.join("heads.safetensors"))?;
    let read = |name: &str| read_file(&inputs.checkpoint.join(name));
    let (text_encoder_config, tokenizer) = match &student {
        Some(student) => (student.config.clone(), student.tokenizer_json.clone()),
        None => (
            serde_json::from_slice(&read("config.json")?)
                .map_err(|e| BuildError::File { path: inputs.checkpoint.join("config.json"), reason: e.to_string() })?,
            read("tokenizer.json")?,
        ),
    };
    let model_config = BundleModelConfig {
        text_encoder: text_encoder_config,
        compact: distilled.config.clone(),
        max_query_tokens: inputs.max_query_tokens,
        search_ef: inputs.search_ef,
    };
    let contents = BundleContents {
        model_config: serde_json::to_value(&model_config).expect("config serialises"),
        categories,
        text_encoder,
        heads,
        tokenizer,
        index,
        products,
    };
    let folder = bundle_folder(inputs.out);
    let manifest: Manifest = stages.time("write", || -> Result<Manifest, BuildError> {
        let manifest = contents.write_folder(&folder)?;
        contents.write_single_file(&single_file(inputs.out))?;
        Ok(manifest)
    })?;
    bar.finish_and_clear();

    let single_file_bytes = std::fs::metadata(single_file(inputs.out)).map_err(file_err(&single_file(inputs.out)))?.len();
    let vectors = contents.index.vectors();
    let vector_bytes = (vectors.all_codes().len() + 4 * vectors.scales().len()) as f64;
    let report = BuildReport {
        items: items.len(),
        dims,
        teacher_dims: distilled.config.teacher_dim,
        stages,
        part_bytes: manifest.parts.iter().map(|p| (p.name.to_string(), p.bytes)).collect(),
        total_bytes: manifest.parts.iter().map(|p| p.bytes).sum(),
        single_file_bytes,
        index_bytes_per_item: vector_bytes / items.len().max(1) as f64,
        teacher_f32_vector_bytes: (items.len() * distilled.config.teacher_dim * 4) as u64,
        distill: distilled.report,
        student: student.map(|s| s.report),
    };
    let path = inputs.out.join("build-report.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report).expect("report serialises")).map_err(file_err(&path))?;
    Ok(report)
}
