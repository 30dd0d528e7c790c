//! Item vectors in int8 with one f32 scale per vector: symmetric, `scale =
//! max |x| / 127`, `code = round(x / scale)` in −127..=127, so every component
//! is off by at most `scale / 2` (half a step).

use super::kernel;
use super::IndexError;
use crate::nibble;

/// Quantises `xs` into `out` (same length); returns the scale.
pub fn quantize_into(xs: &[f32], out: &mut [i8]) -> f32 {
    let max = xs.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max == 0.0 {
        out.fill(0);
        return 0.0;
    }
    let scale = max / 127.0;
    let inverse = 127.0 / max;
    for (code, &x) in out.iter_mut().zip(xs) {
        // The clamp only guards against rounding just past 127.
        *code = (x * inverse).round().clamp(-127.0, 127.0) as i8;
    }
    scale
}

/// `n` vectors of `dim` int8 codes, row after row, and their scales.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedVectors {
    dim: usize,
    codes: Vec<i8>,
    scales: Vec<f32>,
    refinement: Option<Refinement>,
}

/// A second code per vector, of what its int8 code leaves out (the residual
/// `x − code × scale`): 4 bits per component with one scale per vector
/// (`max |residual| / 7`). With it, f32 queries are scored against
/// `code × scale + residual` — about fifteen times closer to the original
/// vectors — for half a byte more per dimension. Large, dense catalogs need
/// it: near-duplicates whose scores differ by less than the int8 rounding
/// otherwise swap places in the top 10 (bench/ann_wasm.sh).
#[derive(Debug, Clone, PartialEq)]
pub struct Refinement {
    /// Two codes per byte, the even dimension in the low nibble, each stored
    /// as `v + 8` for `v` in −7..=7 (a zero nibble is invalid); an odd
    /// dimension pads its last byte's high nibble with 8.
    packed: Vec<u8>,
    scales: Vec<f32>,
}

/// The refinement's largest code: residuals are rounded into −7..=7.
const REFINE_LEVELS: f32 = 7.0;

impl QuantizedVectors {
    /// Quantises `vectors` (`n × dim` f32, row after row). Every value must be
    /// finite.
    pub fn quantize(dim: usize, vectors: &[f32]) -> Result<Self, IndexError> {
        super::check_dim(dim)?;
        if vectors.len() % dim != 0 {
            return Err(IndexError::Shape { values: vectors.len(), dim });
        }
        if let Some(at) = vectors.iter().position(|x| !x.is_finite()) {
            return Err(IndexError::NotFinite { item: at / dim });
        }
        let mut codes = vec![0i8; vectors.len()];
        let scales = vectors.chunks_exact(dim).zip(codes.chunks_exact_mut(dim)).map(|(xs, out)| quantize_into(xs, out)).collect();
        Ok(QuantizedVectors { dim, codes, scales, refinement: None })
    }

    /// Adds the [`Refinement`] of `vectors`, the f32 vectors these were quantised from.
    pub fn refine(&mut self, vectors: &[f32]) -> Result<(), IndexError> {
        if vectors.len() != self.codes.len() {
            return Err(IndexError::Shape { values: vectors.len(), dim: self.dim });
        }
        let row_bytes = self.dim.div_ceil(2);
        let mut packed = vec![0u8; self.len() * row_bytes];
        let mut scales = Vec::with_capacity(self.len());
        let mut residual = vec![0f32; self.dim];
        for (item, (xs, out)) in vectors.chunks_exact(self.dim).zip(packed.chunks_exact_mut(row_bytes)).enumerate() {
            let scale = self.scales[item];
            for ((r, x), &c) in residual.iter_mut().zip(xs).zip(self.codes(item)) {
                *r = x - f32::from(c) * scale;
            }
            let max = residual.iter().fold(0f32, |m, r| m.max(r.abs()));
            let inverse = if max > 0.0 { REFINE_LEVELS / max } else { 0.0 };
            let code = |r: f32| (r * inverse).round().clamp(-REFINE_LEVELS, REFINE_LEVELS) as i8;
            for (byte, pair) in out.iter_mut().zip(residual.chunks(2)) {
                *byte = nibble::pack(code(pair[0]), pair.get(1).map_or(0, |&r| code(r)));
            }
            scales.push(max / REFINE_LEVELS);
        }
        self.refinement = Some(Refinement { packed, scales });
        Ok(())
    }

