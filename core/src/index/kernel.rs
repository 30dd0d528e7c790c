//! The dot products the index spends its time in: int8 × int8 (graph
//! traversal: a quantised query against quantised items) and f32 × int8
//! (re-ranking and exact search: the query at full precision against the
//! stored items).
//!
//! The portable versions sum into 16 independent accumulators, so that the
//! compiler turns them into vector code without reassociating anything;
//! natively they are compiled a second time with AVX2 enabled and picked at run
//! time. In WebAssembly with simd128 (`.cargo/config.toml` turns it on) the
//! hand-written `core::arch::wasm32` versions below run instead.
//!
//! Both operands must have the same length; a longer one is cut to the shorter.
//! Products of two int8 values are at most 128² = 16384, so the i32 sum cannot
//! overflow below 131072 dimensions ([`super::MAX_DIM`] is far lower).

/// Independent partial sums: wide enough for one AVX2 register of i32 × 2.
const LANES: usize = 16;

/// `Σ a[i] · b[i]` over int8 values.
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    return simd128::dot_i8(a, b);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was detected on this CPU.
        return unsafe { avx2::dot_i8(a, b) };
    }
    #[allow(unreachable_code)]
    dot_i8_portable(a, b)
}

/// `Σ q[i] · c[i]`: an f32 query against int8 codes (scale not applied).
pub fn dot_f32_i8(q: &[f32], c: &[i8]) -> f32 {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    return simd128::dot_f32_i8(q, c);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was detected on this CPU.
        return unsafe { avx2::dot_f32_i8(q, c) };
    }
    #[allow(unreachable_code)]
    dot_f32_i8_portable(q, c)
}

/// The reference int8 dot product that every other version must equal.
#[inline(always)]
pub fn dot_i8_portable(a: &[i8], b: &[i8]) -> i32 {
    let len = a.len().min(b.len());
    let (a, b) = (&a[..len], &b[..len]);
    let mut acc = [0i32; LANES];
    for (ca, cb) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
        for lane in 0..LANES {
            acc[lane] += i32::from(ca[lane]) * i32::from(cb[lane]);
        }
    }
    let tail = len - len % LANES;
    let rest: i32 = a[tail..].iter().zip(&b[tail..]).map(|(&x, &y)| i32::from(x) * i32::from(y)).sum();
    acc.iter().sum::<i32>() + rest
}

/// The reference f32 × int8 dot product (other versions may differ in the
/// order of their additions only).
#[inline(always)]
pub fn dot_f32_i8_portable(q: &[f32], c: &[i8]) -> f32 {
    let len = q.len().min(c.len());
    let (q, c) = (&q[..len], &c[..len]);
    let mut acc = [0f32; LANES];
    for (cq, cc) in q.chunks_exact(LANES).zip(c.chunks_exact(LANES)) {
        for lane in 0..LANES {
            acc[lane] += cq[lane] * f32::from(cc[lane]);
        }
    }
    let tail = len - len % LANES;
    let rest: f32 = q[tail..].iter().zip(&c[tail..]).map(|(&x, &y)| x * f32::from(y)).sum();
    acc.iter().sum::<f32>() + rest
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    /// The portable loop compiled for AVX2. Callers must have detected AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
        super::dot_i8_portable(a, b)
    }

    /// The portable loop compiled for AVX2. Callers must have detected AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn dot_f32_i8(q: &[f32], c: &[i8]) -> f32 {
        super::dot_f32_i8_portable(q, c)
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) mod simd128 {
    use core::arch::wasm32::*;

    /// 16 int8 pairs a step: each half widened to int16, `i32x4.dot_i16x8_s`
    /// multiplies and adds neighbouring pairs into int32 lanes.
    pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
        let len = a.len().min(b.len());
        let blocks = len / 16;
        let (mut low, mut high) = (i32x4_splat(0), i32x4_splat(0));
        for block in 0..blocks {
            // SAFETY: block * 16 + 16 <= len bounds both loads; wasm loads need no alignment.
            let (va, vb) = unsafe { (v128_load(a.as_ptr().add(block * 16).cast()), v128_load(b.as_ptr().add(block * 16).cast())) };
            low = i32x4_add(low, i32x4_dot_i16x8(i16x8_extend_low_i8x16(va), i16x8_extend_low_i8x16(vb)));
            high = i32x4_add(high, i32x4_dot_i16x8(i16x8_extend_high_i8x16(va), i16x8_extend_high_i8x16(vb)));
        }
        let sum = i32x4_add(low, high);
        let tail = blocks * 16;
        i32x4_extract_lane::<0>(sum)
            + i32x4_extract_lane::<1>(sum)
            + i32x4_extract_lane::<2>(sum)
            + i32x4_extract_lane::<3>(sum)
            + super::dot_i8_portable(&a[tail..len], &b[tail..len])
    }

    /// 8 values a step: the codes widened to int32 and converted to f32.
    pub fn dot_f32_i8(q: &[f32], c: &[i8]) -> f32 {
        let len = q.len().min(c.len());
        let blocks = len / 8;
        let (mut low, mut high) = (f32x4_splat(0.0), f32x4_splat(0.0));
        for block in 0..blocks {
            // SAFETY: block * 8 + 8 <= len bounds every load; wasm loads need no alignment.
            let (codes, q_low, q_high) = unsafe {
                let at = block * 8;
                (i16x8_load_extend_i8x8(c.as_ptr().add(at)), v128_load(q.as_ptr().add(at).cast()), v128_load(q.as_ptr().add(at + 4).cast()))
            };
            let c_low = f32x4_convert_i32x4(i32x4_extend_low_i16x8(codes));
            let c_high = f32x4_convert_i32x4(i32x4_extend_high_i16x8(codes));
            low = f32x4_add(low, f32x4_mul(q_low, c_low));
            high = f32x4_add(high, f32x4_mul(q_high, c_high));
        }
        let sum = f32x4_add(low, high);
        let tail = blocks * 8;
        f32x4_extract_lane::<0>(sum)
            + f32x4_extract_lane::<1>(sum)
            + f32x4_extract_lane::<2>(sum)
            + f32x4_extract_lane::<3>(sum)
            + super::dot_f32_i8_portable(&q[tail..len], &c[tail..len])
    }
}

