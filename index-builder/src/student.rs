//! A smaller text encoder for the browser, distilled from the teacher's text tower.
//!
//! The student keeps `layers` of the teacher's transformer layers (evenly
//! spaced, the last one included) and a pruned vocabulary ([`crate::vocab`]),
//! starting from the teacher's weights for both. It is then trained so that
//! its compact query (student embedding through the distilled projection)
//! matches the teacher's for query-like texts of the train split: each item's
//! title, a prefix of its title and description, and a short phrase of its
//! description. The loss is the cosine distance to the teacher's query plus
//! the soft cross-entropy of its in-batch scores against the batch's products
//! to the teacher's, so that what matters for retrieval, the ranking, is what
//! is matched. The projection and the heads stay as distilled for the teacher.
//!
//! Fewer layers make a query cheaper in the browser; the smaller word table
//! makes the download smaller. What that costs is measured on val titles
//! (title → product R@10 against every val item, teacher queries beside
//! student ones) and reported in the build report.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};
use vitrine_core::catalog::Split;
use vitrine_core::text::Tokenizer;
use vitrine_trainer::data::pad_ids;
use vitrine_trainer::model::bert::{l2_normalize, masked_mean, BertModel};

use crate::build::{read_file, stage, BuildError};
use crate::distill::{batched, recall10, soft_ce, tail_mean, Distilled, TeacherRun};
use crate::vocab;

/// Val titles asked at most (a seeded sample above that).
const VAL_TITLES: usize = 2000;

/// Prefixes and phrases drawn per train item; `max_texts` samples from them all.
const VARIANTS_PER_ITEM: usize = 3;

/// How the student is made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StudentOptions {
    /// Transformer layers kept (1 to the teacher's count).
    pub layers: usize,
    /// The most frequent wordpieces kept besides the catalog's own tokens.
    pub common_wordpieces: usize,
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    /// Query-like train texts answered by the teacher (a seeded sample above that).
    pub max_texts: usize,
    pub temperature: f64,
    pub seed: u64,
}

impl Default for StudentOptions {
    fn default() -> Self {
        StudentOptions {
            layers: 3,
            common_wordpieces: 3000,
            steps: 600,
            batch: 64,
            lr: 2e-4,
            max_texts: 20_000,
            temperature: 0.05,
            seed: 7,
        }
    }
}

/// What distilling the student measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StudentReport {
    /// The teacher layers the student's layers started from, in order.
    pub teacher_layers: Vec<usize>,
    pub vocab_size: usize,
    pub teacher_vocab_size: usize,
    pub train_texts: usize,
    pub steps: usize,
    /// Mean loss of the last tenth of the steps.
    pub final_loss: f64,
    pub val_titles: usize,
    /// Val title → product R@10 (every val item), compact space: teacher queries,
    /// the student before training (layers dropped, vocabulary pruned), the student.
    pub val_title_r10_teacher: f64,
    pub val_title_r10_student_start: f64,
    pub val_title_r10_student: f64,
    /// Cosine of the student's compact query to the teacher's over the val titles.
    pub val_cosine_mean: f64,
    pub val_cosine_min: f64,
    pub seconds: f64,
}

/// The distilled student: its text tower, config and tokenizer for the bundle.
pub struct Student {
    pub bert: BertModel,
    /// The teacher's embedding scale (the compact projection normalises it away, but the bundle's encoder carries it).
    pub embedding_scale: f64,
    /// The checkpoint's `config.json` with the student's layer count, vocabulary size and position count.
    pub config: serde_json::Value,
    /// Position embeddings shipped: a query never has more tokens than the
    /// bundle's limit, so the rest of the teacher's table (512 rows of MiniLM's)
    /// is never read (the config's visual positions start as a copy of its first rows).
    positions: usize,
    pub tokenizer_json: Vec<u8>,
    pub report: StudentReport,
}

impl Student {
    /// The tensors of the bundle's text encoder, named as the teacher's (`bert.*`, `embedding_scale`);
    /// the pooler and the visual positions, which a text query never uses, are left out.
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        let mut tensors: Vec<(String, Tensor)> = self
            .bert
            .named_tensors()
            .into_iter()
            .filter(|(name, _)| !name.starts_with("pooler.") && !name.contains("visual_position"))
            .map(|(name, t)| {
                let t = if name == "embeddings.position_embeddings.weight" { t.narrow(0, 0, self.positions as i64) } else { t };
                (format!("bert.{name}"), t.detach().to_kind(Kind::Float).to_device(Device::Cpu).contiguous())
            })
            .collect();
        tensors.push(("embedding_scale".to_string(), Tensor::from(self.embedding_scale as f32)));
        tensors
    }
}