    /// Takes a stored [`Refinement`], checking that it fits these vectors.
    pub fn with_refinement(mut self, packed: Vec<u8>, scales: Vec<f32>) -> Result<Self, IndexError> {
        let row_bytes = self.dim.div_ceil(2);
        if scales.len() != self.len() || packed.len() != self.len() * row_bytes {
            return Err(IndexError::Invalid(format!(
                "a refinement of {} bytes and {} scales for {} vectors of {} dimensions",
                packed.len(),
                scales.len(),
                self.len(),
                self.dim
            )));
        }
        if let Some(item) = scales.iter().position(|s| !s.is_finite() || *s < 0.0) {
            return Err(IndexError::Invalid(format!("item {item} has the refinement scale {}, not a finite value ≥ 0", scales[item])));
        }
        if let Some(at) = nibble::first_invalid(&packed) {
            return Err(IndexError::Invalid(format!("refinement byte {at} holds the nibble 0; codes are stored as 1..=15")));
        }
        self.refinement = Some(Refinement { packed, scales });
        Ok(self)
    }

    /// The stored refinement, if any: its packed codes and scales.
    pub fn refinement(&self) -> Option<(&[u8], &[f32])> {
        self.refinement.as_ref().map(|r| (r.packed.as_slice(), r.scales.as_slice()))
    }

