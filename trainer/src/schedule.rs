//! Which task each training step is spent on: the pretext and downstream
//! tasks, the sampler that picks one per step in proportion to the recipe's
//! weights, and the per-step RNG that makes a resumed run draw exactly what
//! the uninterrupted run drew.

use std::collections::BTreeMap;
use std::fmt::Debug;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A task a training step can be spent on (pretext or downstream).
pub trait LoopTask: Copy + Ord + Debug + Serialize + DeserializeOwned {
    fn name(self) -> &'static str;
}

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

impl LoopTask for Task {
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

/// A downstream task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Downstream {
    /// Cross-modal retrieval (image↔text), trained with ITC.
    Xmr,
    /// Text-guided image retrieval: reference image + modification text → target image.
    Tgir,
    /// Category and subcategory recognition (both heads, one step).
    Cr,
    /// Outfit complementary item retrieval.
    Ocir,
}

impl LoopTask for Downstream {
    fn name(self) -> &'static str {
        match self {
            Downstream::Xmr => "xmr",
            Downstream::Tgir => "tgir",
            Downstream::Cr => "cr",
            Downstream::Ocir => "ocir",
        }
    }
}

impl Downstream {
    pub const ALL: [Downstream; 4] = [Downstream::Xmr, Downstream::Tgir, Downstream::Cr, Downstream::Ocir];

    pub fn parse(name: &str) -> Option<Downstream> {
        Downstream::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// Picks one task per step in proportion to its weight; tasks with weight 0
/// or absent are never picked.
#[derive(Debug, Clone)]
pub struct TaskSampler<T = Task> {
    tasks: Vec<(T, f64)>,
    total: f64,
}

impl<T: LoopTask> TaskSampler<T> {
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

/// The order of examples in one epoch.
pub fn epoch_order(len: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
    order
}

/// The RNG of one step.
pub fn step_rng(seed: u64, step: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ step)
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
            *counts.entry(sampler.sample(&mut step_rng(7, step))).or_default() += 1;
        }
        for (task, p) in Task::paper_probabilities() {
            let share = counts[&task] as f64 / n as f64;
            assert!((share - p).abs() < 0.015, "{} drawn {share:.3}, expected {p}", task.name());
        }
    }
}
