//! Int8 weights for the text encoder's linear layers.
//!
//! Format: a linear layer `<name>` stores, in place of its f32 `<name>.weight`
//! `[out, in]`, the tensors `<name>.weight_int8` (`I8`, `[out, in]`, values in
//! −127..=127) and `<name>.weight_scale` (`F32`, `[out]`), with
//! `weight[o][i] ≈ weight_int8[o][i] × weight_scale[o]`: symmetric, one scale
//! per output channel (`max |weight[o]| / 127`). The bias stays f32. Which
//! layers: the linear layers of the text encoder's transformer layers
//! (`<bert>encoder.layer.*`: query, key, value, the attention output, the
//! intermediate and output dense layers), about 10.6 M of MiniLM's 22.7 M
//! parameters, and the word embeddings (11.7 M; one scale per token's row),
//! which are dequantised when loaded: int8 there saves download, not compute.
//! Position embeddings, LayerNorms, the pooler and the heads stay f32.
//!
//! Stored in 4 bits ([`StoredBits::Int4`], for the smallest download): the
//! layer stores `<name>.weight_int4` (`U8`, `[out, in / 2]`, two values per
//! byte, the even column in the low nibble, each value `v` in −7..=7 stored as
//! `v + 8`) and `<name>.weight_int4_scale` (`F16`, `[out, in / 32]`): one
//! scale per group of 32 inputs, `max |group| / 7`. Such a layer is widened to
//! the int8 form above when it is loaded, so it computes as int8 does; only the
//! rounding of the 4-bit values is added. Matrices whose input width is not a
//! multiple of 32 stay in int8.
//!
//! Two ways to multiply with int8 weights ([`Int8Kernel`]):
//! - [`Int8Kernel::PerChannel`]: a kernel of our own. Each activation row is
//!   quantised to 16 bits with its own scale (the int8 weights are widened to
//!   16 bits for the multiply anyway, and 8-bit activations lose too much at
//!   BERT's outlier features), the products are summed in i32 (simd128
//!   `i32x4.dot_i16x8_s` in WebAssembly, AVX2 `vpmaddwd` natively, in tiles
//!   of two rows by four output channels), and each sum is scaled back by its
//!   row's and its channel's scales.
//! - [`Int8Kernel::Q8_0`]: candle's `QMatMul` on GGML Q8_0 blocks (32 values
//!   with an f16 scale) made from the int8 weights at load time; candle has
//!   simd128, AVX2 and AVX512-VNNI kernels for it.
//!
//! `bench/text_encoder.sh` measures both (`bench/results/text_encoder.md`): ours
//! is about twice as fast as f32 natively and in WebAssembly, candle's Q8_0
//! slower than f32 in both, so ours is [`Int8Kernel::default`].

use std::borrow::Cow;
use std::collections::HashMap;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{CpuStorage, CustomOp1, Layout, Module, Shape, Tensor};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use super::weights::Weights;
use super::{bert, ModelError};
use crate::nibble;

/// Suffix of a layer's int8 weight values.
pub const INT8_SUFFIX: &str = "weight_int8";
/// Suffix of a layer's per-output-channel scales.
pub const SCALE_SUFFIX: &str = "weight_scale";
/// Suffix of a layer's packed 4-bit weight values.
pub const INT4_SUFFIX: &str = "weight_int4";
/// Suffix of a layer's 4-bit group scales.
pub const INT4_SCALE_SUFFIX: &str = "weight_int4_scale";
/// Inputs that share one 4-bit scale.
pub const INT4_GROUP: usize = 32;

/// The precision [`quantize_safetensors`] stores the text encoder's matrices in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StoredBits {
    /// Per-output-channel int8: what the kernels compute with.
    #[default]
    Int8,
    /// 4-bit groups of 32 inputs, widened to int8 when loaded: half the bytes.
    Int4,
}

/// How int8 layers multiply; see the module documentation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Int8Kernel {
    /// The faster one natively and in WebAssembly (bench/results/text_encoder.md).
    #[default]
    PerChannel,
    Q8_0,
}

/// How a checkpoint's weights become the model's layers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Quantise the text encoder's f32 linear layers to int8 while loading (as
    /// [`quantize_safetensors`] would); layers stored as int8 are int8 anyway.
    pub quantize_text_encoder: bool,
    pub int8_kernel: Int8Kernel,
}

/// A weight matrix `[rows = out, cols = in]` in int8 with one scale per row.
#[derive(Debug, Clone)]
pub struct Int8Matrix {
    rows: usize,
    cols: usize,
    values: Vec<i8>,
    scales: Vec<f32>,
}

/// Quantises `xs` symmetrically to −127..=127 into `out`; returns the scale.
fn quantize_weight_row(xs: &[f32], out: &mut [i8]) -> f32 {
    let max = xs.iter().fold(0f32, |m, x| larger(m, x.abs()));
    if max == 0.0 {
        out.fill(0);
        return 0.0;
    }
    let scale = max / 127.0;
    let inverse = 127.0 / max;
    for (q, x) in out.iter_mut().zip(xs) {
        *q = round_weight(x * inverse);
    }
    scale
}

