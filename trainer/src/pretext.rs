//! The six pretext tasks of FashionViL and the sampler that picks one per step.
//!
//! Each task turns a [`PretextBatch`] into a scalar loss with the model; the
//! batch carries only what its task needs (built by the data pipeline).

use std::collections::BTreeMap;

use rand::Rng;
use serde::{Deserialize, Serialize};
use tch::nn::Module;
use tch::{Kind, Tensor};

use crate::losses::{hardest_negatives, info_nce, itm, masked_cross_entropy, pac};
use crate::model::fashionvil::FashionVil;

/// A pretext task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Image-text contrastive learning.
    Itc,
    /// Multi-view contrastive learning.
    Mvc,
    /// Image-text matching with hard negatives.
    Itm,
    /// Masked language modelling (whole words, conditioned on the image).
    Mlm,
    /// Masked patch feature classification (codes of the image tokenizer).
    Mpfc,
    /// Pseudo-attribute classification.
    Pac,
}

impl crate::train_loop::LoopTask for Task {
    fn name(self) -> &'static str {
        Task::name(self)
    }
}

impl Task {
    pub const ALL: [Task; 6] = [Task::Itc, Task::Mvc, Task::Itm, Task::Mlm, Task::Mpfc, Task::Pac];

    pub fn name(self) -> &'static str {
        match self {
            Task::Itc => "itc",
            Task::Mvc => "mvc",
            Task::Itm => "itm",
            Task::Mlm => "mlm",
            Task::Mpfc => "mpfc",
            Task::Pac => "pac",
        }
    }

    /// The paper's sampling probabilities.
    pub fn paper_probabilities() -> BTreeMap<Task, f64> {
        [(Task::Itc, 0.20), (Task::Mvc, 0.20), (Task::Itm, 0.15), (Task::Mlm, 0.15), (Task::Mpfc, 0.15), (Task::Pac, 0.15)].into()
    }
}

/// Picks one task per step in proportion to its weight; tasks with weight 0
/// or absent are never picked.
#[derive(Debug, Clone)]
pub struct TaskSampler<T = Task> {
    tasks: Vec<(T, f64)>,
    total: f64,
}

impl<T: crate::train_loop::LoopTask> TaskSampler<T> {
    pub fn new(weights: &BTreeMap<T, f64>) -> Result<Self, String> {
        let tasks: Vec<(T, f64)> = weights.iter().filter(|(_, w)| **w > 0.0).map(|(t, w)| (*t, *w)).collect();
        if tasks.is_empty() {
            return Err("no task has a positive probability".into());
        }
        if let Some((t, w)) = weights.iter().find(|(_, w)| !w.is_finite() || **w < 0.0) {
            return Err(format!("task {} has an invalid probability {w}", t.name()));
        }
        let total = tasks.iter().map(|(_, w)| w).sum();
        Ok(TaskSampler { tasks, total })
    }

    pub fn tasks(&self) -> impl Iterator<Item = T> + '_ {
        self.tasks.iter().map(|(t, _)| *t)
    }

    pub fn sample<R: Rng>(&self, rng: &mut R) -> T {
        let mut pick = rng.gen::<f64>() * self.total;
        for &(task, weight) in &self.tasks {
            if pick < weight {
                return task;
            }
            pick -= weight;
        }
        self.tasks[self.tasks.len() - 1].0
    }
}

/// The tensors of one step. `features` and the text are always present; the
/// optional parts belong to the task named in `task`.
#[derive(Debug)]
pub struct PretextBatch {
    pub task: Task,
    /// Image feature maps `[B, C, 7, 7]` (or images `[B, 3, 224, 224]` when the
    /// model has its image encoder).
    pub images: Tensor,
    pub ids: Tensor,
    pub text_mask: Tensor,
    /// MVC: the second view, and the masks with 25% of tokens dropped.
    pub second_view: Option<Tensor>,
    pub mvc_text_mask: Option<Tensor>,
    pub mvc_visual_mask: Option<Tensor>,
    /// MLM: masked ids and labels (`IGNORE` where nothing is predicted).
    pub mlm_ids: Option<Tensor>,
    pub mlm_labels: Option<Tensor>,
    /// MPFC: 1 on masked patches `[B, 49]`, and the codes to predict there.
    pub mpfc_mask: Option<Tensor>,
    pub mpfc_labels: Option<Tensor>,
    /// PAC: soft targets `[B, attributes]`.
    pub pac_targets: Option<Tensor>,
}

fn part<'a>(value: &'a Option<Tensor>, task: Task, name: &str) -> &'a Tensor {
    value.as_ref().unwrap_or_else(|| panic!("a {} batch needs {name}", task.name()))
}

impl FashionVil {
    /// Visual tokens of the batch's images (through the image encoder when the
    /// model has one, else the images are cached feature maps).
    fn tokens_of(&self, images: &Tensor, train: bool) -> Tensor {
        let features = if self.image_encoder.is_some() { self.image_features(images, train) } else { images.shallow_clone() };
        self.visual_tokens(&features)
    }

