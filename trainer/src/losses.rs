//! The losses of the pretext and downstream tasks, as plain functions of
//! tensors so each can be checked against a value computed by hand.

use tch::{Device, Kind, Reduction, Tensor};

use crate::model::bert::l2_normalize;

/// Symmetric InfoNCE with in-batch negatives: row i of `a` matches row i of `b`.
/// `a` and `b` are already normalised and scaled, so `a·bᵀ` are the logits.
pub fn info_nce(a: &Tensor, b: &Tensor) -> Tensor {
    let logits = a.matmul(&b.tr());
    let targets = Tensor::arange(logits.size()[0], (Kind::Int64, logits.device()));
    let forward = logits.cross_entropy_for_logits(&targets);
    let backward = logits.tr().cross_entropy_for_logits(&targets);
    (forward + backward) / 2.0
}

/// `[N]` int64 tensor of `values`.
pub fn positions(values: impl Iterator<Item = usize>, device: Device) -> Tensor {
    Tensor::from_slice(&values.map(|v| v as i64).collect::<Vec<_>>()).to_device(device)
}

/// Cross-entropy of each query (row i) against every candidate, the answer
/// being column `answers[i]`; the (query, column) pairs in `left_out` are
/// no candidates (they are answers too, in all but name).
pub fn bank_softmax(query: &Tensor, candidates: &Tensor, answers: &[usize], left_out: &[(usize, usize)]) -> Tensor {
    let mut logits = query.matmul(&candidates.tr());
    if !left_out.is_empty() {
        let (rows, columns): (Vec<usize>, Vec<usize>) = left_out.iter().copied().unzip();
        let flat = positions(rows.iter().zip(&columns).map(|(r, c)| r * candidates.size()[0] as usize + c), logits.device());
        let mask = Tensor::zeros([logits.numel() as i64], (Kind::Bool, logits.device())).index_fill(0, &flat, 1).view_as(&logits);
        logits = logits.masked_fill(&mask, f64::NEG_INFINITY);
    }
    logits.cross_entropy_for_logits(&positions(answers.iter().copied(), logits.device()))
}

/// The (query, column) pairs to leave out of a bank softmax whose query `i`
/// is bank column `columns[i]`: that column's text twins.
pub fn twin_pairs(columns: &[usize], text_twins: &[Vec<usize>]) -> Vec<(usize, usize)> {
    columns.iter().enumerate().flat_map(|(i, &c)| text_twins[c].iter().map(move |&twin| (i, twin))).collect()
}

/// Cross-entropy of each query against all targets of the batch (row i's target is i).
pub fn in_batch_softmax(query: &Tensor, target: &Tensor) -> Tensor {
    bank_softmax(query, target, &(0..query.size()[0] as usize).collect::<Vec<_>>(), &[])
}

/// Image-text matching: binary cross-entropy over two logits per pair
/// (`[B, 2]`, class 1 = matched).
pub fn itm(logits: &Tensor, matched: &Tensor) -> Tensor {
    logits.cross_entropy_for_logits(matched)
}

/// Cross-entropy over the positions whose label is not `IGNORE` (MLM tokens,
/// MPFC patches). `logits` is `[N, C]`, `labels` `[N]`.
pub fn masked_cross_entropy(logits: &Tensor, labels: &Tensor) -> Tensor {
    logits.log_softmax(-1, Kind::Float).nll_loss_nd::<Tensor>(labels, None, Reduction::Mean, IGNORE)
}

/// Label of positions that take no part in a loss.
pub const IGNORE: i64 = -100;

/// Pseudo-attribute classification with a cosine classifier: logits are
/// `scale · cos(embedding, class weight)`, targets are soft (1/|attributes| on
/// each attribute of the item), loss is the soft-target cross-entropy.
pub fn pac(embeddings: &Tensor, class_weights: &Tensor, scale: f64, soft_targets: &Tensor) -> Tensor {
    let logits = l2_normalize(embeddings).matmul(&l2_normalize(class_weights).tr()) * scale;
    soft_cross_entropy(&logits, soft_targets)
}

/// Cross-entropy against a target distribution per row.
pub fn soft_cross_entropy(logits: &Tensor, targets: &Tensor) -> Tensor {
    -(targets * logits.log_softmax(-1, Kind::Float)).sum_dim_intlist(-1, false, Kind::Float).mean(Kind::Float)
}