    /// Takes stored codes and scales, checking that they fit together.
    pub fn from_parts(dim: usize, codes: Vec<i8>, scales: Vec<f32>) -> Result<Self, IndexError> {
        super::check_dim(dim)?;
        let expected = scales.len().checked_mul(dim);
        if expected != Some(codes.len()) {
            return Err(IndexError::Invalid(format!("{} codes for {} vectors of {dim} dimensions", codes.len(), scales.len())));
        }
        if let Some(item) = scales.iter().position(|s| !s.is_finite() || *s < 0.0) {
            return Err(IndexError::Invalid(format!("item {item} has the scale {}, not a finite value ≥ 0", scales[item])));
        }
        Ok(QuantizedVectors { dim, codes, scales, refinement: None })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn len(&self) -> usize {
        self.scales.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scales.is_empty()
    }

    /// The codes of item `item`.
    pub fn codes(&self, item: usize) -> &[i8] {
        &self.codes[item * self.dim..(item + 1) * self.dim]
    }

    pub fn scale(&self, item: usize) -> f32 {
        self.scales[item]
    }

    /// All codes, row after row.
    pub fn all_codes(&self) -> &[i8] {
        &self.codes
    }

    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// Item `item` back in f32 (`code × scale`, plus its refinement's residual when there is one).
    pub fn dequantize(&self, item: usize) -> Vec<f32> {
        let scale = self.scales[item];
        let mut xs: Vec<f32> = self.codes(item).iter().map(|&c| f32::from(c) * scale).collect();
        if let Some(refinement) = &self.refinement {
            let scale = refinement.scales[item];
            let bytes = &refinement.packed[item * self.dim.div_ceil(2)..];
            for (x, v) in xs.iter_mut().zip(bytes.iter().flat_map(|&b| nibble::unpack(b))) {
                *x += f32::from(v) * scale;
            }
        }
        xs
    }

    /// The inner product of an f32 query with item `item` as stored (refined when there is a refinement).
    pub fn score(&self, query: &[f32], item: usize) -> f32 {
        let coarse = kernel::dot_f32_i8(query, self.codes(item)) * self.scales[item];
        let Some(refinement) = &self.refinement else { return coarse };
        let row_bytes = self.dim.div_ceil(2);
        let bytes = &refinement.packed[item * row_bytes..(item + 1) * row_bytes];
        // Unpacked a block at a time into codes for the f32 × int8 kernel.
        const BLOCK: usize = 128;
        let mut codes = [0i8; BLOCK];
        let mut fine = 0.0;
        for (q, block) in query.chunks(BLOCK).zip(bytes.chunks(BLOCK / 2)) {
            for (pair, &byte) in codes.chunks_exact_mut(2).zip(block) {
                pair.copy_from_slice(&nibble::unpack(byte));
            }
            fine += kernel::dot_f32_i8(q, &codes[..q.len()]);
        }
        coarse + fine * refinement.scales[item]
    }

    /// The inner product of two quantised vectors: item `item` and `codes`
    /// with scale `scale`.
    pub fn score_quantized(&self, codes: &[i8], scale: f32, item: usize) -> f32 {
        kernel::dot_i8(codes, self.codes(item)) as f32 * (scale * self.scales[item])
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    #[test]
    fn every_component_is_within_half_a_step() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let dim = 37;
        let vectors: Vec<f32> = (0..50 * dim).map(|_| rng.gen_range(-3.0..3.0)).collect();
        let q = QuantizedVectors::quantize(dim, &vectors).unwrap();
        for (item, xs) in vectors.chunks_exact(dim).enumerate() {
            let max = xs.iter().fold(0f32, |m, x| m.max(x.abs()));
            assert_eq!(q.scale(item), max / 127.0);
            // The largest component is represented exactly (code ±127).
            assert!(q.codes(item).iter().any(|c| c.abs() == 127));
            for (x, y) in xs.iter().zip(q.dequantize(item)) {
                assert!((x - y).abs() <= q.scale(item) * 0.5 + 1e-6, "item {item}: {x} → {y}");
            }
        }
    }

    #[test]
    fn zero_vectors_and_bad_input() {
        let q = QuantizedVectors::quantize(3, &[0.0, 0.0, 0.0, 1.0, -2.0, 0.5]).unwrap();
        assert_eq!((q.scale(0), q.codes(0)), (0.0, &[0i8, 0, 0][..]));
        assert_eq!(q.codes(1), &[64, -127, 32]);
        assert!(matches!(QuantizedVectors::quantize(3, &[1.0, 2.0]), Err(IndexError::Shape { values: 2, dim: 3 })));
        assert!(matches!(QuantizedVectors::quantize(2, &[1.0, 2.0, f32::NAN, 0.0]), Err(IndexError::NotFinite { item: 1 })));
        assert!(matches!(QuantizedVectors::quantize(0, &[]), Err(IndexError::Dim { dim: 0 })));
        assert!(QuantizedVectors::from_parts(2, vec![1, 2, 3], vec![1.0, 1.0]).is_err());
        assert!(QuantizedVectors::from_parts(2, vec![1, 2], vec![f32::INFINITY]).is_err());
    }

    #[test]
    fn quantised_scores_approximate_the_f32_inner_product() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let dim = 256;
        let a: Vec<f32> = (0..dim).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let b: Vec<f32> = (0..dim).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let exact: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        let items = QuantizedVectors::quantize(dim, &b).unwrap();
        let mut query_codes = vec![0i8; dim];
        let query_scale = quantize_into(&a, &mut query_codes);
        // Bounds from half a step per component: |Σ a·εb| ≤ |a|₁ s_b/2, and the
        // same again for the quantised query.
        let l1 = |v: &[f32]| v.iter().map(|x| x.abs()).sum::<f32>();
        let asymmetric_bound = l1(&a) * items.scale(0) * 0.5;
        assert!((items.score(&a, 0) - exact).abs() <= asymmetric_bound);
        let symmetric_bound = asymmetric_bound + (l1(&b) + dim as f32 * items.scale(0)) * query_scale * 0.5;
        assert!((items.score_quantized(&query_codes, query_scale, 0) - exact).abs() <= symmetric_bound);
    }
}