    /// The loss of the batch's task.
    pub fn pretext_loss(&self, batch: &PretextBatch, train: bool) -> Tensor {
        let task = batch.task;
        let tokens = self.tokens_of(&batch.images, train);
        let (b, v) = (tokens.size()[0], tokens.size()[1]);
        let all_visual = Tensor::ones([b, v], (Kind::Int64, tokens.device()));
        match task {
            Task::Itc => {
                let image = self.image_embedding(&tokens);
                let text = self.text_embedding(&batch.ids, &batch.text_mask, train);
                info_nce(&image, &text)
            }
            Task::Mvc => {
                let image = self.image_embedding(&tokens);
                let second = self.tokens_of(part(&batch.second_view, task, "second_view"), train);
                let visual_mask = part(&batch.mvc_visual_mask, task, "mvc_visual_mask");
                let (_, fused) = self.fuse(&batch.ids, part(&batch.mvc_text_mask, task, "mvc_text_mask"), &second, visual_mask, train);
                info_nce(&image, &self.fused_visual_embedding(&fused, visual_mask))
            }
            Task::Itm => {
                let image = self.image_embedding(&tokens);
                let text = self.text_embedding(&batch.ids, &batch.text_mask, train);
                // The second half of the batch gets the hardest wrong text.
                let wrong = hardest_negatives(&image.matmul(&text.tr()));
                let half = b / 2;
                let order = Tensor::cat(&[Tensor::arange(b - half, (Kind::Int64, tokens.device())), wrong.narrow(0, b - half, half)], 0);
                let labels = Tensor::cat(
                    &[Tensor::ones([b - half], (Kind::Int64, tokens.device())), Tensor::zeros([half], (Kind::Int64, tokens.device()))],
                    0,
                );
                let ids = batch.ids.index_select(0, &order);
                let mask = batch.text_mask.index_select(0, &order);
                let (text_out, _) = self.fuse(&ids, &mask, &tokens, &all_visual, train);
                itm(&self.itm_head.forward(&self.pooled(&text_out)), &labels)
            }
            Task::Mlm => {
                let ids = part(&batch.mlm_ids, task, "mlm_ids");
                let (text_out, _) = self.fuse(ids, &batch.text_mask, &tokens, &all_visual, train);
                let h = text_out.size()[2];
                let word_embeddings = &self.fusion_bert().embeddings.word_embeddings.ws;
                let logits = self.mlm_head.forward(&text_out.reshape([-1, h]), word_embeddings);
                masked_cross_entropy(&logits, &part(&batch.mlm_labels, task, "mlm_labels").reshape([-1]))
            }
            Task::Mpfc => {
                let masked = part(&batch.mpfc_mask, task, "mpfc_mask");
                // Masked patches are zeroed.
                let keep = (masked.eq(0)).to_kind(tokens.kind()).unsqueeze(-1);
                let (_, visual_out) = self.fuse(&batch.ids, &batch.text_mask, &(&tokens * keep), &all_visual, train);
                let h = visual_out.size()[2];
                let logits = self.mpfc_head.forward(&visual_out.reshape([-1, h]));
                masked_cross_entropy(&logits, &part(&batch.mpfc_labels, task, "mpfc_labels").reshape([-1]))
            }
            Task::Pac => {
                let targets = part(&batch.pac_targets, task, "pac_targets");
                let image = self.image_embedding(&tokens);
                let text = self.text_embedding(&batch.ids, &batch.text_mask, train);
                let scale = self.config.pac_scale;
                (pac(&image, &self.pac_weights, scale, targets) + pac(&text, &self.pac_weights, scale, targets)) / 2.0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn sampler_follows_the_probabilities_and_skips_disabled_tasks() {
        let mut weights = Task::paper_probabilities();
        weights.insert(Task::Mpfc, 0.0);
        let sampler = TaskSampler::new(&weights).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let mut counts: BTreeMap<Task, usize> = BTreeMap::new();
        let n = 40_000;
        for _ in 0..n {
            *counts.entry(sampler.sample(&mut rng)).or_default() += 1;
        }
        assert!(!counts.contains_key(&Task::Mpfc));
        let share = |t| counts[&t] as f64 / n as f64;
        assert!((share(Task::Itc) - 0.20 / 0.85).abs() < 0.01, "{}", share(Task::Itc));
        assert!((share(Task::Pac) - 0.15 / 0.85).abs() < 0.01);
        assert!(TaskSampler::new(&[(Task::Itc, 0.0)].into()).is_err());
    }

    #[test]
    fn per_step_draws_follow_the_probabilities() {
        // Training draws each step's task from a fresh RNG seeded by (seed, step).
        let sampler = TaskSampler::new(&Task::paper_probabilities()).unwrap();
        let mut counts: BTreeMap<Task, usize> = BTreeMap::new();
        let n = 20_000;
        for step in 0..n {
            *counts.entry(sampler.sample(&mut crate::data::step_rng(7, step))).or_default() += 1;
        }
        for (task, p) in Task::paper_probabilities() {
            let share = counts[&task] as f64 / n as f64;
            assert!((share - p).abs() < 0.015, "{} drawn {share:.3}, expected {p}", task.name());
        }
    }
}