/// `x` rounded half away from zero into −127..=127. `f32::round` is a libm
/// call in WebAssembly (and without SSE4.1); this form is not.
fn round_weight(x: f32) -> i8 {
    let v = x.clamp(-127.0, 127.0);
    (v + 0.5f32.copysign(v)) as i8
}

/// The larger of two magnitudes. `f32::max` is a libm call in WebAssembly (its
/// NaN rule is not the instruction's); a NaN `b` is skipped as `f32::max` does.
fn larger(a: f32, b: f32) -> f32 {
    if b > a {
        b
    } else {
        a
    }
}

impl Int8Matrix {
    /// Quantises a row-major f32 matrix `[rows, cols]` per row.
    pub fn quantize(weight: &[f32], rows: usize, cols: usize) -> Self {
        assert_eq!(weight.len(), rows * cols, "weight has {} values, not {rows}×{cols}", weight.len());
        let mut values = vec![0i8; rows * cols];
        let scales =
            weight.chunks_exact(cols.max(1)).zip(values.chunks_exact_mut(cols.max(1))).map(|(w, q)| quantize_weight_row(w, q)).collect();
        Int8Matrix { rows, cols, values, scales }
    }

    /// A matrix from stored values and scales (checked by the caller's shapes).
    pub fn from_parts(rows: usize, cols: usize, values: Vec<i8>, scales: Vec<f32>) -> Self {
        assert_eq!((values.len(), scales.len()), (rows * cols, rows), "int8 matrix parts do not match {rows}×{cols}");
        Int8Matrix { rows, cols, values, scales }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn values(&self) -> &[i8] {
        &self.values
    }

    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// The f32 matrix the int8 values stand for.
    /// The int8 matrix `name.weight_int8` × `name.weight_scale` of `rows × cols`
    /// when the file stores one, or the int8 form of its 4-bit matrix
    /// (`name.weight_int4`, `name.weight_int4_scale`); `None` when it stores
    /// `name.weight` instead.
    pub fn read(weights: &Weights, name: &str, rows: usize, cols: usize) -> Result<Option<Self>, ModelError> {
        let int4_name = format!("{name}.{INT4_SUFFIX}");
        if weights.contains(&int4_name) {
            return read_int4(weights, &int4_name, &format!("{name}.{INT4_SCALE_SUFFIX}"), rows, cols).map(Some);
        }
        let int8_name = format!("{name}.{INT8_SUFFIX}");
        if !weights.contains(&int8_name) {
            return Ok(None);
        }
        let values = weights.int8(&int8_name, &[rows, cols])?;
        // −128 has no positive twin, and the kernels' i32 sums are only
        // proven not to overflow for values in −127..=127.
        if values.contains(&i8::MIN) {
            return Err(ModelError::InvalidTensor {
                origin: weights.origin().to_string(),
                name: int8_name,
                reason: "holds −128; int8 weights are symmetric, in −127..=127".to_string(),
            });
        }
        let scales = weights.f32(&format!("{name}.{SCALE_SUFFIX}"), &[rows])?.to_vec1::<f32>()?;
        Ok(Some(Int8Matrix::from_parts(rows, cols, values, scales)))
    }

    pub fn dequantize(&self) -> Vec<f32> {
        let cols = self.cols.max(1);
        self.values.chunks_exact(cols).zip(&self.scales).flat_map(|(q, &s)| q.iter().map(move |&v| f32::from(v) * s)).collect()
    }

    /// `out [m, rows] = xs [m, cols] · selfᵀ`, with each row of `xs` quantised
    /// to i16 and i32 sums.
    pub fn matmul(&self, xs: &[f32], m: usize, out: &mut [f32]) {
        let (n, k) = (self.rows, self.cols);
        assert_eq!((xs.len(), out.len()), (m * k, m * n), "int8 matmul of [{m}, {k}] by [{n}, {k}]ᵀ");
        if m == 0 || k == 0 {
            out.fill(0.0);
            return;
        }
        let limit = activation_limit(k);
        let mut xq = vec![0i16; m * k];
        let x_scales: Vec<f32> = xs.chunks_exact(k).zip(xq.chunks_exact_mut(k)).map(|(x, q)| quantize_activations(x, q, limit)).collect();
        // Natively, a large batch (catalog texts, not a query) splits its rows
        // over the cores; a query's dozen rows are not worth the hand-over.
        #[cfg(not(target_arch = "wasm32"))]
        if m >= PARALLEL_ROWS {
            use rayon::prelude::*;
            let chunk = m.div_ceil(rayon::current_num_threads()).max(PARALLEL_ROWS / 2);
            out.par_chunks_mut(chunk * n)
                .zip(xq.par_chunks(chunk * k))
                .zip(x_scales.par_chunks(chunk))
                .for_each(|((out, xq), scales)| self.matmul_quantised(xq, scales, out));
            return;
        }
        self.matmul_quantised(&xq, &x_scales, out);
    }

    /// `out [m, rows]` of activation rows already quantised (`xq [m, cols]`
    /// with their scales).
    fn matmul_quantised(&self, xq: &[i16], x_scales: &[f32], out: &mut [f32]) {
        let (n, k, m) = (self.rows, self.cols, x_scales.len());
        let row = |r: usize| &xq[r * k..(r + 1) * k];
        let tile = kernels::tile_for_this_cpu();
        // Tiles of two activation rows by four output channels: each weight
        // load serves two rows and each activation load four channels, and the
        // four weight rows stay in L1 while the activation rows pass over them.
        let full = n / 4 * 4;
        for o in (0..full).step_by(4) {
            let w = [0, 1, 2, 3].map(|j| &self.values[(o + j) * k..(o + j + 1) * k]);
            for r in (0..m).step_by(2) {
                // An odd last row is paired with itself.
                let second = (r + 1).min(m - 1);
                let sums = tile([row(r), row(second)], w);
                for (i, rr) in [r, second].into_iter().enumerate().take(if second == r { 1 } else { 2 }) {
                    for j in 0..4 {
                        out[rr * n + o + j] = sums[i][j] as f32 * x_scales[rr] * self.scales[o + j];
                    }
                }
            }
        }
        for o in full..n {
            let w = &self.values[o * k..(o + 1) * k];
            for r in 0..m {
                out[r * n + o] = kernels::dot_scalar(row(r), w) as f32 * x_scales[r] * self.scales[o];
            }
        }
    }
}

/// The 4-bit matrix `values_name` (packed) with its group scales, widened to int8.
fn read_int4(weights: &Weights, values_name: &str, scales_name: &str, rows: usize, cols: usize) -> Result<Int8Matrix, ModelError> {
    let invalid =
        |reason: String| ModelError::InvalidTensor { origin: weights.origin().to_string(), name: values_name.to_string(), reason };
    if cols % INT4_GROUP != 0 {
        return Err(invalid(format!("4-bit matrices need an input width that is a multiple of {INT4_GROUP}, not {cols}")));
    }
    let packed = weights.u8(values_name, &[rows, cols / 2])?;
    let scales = weights.f32(scales_name, &[rows, cols / INT4_GROUP])?.flatten_all()?.to_vec1::<f32>()?;
    if let Some(at) = nibble::first_invalid(packed) {
        return Err(invalid(format!("byte {at} holds the nibble 0; 4-bit values are stored as 1..=15 (−7..=7 plus 8)")));
    }
    // Each row is requantised per channel as `Int8Matrix::quantize` would its
    // f32 values, but through a table of the 15 codes per group: the same
    // products and roundings, without the f32 matrix.
    let groups = cols / INT4_GROUP;
    let mut values = vec![0i8; rows * cols];
    let mut row_scales = Vec::with_capacity(rows);
    for ((row_bytes, row_values), group_scales) in
        packed.chunks_exact(cols / 2).zip(values.chunks_exact_mut(cols)).zip(scales.chunks_exact(groups))
    {
        let group_bytes = || row_bytes.chunks_exact(INT4_GROUP / 2);
        let max = group_bytes().zip(group_scales).fold(0f32, |max, (bytes, &scale)| {
            let largest = bytes.iter().flat_map(|&b| nibble::unpack(b)).map(i8::abs).max().unwrap_or(0);
            larger(max, (f32::from(largest) * scale).abs())
        });
        if max == 0.0 {
            row_scales.push(0.0);
            continue;
        }
        let inverse = 127.0 / max;
        for ((bytes, out), &scale) in group_bytes().zip(row_values.chunks_exact_mut(INT4_GROUP)).zip(group_scales) {
            // The int8 value of each 4-bit value v, at v + 7.
            let table: [i8; 15] = std::array::from_fn(|i| round_weight(f32::from(i as i8 - 7) * scale * inverse));
            for (pair, &byte) in out.chunks_exact_mut(2).zip(bytes) {
                let [low, high] = nibble::unpack(byte);
                pair[0] = table[(low + 7) as usize];
                pair[1] = table[(high + 7) as usize];
            }
        }
        row_scales.push(max / 127.0);
    }
    Ok(Int8Matrix::from_parts(rows, cols, values, row_scales))
}

/// Packs a row-major f32 matrix `[rows, cols]` (`cols` a multiple of [`INT4_GROUP`])
/// into 4-bit values and their group scales (see the module documentation).
fn quantize_int4(values: &[f32], rows: usize, cols: usize) -> (Vec<u8>, Vec<half::f16>) {
    let mut packed = Vec::with_capacity(rows * cols / 2);
    let mut scales = Vec::with_capacity(rows * cols / INT4_GROUP);
    for group in values.chunks_exact(INT4_GROUP) {
        let max = group.iter().fold(0f32, |m, x| m.max(x.abs()));
        let scale = half::f16::from_f32(max / 7.0);
        // The stored (rounded) scale is the one values are divided by, so that they round to what the reader multiplies back.
        let inverse = if scale.to_f32() > 0.0 { 1.0 / scale.to_f32() } else { 0.0 };
        let code = |x: f32| (x * inverse).round().clamp(-7.0, 7.0) as i8;
        packed.extend(group.chunks_exact(2).map(|pair| nibble::pack(code(pair[0]), code(pair[1]))));
        scales.push(scale);
    }
    (packed, scales)
}

/// Rows from which a native matmul runs on every core.
#[cfg(not(target_arch = "wasm32"))]
const PARALLEL_ROWS: usize = 64;

/// The largest |activation| after quantisation for sums of `k` products with
/// int8 weights: `k × limit × 127` must fit in an i32.
fn activation_limit(k: usize) -> f32 {
    (f64::from(i32::MAX) / (127.0 * k.max(1) as f64)).min(f64::from(i16::MAX)).floor() as f32
}

/// Quantises an activation row symmetrically to −limit..=limit into `out`;
/// returns the scale. Activations keep 13–15 bits (not 8): the kernels widen
/// to 16 bits anyway, and 8-bit activations lose too much at BERT's outlier
/// features.
fn quantize_activations(xs: &[f32], out: &mut [i16], limit: f32) -> f32 {
    let max = xs.iter().fold(0f32, |m, x| larger(m, x.abs()));
    if max == 0.0 {
        out.fill(0);
        return 0.0;
    }
    let inverse = limit / max;
    for (q, x) in out.iter_mut().zip(xs) {
        // Rounds half away from zero like `f32::round`, which is a libm call
        // without SSE4.1; this form vectorises.
        let v = (x * inverse).clamp(-limit, limit);
        *q = (v + 0.5f32.copysign(v)) as i16;
    }
    max / limit
}

/// `xs [..., cols] → [..., rows]` on the CPU, without the bias.
impl CustomOp1 for Int8Matrix {
    fn name(&self) -> &'static str {
        "int8-per-channel-matmul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("int8 matmul takes f32 activations, not {:?}", candle_core::backend::BackendStorage::dtype(storage));
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("int8 matmul takes contiguous activations");
        };
        let mut dims = layout.dims().to_vec();
        let Some(last) = dims.last_mut() else {
            candle_core::bail!("int8 matmul takes at least one dimension");
        };
        if *last != self.cols {
            candle_core::bail!("int8 matmul: activations of width {last}, weights of width {}", self.cols);
        }
        *last = self.rows;
        let xs = &data[start..end];
        let m = xs.len() / self.cols.max(1);
        let mut out = vec![0f32; m * self.rows];
        self.matmul(xs, m, &mut out);
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}

