//! Retrieval and classification metrics, as plain functions over scores and
//! labels so that the trainer's evaluation, the bundle checks and the
//! benchmarks compute them the same way.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;

/// A class per row: rows whose texts (strings or token ids) are identical
/// share one, so that no protocol or loss asks a model to tell them apart.
pub fn text_classes<T: Hash + Eq>(texts: &[T]) -> Vec<usize> {
    let mut class_of: HashMap<&T, usize> = HashMap::new();
    texts
        .iter()
        .map(|t| {
            let next = class_of.len();
            *class_of.entry(t).or_insert(next)
        })
        .collect()
}

/// Each row's text twins: the other rows of its [`text_classes`] class.
pub fn text_twins<T: Hash + Eq>(texts: &[T]) -> Vec<Vec<usize>> {
    let class = text_classes(texts);
    let mut members: HashMap<usize, Vec<usize>> = HashMap::new();
    for (row, &c) in class.iter().enumerate() {
        members.entry(c).or_default().push(row);
    }
    class.iter().enumerate().map(|(row, c)| members[c].iter().copied().filter(|&other| other != row).collect()).collect()
}

/// 0-based rank of `scores[positive]`: how many other entries score at least
/// as high. Ties never help the positive: an equal score ranks above it.
pub fn rank_of(scores: &[f32], positive: usize) -> usize {
    rank_among_answers(scores, positive, |_| false)
}

/// Like [`rank_of`], where entries for which `same_answer` holds are not
/// competitors but the same answer (a colour sibling whose text is identical
/// to the positive's: no query can tell them apart).
pub fn rank_among_answers(scores: &[f32], positive: usize, same_answer: impl Fn(usize) -> bool) -> usize {
    let target = scores[positive];
    scores.iter().enumerate().filter(|&(i, &s)| i != positive && s >= target && !same_answer(i)).count()
}

/// Percentage of ranks below `k` (recall@k in percent, as the paper reports).
pub fn recall_at(ranks: &[usize], k: usize) -> f64 {
    if ranks.is_empty() {
        return 0.0;
    }
    100.0 * ranks.iter().filter(|&&r| r < k).count() as f64 / ranks.len() as f64
}

/// Percentage of predictions equal to the truth.
pub fn accuracy(truth: &[usize], predicted: &[usize]) -> f64 {
    if truth.is_empty() {
        return 0.0;
    }
    100.0 * truth.iter().zip(predicted).filter(|(t, p)| t == p).count() as f64 / truth.len() as f64
}

/// Macro-averaged F1 in percent over the classes present in `truth`
/// (scikit-learn's `f1_score(average="macro", labels=present)`).
pub fn macro_f1(truth: &[usize], predicted: &[usize]) -> f64 {
    let classes: BTreeSet<usize> = truth.iter().copied().collect();
    if classes.is_empty() {
        return 0.0;
    }
    let total: f64 = classes
        .iter()
        .map(|&c| {
            let tp = truth.iter().zip(predicted).filter(|&(&t, &p)| t == c && p == c).count() as f64;
            let fp = truth.iter().zip(predicted).filter(|&(&t, &p)| t != c && p == c).count() as f64;
            let fn_ = truth.iter().zip(predicted).filter(|&(&t, &p)| t == c && p != c).count() as f64;
            if tp == 0.0 {
                0.0
            } else {
                2.0 * tp / (2.0 * tp + fp + fn_)
            }
        })
        .sum();
    100.0 * total / classes.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_counts_higher_scores_and_every_tie() {
        assert_eq!(rank_of(&[0.1, 0.9, 0.5], 2), 1);
        assert_eq!(rank_of(&[0.1, 0.9, 0.5], 1), 0);
        assert_eq!(rank_of(&[0.5, 0.5, 0.5], 2), 2, "ties before the positive rank above it");
        assert_eq!(rank_of(&[0.5, 0.5, 0.5], 0), 2, "ties after the positive rank above it too");
        assert_eq!(rank_of(&[0.5, 0.4, 0.5], 0), 1);
    }

    #[test]
    fn same_answers_are_not_competitors() {
        let scores = [0.5, 0.9, 0.5, 0.7];
        assert_eq!(rank_of(&scores, 0), 3);
        assert_eq!(rank_among_answers(&scores, 0, |i| i == 1), 2);
        assert_eq!(rank_among_answers(&scores, 0, |i| i == 1 || i == 2), 1);
    }

    #[test]
    fn recall_accuracy_and_macro_f1_match_hand_computed_values() {
        assert_eq!(recall_at(&[0, 3, 10, 1], 2), 50.0);
        assert_eq!(recall_at(&[0, 3, 10, 1], 11), 100.0);
        assert_eq!(accuracy(&[0, 1, 2, 2], &[0, 1, 1, 2]), 75.0);
        // Class 0: tp 1, fp 0, fn 0 → 1. Class 1: tp 1, fp 1, fn 0 → 2/3.
        // Class 2: tp 1, fp 0, fn 1 → 2/3. Mean 7/9.
        let f1 = macro_f1(&[0, 1, 2, 2], &[0, 1, 1, 2]);
        assert!((f1 - 100.0 * 7.0 / 9.0).abs() < 1e-9, "{f1}");
        assert_eq!(macro_f1(&[1, 1], &[0, 0]), 0.0);
    }
}