/// Natively these check the portable and AVX2 versions; `bash
/// bench/ann/wasm_tests.sh` runs them in WebAssembly, where the simd128
/// versions are checked as well.
#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn naive_i8(a: &[i8], b: &[i8]) -> i32 {
        a.iter().zip(b).map(|(&x, &y)| i32::from(x) * i32::from(y)).sum()
    }

    fn naive_f32_i8(q: &[f32], c: &[i8]) -> f64 {
        q.iter().zip(c).map(|(&x, &y)| f64::from(x) * f64::from(y)).sum()
    }

    /// Lengths around every block size, including the extreme codes ±127 and −128.
    fn cases() -> Vec<(Vec<i8>, Vec<i8>, Vec<f32>)> {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut cases = Vec::new();
        for len in [0, 1, 7, 8, 9, 15, 16, 17, 31, 33, 64, 255, 256, 257, 1000] {
            let a: Vec<i8> = (0..len).map(|_| rng.gen()).collect();
            let b: Vec<i8> = (0..len).map(|_| rng.gen()).collect();
            let q: Vec<f32> = (0..len).map(|_| rng.gen_range(-1.0..1.0)).collect();
            cases.push((a, b, q));
        }
        cases.push((vec![-128; 300], vec![-128; 300], vec![1.0; 300]));
        cases.push((vec![127; 300], vec![-127; 300], vec![-1.0; 300]));
        cases
    }

    #[test]
    fn every_int8_version_equals_the_naive_sum() {
        for (a, b, _) in cases() {
            let expected = naive_i8(&a, &b);
            assert_eq!(dot_i8_portable(&a, &b), expected, "portable, len {}", a.len());
            assert_eq!(dot_i8(&a, &b), expected, "dispatched, len {}", a.len());
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            assert_eq!(simd128::dot_i8(&a, &b), expected, "simd128, len {}", a.len());
        }
    }

    #[test]
    fn every_f32_int8_version_matches_the_naive_sum() {
        for (_, c, q) in cases() {
            let expected = naive_f32_i8(&q, &c);
            let tolerance = 1e-5 * (1.0 + q.iter().zip(&c).map(|(&x, &y)| f64::from(x.abs()) * f64::from(y).abs()).sum::<f64>());
            #[allow(unused_mut)]
            let mut versions = vec![("portable", dot_f32_i8_portable(&q, &c)), ("dispatched", dot_f32_i8(&q, &c))];
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            versions.push(("simd128", simd128::dot_f32_i8(&q, &c)));
            for (name, got) in versions {
                assert!((f64::from(got) - expected).abs() <= tolerance, "{name}, len {}: {got} vs {expected}", q.len());
            }
        }
    }

    #[test]
    fn unequal_lengths_use_the_common_prefix() {
        let a = [1i8, 2, 3, 4];
        let b = [5i8, 6];
        assert_eq!(dot_i8(&a, &b), 17);
        assert_eq!(dot_f32_i8(&[1.0, -1.0, 9.0], &b), -1.0);
    }
}