/// Dot products of i16 activation rows with int8 weight rows, summed in i32.
mod kernels {
    /// The sums of two activation rows with four weight rows: `[row][channel]`.
    pub type Tile = fn([&[i16]; 2], [&[i8]; 4]) -> [[i32; 4]; 2];

    pub fn dot_scalar(x: &[i16], w: &[i8]) -> i32 {
        x.iter().zip(w).map(|(&a, &b)| i32::from(a) * i32::from(b)).sum()
    }

    pub fn tile_scalar(x: [&[i16]; 2], w: [&[i8]; 4]) -> [[i32; 4]; 2] {
        x.map(|x| w.map(|w| dot_scalar(x, w)))
    }

    /// The fastest kernel this CPU runs.
    pub fn tile_for_this_cpu() -> Tile {
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        return simd128::tile;
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            return avx2::tile;
        }
        #[allow(unreachable_code)]
        tile_scalar
    }

    /// Every kernel this CPU runs, by name (for tests against the scalar one).
    #[cfg(test)]
    pub fn all_for_this_cpu() -> Vec<(&'static str, Tile)> {
        #[allow(unused_mut)]
        let mut all: Vec<(&'static str, Tile)> = vec![("scalar", tile_scalar)];
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            all.push(("avx2", avx2::tile));
        }
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        all.push(("simd128", simd128::tile));
        all
    }

    fn check_lengths(x: [&[i16]; 2], w: [&[i8]; 4]) -> usize {
        let k = x[0].len();
        assert!(x[1].len() == k && w.iter().all(|w| w.len() == k), "tile operands of different lengths");
        k
    }

    #[cfg(target_arch = "x86_64")]
    mod avx2 {
        use std::arch::x86_64::*;

        /// Only handed out after `is_x86_feature_detected!("avx2")`.
        pub fn tile(x: [&[i16]; 2], w: [&[i8]; 4]) -> [[i32; 4]; 2] {
            let k = super::check_lengths(x, w);
            // SAFETY: AVX2 was detected; every load lies within the checked lengths.
            unsafe { tile_avx2(x, w, k) }
        }

        #[target_feature(enable = "avx2")]
        unsafe fn tile_avx2(x: [&[i16]; 2], w: [&[i8]; 4], k: usize) -> [[i32; 4]; 2] {
            let blocks = k / 16;
            let mut acc = [[_mm256_setzero_si256(); 4]; 2];
            for b in 0..blocks {
                let xv = x.map(|x| _mm256_loadu_si256(x.as_ptr().add(b * 16).cast()));
                for j in 0..4 {
                    // 16 int8 → 16 int16; vpmaddwd multiplies pairs and adds them into 8 int32.
                    let wv = _mm256_cvtepi8_epi16(_mm_loadu_si128(w[j].as_ptr().add(b * 16).cast()));
                    for i in 0..2 {
                        acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_madd_epi16(xv[i], wv));
                    }
                }
            }
            let tail = blocks * 16;
            let mut out = [[0i32; 4]; 2];
            for i in 0..2 {
                for j in 0..4 {
                    let halves = _mm_add_epi32(_mm256_castsi256_si128(acc[i][j]), _mm256_extracti128_si256(acc[i][j], 1));
                    let pairs = _mm_add_epi32(halves, _mm_shuffle_epi32(halves, 0b01_00_11_10));
                    let sum = _mm_add_epi32(pairs, _mm_shuffle_epi32(pairs, 0b10_11_00_01));
                    out[i][j] = _mm_cvtsi128_si32(sum) + super::dot_scalar(&x[i][tail..], &w[j][tail..]);
                }
            }
            out
        }
    }

    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    mod simd128 {
        use core::arch::wasm32::*;

        pub fn tile(x: [&[i16]; 2], w: [&[i8]; 4]) -> [[i32; 4]; 2] {
            let k = super::check_lengths(x, w);
            let blocks = k / 8;
            let mut acc = [[i32x4_splat(0); 4]; 2];
            for b in 0..blocks {
                // SAFETY: b * 8 + 8 <= k bounds every load; wasm loads need no alignment.
                let xv = x.map(|x| unsafe { v128_load(x.as_ptr().add(b * 8).cast()) });
                for j in 0..4 {
                    // 8 int8 loaded as 8 int16; i32x4.dot_i16x8_s multiplies and adds pairs.
                    let wv = unsafe { i16x8_load_extend_i8x8(w[j].as_ptr().add(b * 8)) };
                    for i in 0..2 {
                        acc[i][j] = i32x4_add(acc[i][j], i32x4_dot_i16x8(xv[i], wv));
                    }
                }
            }
            let tail = blocks * 8;
            let mut out = [[0i32; 4]; 2];
            for i in 0..2 {
                for j in 0..4 {
                    let a = acc[i][j];
                    out[i][j] = i32x4_extract_lane::<0>(a)
                        + i32x4_extract_lane::<1>(a)
                        + i32x4_extract_lane::<2>(a)
                        + i32x4_extract_lane::<3>(a)
                        + super::dot_scalar(&x[i][tail..], &w[j][tail..]);
                }
            }
            out
        }
    }
}