/// The teacher layer each of `layers` student layers starts from: evenly spaced, ending at the last.
pub fn teacher_layers(teacher: usize, layers: usize) -> Vec<usize> {
    (1..=layers).map(|j| j * teacher / layers - 1).collect()
}

/// Query-like texts of the items of `split` that have embeddings, each with its item's embedding row.
fn query_texts(run: &TeacherRun, split: Split, rng: &mut ChaCha8Rng) -> Vec<(String, i64)> {
    let mut texts = Vec::new();
    for (i, item) in run.catalog.items_in(split) {
        let Some(row) = run.space.row_of(i) else { continue };
        texts.push((item.title.clone(), row));
        let text = item.text();
        let words: Vec<&str> = text.split_whitespace().collect();
        let description: Vec<&str> = item.description.split_whitespace().collect();
        for _ in 0..VARIANTS_PER_ITEM {
            if words.len() > 2 {
                let k = rng.gen_range(2..=words.len().min(12));
                texts.push((words[..k].join(" "), row));
            }
            if description.len() > 2 {
                let len = rng.gen_range(2..=description.len().min(5));
                let start = rng.gen_range(0..=description.len() - len);
                texts.push((description[start..start + len].join(" "), row));
            }
        }
    }
    texts
}

fn encode_all(tokenizer: &Tokenizer, texts: &[(String, i64)]) -> Result<Vec<Vec<i64>>, BuildError> {
    texts
        .iter()
        .map(|(t, _)| {
            Ok(tokenizer.encode(t).map_err(vitrine_trainer::error::TrainError::from)?.ids.iter().map(|&id| i64::from(id)).collect())
        })
        .collect()
}

/// Compact unit queries of a text tower's embeddings.
fn compact_queries(
    embed: &dyn Fn(&Tensor, &Tensor) -> Tensor,
    distilled: &Distilled,
    ids: &[Vec<i64>],
    device: Device,
) -> Result<Tensor, BuildError> {
    Ok(batched(ids.len(), distilled.config.dim, |rows| {
        // Padded positions are masked out; id 0 exists in any vocabulary.
        let (ids, mask) = pad_ids(ids[rows].iter().cloned(), 0);
        Ok(distilled.heads.project(&l2_normalize(&embed(&ids.to_device(device), &mask.to_device(device)))))
    })?)
}