/// For each row of `similarity` (image i vs text j), the hardest wrong column:
/// the most similar j ≠ i. Computed without gradient.
pub fn hardest_negatives(similarity: &Tensor) -> Tensor {
    tch::no_grad(|| {
        let n = similarity.size()[0];
        let diagonal = Tensor::eye(n, (Kind::Bool, similarity.device()));
        similarity.masked_fill(&diagonal, f64::NEG_INFINITY).argmax(1, false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(rows: &[&[f32]]) -> Tensor {
        let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_slice(&flat).reshape([rows.len() as i64, rows[0].len() as i64])
    }

    fn value(x: &Tensor) -> f64 {
        x.double_value(&[])
    }

    /// −log softmax(row)[target], by hand.
    fn ce(row: &[f64], target: usize) -> f64 {
        let sum: f64 = row.iter().map(|v| v.exp()).sum();
        -(row[target].exp() / sum).ln()
    }

    #[test]
    fn info_nce_matches_a_hand_computation() {
        let a = t(&[&[1.0, 0.0], &[0.0, 2.0]]);
        let b = t(&[&[0.5, 0.5], &[1.0, -1.0]]);
        // logits = a·bᵀ = [[0.5, 1.0], [1.0, -2.0]]
        let rows = (ce(&[0.5, 1.0], 0) + ce(&[1.0, -2.0], 1)) / 2.0;
        let cols = (ce(&[0.5, 1.0], 0) + ce(&[1.0, -2.0], 1)) / 2.0; // symmetric logits here
        assert!((value(&info_nce(&a, &b)) - (rows + cols) / 2.0).abs() < 1e-6);
        // Asymmetric case: columns differ from rows.
        let b = t(&[&[2.0, 0.0], &[1.0, 1.0]]);
        // logits = [[2, 1], [0, 2]]; transposed = [[2, 0], [1, 2]]
        let expected = ((ce(&[2.0, 1.0], 0) + ce(&[0.0, 2.0], 1)) / 2.0 + (ce(&[2.0, 0.0], 0) + ce(&[1.0, 2.0], 1)) / 2.0) / 2.0;
        assert!((value(&info_nce(&a, &b)) - expected).abs() < 1e-6);
    }

    #[test]
    fn itm_is_binary_cross_entropy_over_two_logits() {
        let logits = t(&[&[0.0, 3.0], &[1.0, -1.0]]);
        let labels = Tensor::from_slice(&[1i64, 0]);
        let expected = (ce(&[0.0, 3.0], 1) + ce(&[1.0, -1.0], 0)) / 2.0;
        assert!((value(&itm(&logits, &labels)) - expected).abs() < 1e-6);
    }

    #[test]
    fn masked_cross_entropy_ignores_unmasked_positions() {
        let logits = t(&[&[2.0, 0.0, 0.0], &[0.0, 5.0, 0.0], &[1.0, 1.0, 3.0]]);
        let labels = Tensor::from_slice(&[0i64, IGNORE, 2]);
        let expected = (ce(&[2.0, 0.0, 0.0], 0) + ce(&[1.0, 1.0, 3.0], 2)) / 2.0;
        assert!((value(&masked_cross_entropy(&logits, &labels)) - expected).abs() < 1e-6);
    }

    #[test]
    fn pac_is_soft_cross_entropy_of_scaled_cosines() {
        let emb = t(&[&[3.0, 4.0]]); // unit: (0.6, 0.8)
        let weights = t(&[&[1.0, 0.0], &[0.0, 2.0], &[-1.0, 0.0]]); // unit: e1, e2, -e1
        let targets = t(&[&[0.5, 0.5, 0.0]]);
        let logits = [0.6 * 10.0, 0.8 * 10.0, -0.6 * 10.0];
        let expected = 0.5 * ce(&logits, 0) + 0.5 * ce(&logits, 1);
        assert!((value(&pac(&emb, &weights, 10.0, &targets)) - expected).abs() < 1e-5);
    }

    #[test]
    fn hardest_negative_is_the_most_similar_other_column() {
        let sim = t(&[&[9.0, 1.0, 2.0], &[5.0, 9.0, 4.0], &[0.0, 3.0, 9.0]]);
        assert_eq!(Vec::<i64>::try_from(hardest_negatives(&sim)).unwrap(), [2, 0, 1]);
    }

    #[test]
    fn bank_softmax_scores_every_candidate_but_the_left_out() {
        let query = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0]).view([2, 2]);
        let candidates = Tensor::from_slice(&[2.0f32, 0.0, 0.0, 3.0, 1.0, 1.0]).view([3, 2]);
        // Query 0 scores (2, 0, 1), query 1 scores (0, 3, 1).
        let all = bank_softmax(&query, &candidates, &[0, 2], &[]).double_value(&[]);
        let expected = (ce(&[2.0, 0.0, 1.0], 0) + ce(&[0.0, 3.0, 1.0], 2)) / 2.0;
        assert!((all - expected).abs() < 1e-5, "{all} vs {expected}");
        // Leaving out query 1's column 1 (a twin of its answer) drops that logit.
        let left_out = bank_softmax(&query, &candidates, &[0, 2], &[(1, 1)]).double_value(&[]);
        let expected = (ce(&[2.0, 0.0, 1.0], 0) + ce(&[0.0, 1.0], 1)) / 2.0;
        assert!((left_out - expected).abs() < 1e-5, "{left_out} vs {expected}");
    }
}