/// A linear layer `y = x Wᵀ + b` with f32 or int8 weights.
#[derive(Debug, Clone)]
pub enum Linear {
    F32(candle_nn::Linear),
    Int8 { weight: Int8Matrix, bias: Option<Tensor> },
    Q8_0 { weight: QMatMul, bias: Option<Tensor> },
}

impl Linear {
    /// Loads the layer `name` (`name.weight` or `name.weight_int8` +
    /// `name.weight_scale`, and `name.bias`) of `in_dim → out_dim`; `quantize`
    /// turns f32 weights into int8 ones.
    pub fn load(
        weights: &Weights,
        name: &str,
        in_dim: usize,
        out_dim: usize,
        quantize: bool,
        kernel: Int8Kernel,
    ) -> Result<Self, ModelError> {
        let stored = match Int8Matrix::read(weights, name, out_dim, in_dim)? {
            Some(matrix) => Ok(matrix),
            None => Err(weights.f32(&format!("{name}.weight"), &[out_dim, in_dim])?),
        };
        let bias_name = format!("{name}.bias");
        let bias = if weights.contains(&bias_name) { Some(weights.f32(&bias_name, &[out_dim])?) } else { None };
        let matrix = match stored {
            Ok(matrix) => matrix,
            Err(weight) if quantize => Int8Matrix::quantize(&weight.flatten_all()?.to_vec1::<f32>()?, out_dim, in_dim),
            Err(weight) => return Ok(Linear::F32(candle_nn::Linear::new(weight, bias))),
        };
        Linear::from_int8(matrix, bias, kernel)
    }

