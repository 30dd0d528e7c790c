//! The random masks of the pretext tasks, drawn from the caller's seeded RNG so
//! a run is reproducible: whole-word masking for MLM, block masking of patches
//! for MPFC, and token dropping for MVC.

use rand::seq::SliceRandom;
use rand::Rng;

use crate::losses::IGNORE;

/// Special token ids the MLM mask needs.
#[derive(Debug, Clone, Copy)]
pub struct MaskTokens {
    pub mask: i64,
    pub vocab_size: i64,
}

/// Whole-word masking: picks words until about `rate` of the word tokens are
/// chosen; every token of a chosen word is replaced by `[MASK]` 80% of the
/// time, a random token 10%, kept 10%. Returns the input ids and the labels
/// (`IGNORE` where nothing is predicted). Special tokens (`word_ids` `None`)
/// are never chosen. At least one word is chosen when the text has any.
pub fn whole_word_mask<R: Rng>(ids: &[i64], word_ids: &[Option<u32>], rate: f64, tokens: MaskTokens, rng: &mut R) -> (Vec<i64>, Vec<i64>) {
    let mut words: Vec<u32> = word_ids.iter().flatten().copied().collect();
    words.dedup();
    words.shuffle(rng);
    let word_tokens = word_ids.iter().filter(|w| w.is_some()).count();
    let budget = ((word_tokens as f64 * rate).round() as usize).max(1);
    let mut chosen = Vec::new();
    let mut covered = 0;
    for word in words {
        if covered >= budget {
            break;
        }
        covered += word_ids.iter().filter(|w| **w == Some(word)).count();
        chosen.push(word);
    }
    let mut input = ids.to_vec();
    let mut labels = vec![IGNORE; ids.len()];
    for (position, word) in word_ids.iter().enumerate() {
        if !word.is_some_and(|w| chosen.contains(&w)) {
            continue;
        }
        labels[position] = ids[position];
        let roll: f64 = rng.gen();
        if roll < 0.8 {
            input[position] = tokens.mask;
        } else if roll < 0.9 {
            input[position] = rng.gen_range(0..tokens.vocab_size);
        }
    }
    (input, labels)
}

/// A block of `count` patches of a `grid`×`grid` patch grid (MPFC masks 8 of
/// 49 as a 2×4 or 4×2 block at a random place). Returns row-major indices.
pub fn patch_block<R: Rng>(grid: usize, count: usize, rng: &mut R) -> Vec<usize> {
    let (h, w) = if rng.gen_bool(0.5) { (2, count.div_ceil(2)) } else { (count.div_ceil(2), 2) };
    let (h, w) = (h.min(grid), w.min(grid));
    let (top, left) = (rng.gen_range(0..=grid - h), rng.gen_range(0..=grid - w));
    let mut block: Vec<usize> = (top..top + h).flat_map(|r| (left..left + w).map(move |c| r * grid + c)).collect();
    block.truncate(count);
    block
}

/// Drops `rate` of the positions where `keep` is true (MVC drops 25% of text
/// and patch tokens through the attention mask); positions in `protect` (e.g.
/// `[CLS]`) always stay.
pub fn drop_tokens<R: Rng>(keep: &mut [bool], rate: f64, protect: &[usize], rng: &mut R) {
    let mut candidates: Vec<usize> = (0..keep.len()).filter(|i| keep[*i] && !protect.contains(i)).collect();
    candidates.shuffle(rng);
    let drop = (candidates.len() as f64 * rate).round() as usize;
    for &i in &candidates[..drop] {
        keep[i] = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    const TOKENS: MaskTokens = MaskTokens { mask: 103, vocab_size: 1000 };

    #[test]
    fn whole_words_are_masked_together_and_specials_never() {
        // [CLS] black ankle boot ##s with heel ##s [SEP]
        let ids = [101, 11, 12, 13, 14, 15, 16, 17, 102];
        let words = [None, Some(0), Some(1), Some(2), Some(2), Some(3), Some(4), Some(4), None];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut masked_positions = 0;
        let mut replaced_by_mask = 0;
        for _ in 0..2000 {
            let (input, labels) = whole_word_mask(&ids, &words, 0.15, TOKENS, &mut rng);
            assert_eq!((labels[0], labels[8]), (IGNORE, IGNORE));
            assert_eq!((input[0], input[8]), (101, 102));
            for pair in [(3, 4), (6, 7)] {
                assert_eq!(labels[pair.0] == IGNORE, labels[pair.1] == IGNORE, "word pieces masked together");
            }
            for (i, &label) in labels.iter().enumerate() {
                if label != IGNORE {
                    assert_eq!(label, ids[i]);
                    masked_positions += 1;
                    replaced_by_mask += usize::from(input[i] == TOKENS.mask);
                } else {
                    assert_eq!(input[i], ids[i]);
                }
            }
        }
        let share = replaced_by_mask as f64 / masked_positions as f64;
        assert!((share - 0.8).abs() < 0.03, "[MASK] share {share}");
    }

    #[test]
    fn patch_block_is_a_contiguous_block_of_eight() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for _ in 0..500 {
            let block = patch_block(7, 8, &mut rng);
            assert_eq!(block.len(), 8);
            let rows: Vec<usize> = block.iter().map(|i| i / 7).collect();
            let cols: Vec<usize> = block.iter().map(|i| i % 7).collect();
            let height = rows.iter().max().unwrap() - rows.iter().min().unwrap() + 1;
            let width = cols.iter().max().unwrap() - cols.iter().min().unwrap() + 1;
            assert!(matches!((height, width), (2, 4) | (4, 2)));
        }
    }

    #[test]
    fn drop_tokens_drops_a_quarter_and_keeps_protected() {
        let mut keep = vec![true; 41];
        keep[40] = false;
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        drop_tokens(&mut keep, 0.25, &[0], &mut rng);
        assert!(keep[0]);
        assert_eq!(keep.iter().filter(|k| !**k).count(), 1 + 10);
    }
}