/// Distils the student; `checkpoint` is the folder with the teacher's `config.json` and `tokenizer.json`.
pub fn distill_student(
    run: &TeacherRun,
    distilled: &Distilled,
    checkpoint: &Path,
    max_query_tokens: usize,
    options: &StudentOptions,
    bar: &indicatif::ProgressBar,
) -> Result<Student, BuildError> {
    let started = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let read = |name: &str| read_file(&checkpoint.join(name));
    let tokenizer_json = read("tokenizer.json")?;
    let origin = checkpoint.join("tokenizer.json").display().to_string();
    let teacher_tokenizer =
        Tokenizer::from_json_bytes(&tokenizer_json, &origin, max_query_tokens).map_err(vitrine_trainer::error::TrainError::from)?;
    let teacher = run.finetuned.model.bert.text();
    let teacher_config = teacher.config();
    if !(1..=teacher_config.num_hidden_layers).contains(&options.layers) {
        return Err(BuildError::Student(format!(
            "--student-layers {}: the teacher has {} layers; keep 1 to {0}",
            options.layers, teacher_config.num_hidden_layers
        )));
    }

    stage(bar, "student: vocabulary");
    let mut used = BTreeSet::new();
    for item in &run.catalog.items {
        // The text starts with the title, so its tokens cover the title's.
        used.extend(teacher_tokenizer.encode(&item.text()).map_err(vitrine_trainer::error::TrainError::from)?.ids);
    }
    let pruned = vocab::prune(&tokenizer_json, options.common_wordpieces, &used)
        .map_err(|e| BuildError::File { path: checkpoint.join("tokenizer.json"), reason: e.to_string() })?;
    let student_tokenizer = Tokenizer::from_json_bytes(&pruned.tokenizer_json, "the pruned tokenizer", max_query_tokens)
        .map_err(vitrine_trainer::error::TrainError::from)?;

    // The student starts as the teacher's chosen layers and kept word rows.
    let layers = teacher_layers(teacher_config.num_hidden_layers, options.layers);
    let mut config = teacher_config.clone();
    config.num_hidden_layers = options.layers;
    config.vocab_size = pruned.teacher_ids.len();
    let vs = nn::VarStore::new(run.device);
    let bert = BertModel::new(&(vs.root() / "bert"), &config);
    let teacher_tensors: HashMap<String, Tensor> = teacher.named_tensors().into_iter().collect();
    let kept_rows = Tensor::from_slice(&pruned.teacher_ids.iter().map(|&id| i64::from(id)).collect::<Vec<_>>()).to_device(run.device);
    let mut start = HashMap::new();
    for (name, _) in bert.named_tensors() {
        let source = match name.strip_prefix("encoder.layer.").and_then(|rest| rest.split_once('.')) {
            Some((j, rest)) => format!("encoder.layer.{}.{rest}", layers[j.parse::<usize>().expect("a layer number")]),
            None => name.clone(),
        };
        let tensor = teacher_tensors[&source].detach();
        let tensor = if name == "embeddings.word_embeddings.weight" { tensor.index_select(0, &kept_rows) } else { tensor.copy() };
        start.insert(name, tensor);
    }
    bert.load_tensors(&start, Some(""), "the teacher's text tower").map_err(|e| BuildError::Student(e.to_string()))?;

    stage(bar, "student: teacher queries");
    let mut train = query_texts(run, Split::Train, &mut rng);
    train.shuffle(&mut rng);
    train.truncate(options.max_texts);
    let model = &run.finetuned.model;
    let teacher_embed = |ids: &Tensor, mask: &Tensor| model.text_embedding(ids, mask, false);
    let student_embed = |ids: &Tensor, mask: &Tensor| masked_mean(&bert.forward_text(ids, mask, false), mask);
    let train_teacher = compact_queries(&teacher_embed, distilled, &encode_all(&teacher_tokenizer, &train)?, run.device)?;
    let train_ids = encode_all(&student_tokenizer, &train)?;

    let mut val: Vec<(String, i64)> =
        run.catalog.items_in(Split::Val).filter_map(|(i, item)| run.space.row_of(i).map(|row| (item.title.clone(), row))).collect();
    let gallery: Vec<i64> = val.iter().map(|(_, row)| *row).collect();
    val.shuffle(&mut rng);
    val.truncate(VAL_TITLES);
    let val_answers: Vec<i64> = val.iter().map(|(_, row)| *row).collect();
    let candidates: Vec<&[i64]> = vec![&gallery; val.len()];
    let val_teacher = compact_queries(&teacher_embed, distilled, &encode_all(&teacher_tokenizer, &val)?, run.device)?;
    let val_ids = encode_all(&student_tokenizer, &val)?;
    let val_r10 = |queries: &Tensor| recall10(queries, &distilled.products, &val_answers, &candidates);
    let val_title_r10_teacher = val_r10(&val_teacher);
    let val_title_r10_student_start = val_r10(&compact_queries(&student_embed, distilled, &val_ids, run.device)?);

    stage(bar, "student: distilling");
    let tau = options.temperature;
    let products = distilled.products.to_device(run.device);
    let mut opt = nn::Adam::default().build(&vs, options.lr).map_err(|e| BuildError::Student(e.to_string()))?;
    let progress = indicatif::ProgressBar::new(options.steps as u64).with_prefix("student");
    let mut losses = Vec::with_capacity(options.steps);
    let val_cosines = |student: &Tensor| (student * &val_teacher).sum_dim_intlist([-1i64].as_slice(), false, Kind::Float);
    // A job without a terminal sees no bar: its log gets a progress line every tenth of the steps.
    let log_every = (options.steps / 10).max(1);
    for step in 0..options.steps {
        opt.set_lr(learning_rate(options.lr, step, options.steps));
        let picks: Vec<usize> = rand::seq::index::sample(&mut rng, train.len(), options.batch.min(train.len())).into_vec();
        let (ids, mask) = pad_ids(picks.iter().map(|&p| train_ids[p].clone()), 0);
        let (ids, mask) = (ids.to_device(run.device), mask.to_device(run.device));
        let pick_index = Tensor::from_slice(&picks.iter().map(|&p| p as i64).collect::<Vec<_>>());
        let target = train_teacher.index_select(0, &pick_index).to_device(run.device);
        let query = distilled.heads.project(&l2_normalize(&student_embed(&ids, &mask)));
        let batch_products =
            products.index_select(0, &Tensor::from_slice(&picks.iter().map(|&p| train[p].1).collect::<Vec<_>>()).to_device(run.device));
        let cosine = (&query * &target).sum_dim_intlist([-1i64].as_slice(), false, Kind::Float);
        let ranking =
            soft_ce(&(query.matmul(&batch_products.tr()) / tau), &(target.matmul(&batch_products.tr()) / tau).softmax(-1, Kind::Float));
        let loss = (-cosine + 1.0).mean(Kind::Float) + ranking;
        opt.backward_step(&loss);
        losses.push(loss.double_value(&[]));
        progress.inc(1);
        if losses.len() % log_every == 0 {
            let val_cosine = val_cosines(&compact_queries(&student_embed, distilled, &val_ids, run.device)?).mean(Kind::Float);
            tracing::info!(
                "student: step {}/{}, loss {:.4}, val cosine to the teacher {:.4}",
                losses.len(),
                options.steps,
                losses[losses.len() - log_every..].iter().sum::<f64>() / log_every as f64,
                val_cosine.double_value(&[])
            );
        }
    }
    progress.finish_and_clear();

    let val_student = compact_queries(&student_embed, distilled, &val_ids, run.device)?;
    let cosines = Vec::<f32>::try_from(val_cosines(&val_student)).expect("f32");
    let report = StudentReport {
        teacher_layers: layers.clone(),
        vocab_size: pruned.teacher_ids.len(),
        teacher_vocab_size: teacher_config.vocab_size,
        train_texts: train.len(),
        steps: options.steps,
        final_loss: tail_mean(&losses),
        val_titles: val.len(),
        val_title_r10_teacher,
        val_title_r10_student_start,
        val_title_r10_student: val_r10(&val_student),
        val_cosine_mean: cosines.iter().map(|&c| f64::from(c)).sum::<f64>() / cosines.len().max(1) as f64,
        val_cosine_min: cosines.iter().fold(f64::INFINITY, |m, &c| m.min(f64::from(c))),
        seconds: started.elapsed().as_secs_f64(),
    };
    tracing::info!(
        "student: {} layers, {} tokens; val title R@10 teacher {:.1}, student {:.1} (before training {:.1}); cosine to the teacher mean {:.4}, min {:.4}",
        options.layers,
        report.vocab_size,
        report.val_title_r10_teacher,
        report.val_title_r10_student,
        report.val_title_r10_student_start,
        report.val_cosine_mean,
        report.val_cosine_min
    );

    let checkpoint_config = read("config.json")?;
    let mut config_json: serde_json::Value = serde_json::from_slice(&checkpoint_config)
        .map_err(|e| BuildError::File { path: checkpoint.join("config.json"), reason: e.to_string() })?;
    config_json["num_hidden_layers"] = options.layers.into();
    config_json["vocab_size"] = report.vocab_size.into();
    let positions = max_query_tokens.max(teacher_config.max_visual_positions).min(teacher_config.max_position_embeddings);
    config_json["max_position_embeddings"] = positions.into();
    config_json["student"] = serde_json::json!({ "teacher_layers": layers, "teacher_vocab_size": teacher_config.vocab_size });
    let embedding_scale = model.embedding_scale.double_value(&[]);
    Ok(Student { bert, embedding_scale, config: config_json, positions, tokenizer_json: pruned.tokenizer_json, report })
}