    /// An int8 layer computed by `kernel`.
    pub fn from_int8(weight: Int8Matrix, bias: Option<Tensor>, kernel: Int8Kernel) -> Result<Self, ModelError> {
        Ok(match kernel {
            Int8Kernel::PerChannel => Linear::Int8 { weight, bias },
            Int8Kernel::Q8_0 => {
                let dense = Tensor::from_vec(weight.dequantize(), (weight.rows, weight.cols), &candle_core::Device::Cpu)?;
                let blocks = QTensor::quantize(&dense, GgmlDType::Q8_0)?;
                Linear::Q8_0 { weight: QMatMul::from_qtensor(blocks)?, bias }
            }
        })
    }

    pub fn is_int8(&self) -> bool {
        !matches!(self, Linear::F32(_))
    }
}

impl Module for Linear {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let (ys, bias) = match self {
            Linear::F32(linear) => return linear.forward(xs),
            Linear::Int8 { weight, bias } => (xs.contiguous()?.apply_op1_no_bwd(weight)?, bias),
            Linear::Q8_0 { weight, bias } => (weight.forward(xs)?, bias),
        };
        match bias {
            Some(b) => ys.broadcast_add(b),
            None => Ok(ys),
        }
    }
}

/// Whether the tensor `name` is the weight of a linear layer of the text
/// encoder whose names start with `prefix` (see the module documentation).
pub fn is_text_encoder_linear(name: &str, prefix: &str) -> bool {
    const LAYERS: [&str; 6] = [
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
    ];
    let Some(rest) = name.strip_prefix(prefix).and_then(|r| r.strip_prefix("encoder.layer.")) else { return false };
    let Some((index, layer)) = rest.split_once('.') else { return false };
    index.bytes().all(|b| b.is_ascii_digit()) && LAYERS.iter().any(|l| layer == format!("{l}.weight"))
}

/// A tensor of the file being written.
struct Written {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl safetensors::View for &Written {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// What [`quantize_safetensors`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantizeReport {
    /// The int8 layers (names without `.weight`).
    pub layers: Vec<String>,
    pub bytes_before: usize,
    pub bytes_after: usize,
}

/// Rewrites a safetensors file with the text encoder's linear layers in int8
/// (see the module documentation); every other tensor is copied unchanged. The
/// text encoder is the BERT whose `embeddings.word_embeddings.weight` has the
/// shortest prefix (`bert.` in a checkpoint, none in a Hugging Face folder).
pub fn quantize_safetensors(bytes: &[u8], origin: &str) -> Result<(Vec<u8>, QuantizeReport), ModelError> {
    quantize_safetensors_to(bytes, origin, StoredBits::Int8)
}

/// [`quantize_safetensors`] with the matrices stored in `bits`.
pub fn quantize_safetensors_to(bytes: &[u8], origin: &str, bits: StoredBits) -> Result<(Vec<u8>, QuantizeReport), ModelError> {
    let file =
        SafeTensors::deserialize(bytes).map_err(|e| ModelError::Safetensors { origin: origin.to_string(), reason: e.to_string() })?;
    let names: Vec<String> = file.names().into_iter().map(str::to_string).collect();
    let prefix = bert::text_prefix(&names)
        .ok_or_else(|| ModelError::MissingTensor { origin: origin.to_string(), name: bert::WORD_EMBEDDINGS.to_string() })?;
    let mut written: Vec<(String, Written)> = Vec::with_capacity(names.len() + 16);
    let mut layers = Vec::new();
    for name in &names {
        let view: TensorView =
            file.tensor(name).map_err(|e| ModelError::Safetensors { origin: origin.to_string(), reason: e.to_string() })?;
        let int8 = is_text_encoder_linear(name, &prefix) || *name == format!("{prefix}{}", bert::WORD_EMBEDDINGS);
        if int8 && view.dtype() == Dtype::F32 && view.shape().len() == 2 {
            let (rows, cols) = (view.shape()[0], view.shape()[1]);
            let values: Vec<f32> = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            let layer = name.strip_suffix(".weight").expect("a weight name ends in .weight");
            layers.push(layer.to_string());
            if bits == StoredBits::Int4 && cols % INT4_GROUP == 0 {
                let (packed, scales) = quantize_int4(&values, rows, cols);
                written.push((format!("{layer}.{INT4_SUFFIX}"), Written { dtype: Dtype::U8, shape: vec![rows, cols / 2], data: packed }));
                written.push((
                    format!("{layer}.{INT4_SCALE_SUFFIX}"),
                    Written {
                        dtype: Dtype::F16,
                        shape: vec![rows, cols / INT4_GROUP],
                        data: scales.iter().flat_map(|s| s.to_le_bytes()).collect(),
                    },
                ));
                continue;
            }
            let matrix = Int8Matrix::quantize(&values, rows, cols);
            written.push((
                format!("{layer}.{INT8_SUFFIX}"),
                Written { dtype: Dtype::I8, shape: vec![rows, cols], data: matrix.values.iter().map(|&v| v as u8).collect() },
            ));
            written.push((
                format!("{layer}.{SCALE_SUFFIX}"),
                Written { dtype: Dtype::F32, shape: vec![rows], data: matrix.scales.iter().flat_map(|s| s.to_le_bytes()).collect() },
            ));
        } else {
            written.push((name.to_string(), Written { dtype: view.dtype(), shape: view.shape().to_vec(), data: view.data().to_vec() }));
        }
    }
    layers.sort();
    let metadata = HashMap::from([
        ("vitrine_int8".to_string(), "per-output-channel symmetric int8: <layer>.weight_int8 × <layer>.weight_scale".to_string()),
        (
            "vitrine_int4".to_string(),
            "4-bit groups of 32 inputs: <layer>.weight_int4 (two values v + 8 per byte, low nibble first) × <layer>.weight_int4_scale"
                .to_string(),
        ),
    ]);
    let out = safetensors::serialize(written.iter().map(|(n, w)| (n.as_str(), w)), Some(metadata))
        .map_err(|e| ModelError::Safetensors { origin: origin.to_string(), reason: e.to_string() })?;
    let report = QuantizeReport { layers, bytes_before: bytes.len(), bytes_after: out.len() };
    Ok((out, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random(n: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
        (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
    }

    #[test]
    fn quantised_rows_keep_their_largest_value_and_sign() {
        let m = Int8Matrix::quantize(&[0.5, -1.0, 0.25, 0.0, 0.0, 0.0, 2.0, 0.0, -0.01], 3, 3);
        assert_eq!(m.values(), &[64, -127, 32, 0, 0, 0, 127, 0, -1]);
        assert_eq!(m.scales(), &[1.0 / 127.0, 0.0, 2.0 / 127.0]);
        let back = m.dequantize();
        assert!((back[1] + 1.0).abs() < 1e-6 && (back[6] - 2.0).abs() < 1e-6 && back[3] == 0.0);
    }

    #[test]
    fn every_kernel_sums_like_the_scalar_one() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        // Whole blocks and tails.
        for k in [1usize, 7, 15, 16, 37, 384, 1536] {
            let limit = activation_limit(k) as i16;
            let x: Vec<Vec<i16>> = (0..2).map(|_| (0..k).map(|_| rng.gen_range(-limit..=limit)).collect()).collect();
            let w: Vec<Vec<i8>> = (0..4).map(|_| (0..k).map(|_| rng.gen_range(-127i8..=127)).collect()).collect();
            let (x, w) = ([&x[0][..], &x[1][..]], [&w[0][..], &w[1][..], &w[2][..], &w[3][..]]);
            // The worst case: every product at its largest, of one sign.
            let (top_x, top_w) = (vec![limit; k], vec![127i8; k]);
            for (name, tile) in kernels::all_for_this_cpu() {
                assert_eq!(tile(x, w), kernels::tile_scalar(x, w), "{name}, k = {k}");
                let top = tile([&top_x, &top_x], [&top_w; 4]);
                assert_eq!(i64::from(top[1][3]), k as i64 * i64::from(limit) * 127, "{name}, k = {k}");
            }
        }
    }

    #[test]
    fn a_large_batch_gives_what_its_rows_give_one_by_one() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let (m, k, n) = (150, 40, 12);
        let matrix = Int8Matrix::quantize(&random(n * k, &mut rng), n, k);
        let x = random(m * k, &mut rng);
        let mut batched = vec![0f32; m * n];
        matrix.matmul(&x, m, &mut batched);
        for r in 0..m {
            let mut alone = vec![0f32; n];
            matrix.matmul(&x[r * k..(r + 1) * k], 1, &mut alone);
            assert_eq!(alone, batched[r * n..(r + 1) * n], "row {r}");
        }
    }

    #[test]
    fn int8_matmul_is_close_to_f32() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let (m, k, n) = (5, 96, 10);
        let w = random(n * k, &mut rng);
        let x = random(m * k, &mut rng);
        let mut out = vec![0f32; m * n];
        Int8Matrix::quantize(&w, n, k).matmul(&x, m, &mut out);
        for r in 0..m {
            for o in 0..n {
                let exact: f32 = (0..k).map(|i| x[r * k + i] * w[o * k + i]).sum();
                // Two roundings of at most half a step each, over 96 terms.
                assert!((out[r * n + o] - exact).abs() < 0.1, "[{r}, {o}]: {} vs {exact}", out[r * n + o]);
            }
        }
    }

    #[test]
    fn both_kernels_agree_with_the_f32_layer() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (k, n) = (64, 12);
        let device = candle_core::Device::Cpu;
        let w = random(n * k, &mut rng);
        let bias = Tensor::from_vec(random(n, &mut rng), n, &device).unwrap();
        let x = Tensor::from_vec(random(2 * 3 * k, &mut rng), (2, 3, k), &device).unwrap();
        let exact = Linear::F32(candle_nn::Linear::new(Tensor::from_vec(w.clone(), (n, k), &device).unwrap(), Some(bias.clone())));
        let expected = exact.forward(&x).unwrap();
        for kernel in [Int8Kernel::PerChannel, Int8Kernel::Q8_0] {
            let layer = Linear::from_int8(Int8Matrix::quantize(&w, n, k), Some(bias.clone()), kernel).unwrap();
            assert!(layer.is_int8());
            let got = layer.forward(&x).unwrap();
            assert_eq!(got.dims(), [2, 3, n]);
            let err = (got - &expected).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(err < 0.1, "{kernel:?}: max error {err}");
        }
    }