/// Linear warm-up over the first 5% of the steps, then cosine decay to zero:
/// late steps refine instead of jumping around the minimum.
fn learning_rate(peak: f64, step: usize, steps: usize) -> f64 {
    let warmup = (steps / 20).max(1);
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let progress = (step - warmup) as f64 / (steps - warmup).max(1) as f64;
    peak * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

#[cfg(test)]
mod tests {
    use super::{learning_rate, teacher_layers};

    #[test]
    fn learning_rate_warms_up_then_decays_to_zero() {
        assert!((learning_rate(1.0, 0, 100) - 0.2).abs() < 1e-12);
        assert!((learning_rate(1.0, 4, 100) - 1.0).abs() < 1e-12);
        assert!(learning_rate(1.0, 50, 100) < learning_rate(1.0, 10, 100));
        assert!(learning_rate(1.0, 99, 100) < 1e-3);
        assert!((learning_rate(1.0, 0, 1) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn kept_layers_are_evenly_spaced_and_end_at_the_last() {
        assert_eq!(teacher_layers(6, 3), vec![1, 3, 5]);
        assert_eq!(teacher_layers(6, 2), vec![2, 5]);
        assert_eq!(teacher_layers(6, 1), vec![5]);
        assert_eq!(teacher_layers(6, 6), vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(teacher_layers(2, 1), vec![1]);
    }
}