    #[test]
    fn only_the_text_encoder_layers_are_int8_linears() {
        assert!(is_text_encoder_linear("bert.encoder.layer.0.attention.self.query.weight", "bert."));
        assert!(is_text_encoder_linear("encoder.layer.11.output.dense.weight", ""));
        assert!(!is_text_encoder_linear("bert.encoder.layer.0.output.LayerNorm.weight", "bert."));
        assert!(!is_text_encoder_linear("bert.encoder.layer.0.output.dense.bias", "bert."));
        assert!(!is_text_encoder_linear("fusion_bert.encoder.layer.0.output.dense.weight", "bert."));
        assert!(!is_text_encoder_linear("bert.pooler.dense.weight", "bert."));
        assert!(!is_text_encoder_linear("heads.itm.weight", "bert."));
    }

    /// A safetensors file with f32 tensors.
    fn f32_file(tensors: &[(&str, Vec<usize>, &[f32])]) -> Vec<u8> {
        let written: Vec<(String, Written)> = tensors
            .iter()
            .map(|(name, shape, values)| {
                let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                (name.to_string(), Written { dtype: Dtype::F32, shape: shape.clone(), data })
            })
            .collect();
        safetensors::serialize(written.iter().map(|(n, w)| (n.as_str(), w)), None).unwrap()
    }

    #[test]
    fn four_bit_matrices_read_back_within_their_rounding_and_odd_widths_stay_int8() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (words, query, intermediate) = (random(10 * 64, &mut rng), random(64 * 64, &mut rng), random(48 * 40, &mut rng));
        let file = f32_file(&[
            ("bert.embeddings.word_embeddings.weight", vec![10, 64], &words),
            ("bert.encoder.layer.0.attention.self.query.weight", vec![64, 64], &query),
            // 40 inputs: not a multiple of the group, so int8.
            ("bert.encoder.layer.0.intermediate.dense.weight", vec![48, 40], &intermediate),
        ]);
        let (int4, report) = quantize_safetensors_to(&file, "test", StoredBits::Int4).unwrap();
        assert_eq!(report.layers.len(), 3);
        let (int8, _) = quantize_safetensors(&file, "test").unwrap();
        assert!(int4.len() < int8.len());
        let weights = Weights::from_bytes(&int4, "test").unwrap();
        assert!(weights.contains("bert.encoder.layer.0.attention.self.query.weight_int4"));
        assert!(weights.contains("bert.encoder.layer.0.intermediate.dense.weight_int8"));
        for (name, rows, cols, original) in [
            ("bert.embeddings.word_embeddings", 10, 64, &words),
            ("bert.encoder.layer.0.attention.self.query", 64, 64, &query),
            ("bert.encoder.layer.0.intermediate.dense", 48, 40, &intermediate),
        ] {
            let back = Int8Matrix::read(&weights, name, rows, cols).unwrap().unwrap().dequantize();
            // Half a 4-bit step of the group (values in −1..1: at most 1/14),
            // an f16 scale, and half an int8 step of the row on top.
            let worst = back.iter().zip(original.iter()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst <= 1.0 / 14.0 + 1.0 / 254.0 + 1e-3, "{name}: {worst}");
            assert!(worst > 0.0);
        }
    }

    #[test]
    fn four_bit_matrices_widen_to_what_quantising_their_values_per_row_gives() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (rows, cols) = (6, 96);
        let mut values = random(rows * cols, &mut rng);
        // A zero row and a row of one small group: the edge cases of the row scale.
        values[cols..2 * cols].fill(0.0);
        values[2 * cols..3 * cols].iter_mut().skip(INT4_GROUP).for_each(|v| *v = 0.0);
        let name = "bert.encoder.layer.0.attention.self.query";
        let (int4, _) = quantize_safetensors_to(
            &f32_file(&[
                (&format!("{name}.weight"), vec![rows, cols], &values),
                ("bert.embeddings.word_embeddings.weight", vec![2, 32], &[0.5; 64]),
            ]),
            "test",
            StoredBits::Int4,
        )
        .unwrap();
        let weights = Weights::from_bytes(&int4, "test").unwrap();
        let widened = Int8Matrix::read(&weights, name, rows, cols).unwrap().unwrap();
        // The 4-bit values as f32, then quantised per row as any f32 matrix is.
        let packed = weights.u8(&format!("{name}.{INT4_SUFFIX}"), &[rows, cols / 2]).unwrap();
        let scales = weights
            .f32(&format!("{name}.{INT4_SCALE_SUFFIX}"), &[rows, cols / INT4_GROUP])
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let dense: Vec<f32> = packed
            .iter()
            .flat_map(|&b| [b & 0x0f, b >> 4])
            .enumerate()
            .map(|(i, nibble)| f32::from(nibble as i8 - 8) * scales[i / INT4_GROUP])
            .collect();
        let expected = Int8Matrix::quantize(&dense, rows, cols);
        assert_eq!(widened.values(), expected.values());
        assert_eq!(widened.scales(), expected.scales());
        assert_eq!(widened.scales()[1], 0.0);
    }

    #[test]
    fn broken_four_bit_matrices_are_named() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let query = random(32 * 32, &mut rng);
        let file = f32_file(&[
            ("bert.embeddings.word_embeddings.weight", vec![2, 32], &[0.5; 64]),
            ("bert.encoder.layer.0.attention.self.query.weight", vec![32, 32], &query),
        ]);
        let (int4, _) = quantize_safetensors_to(&file, "test", StoredBits::Int4).unwrap();
        let name = "bert.encoder.layer.0.attention.self.query";
        // A zero nibble (−8) in the first byte of the values.
        let header = u64::from_le_bytes(int4[..8].try_into().unwrap()) as usize;
        let values = SafeTensors::deserialize(&int4).unwrap();
        let offset = values.tensor(&format!("{name}.{INT4_SUFFIX}")).unwrap().data().as_ptr() as usize - int4.as_ptr() as usize;
        assert!(offset >= 8 + header);
        let mut broken = int4.clone();
        broken[offset] &= 0xf0;
        let weights = Weights::from_bytes(&broken, "broken").unwrap();
        let err = Int8Matrix::read(&weights, name, 32, 32).unwrap_err().to_string();
        assert!(err.contains(&format!("{name}.{INT4_SUFFIX}")) && err.contains("byte 0"), "{err}");
        // Scales of the wrong shape.
        let weights = Weights::from_bytes(&int4, "test").unwrap();
        let err = Int8Matrix::read(&weights, name, 32, 64).unwrap_err().to_string();
        assert!(err.contains(INT4_SUFFIX), "{err}");
    }
}
