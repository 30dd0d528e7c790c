//! The compact heads that the index builder distils in tch
//! (`index-builder/src/heads.rs`) and the candle twin that the browser runs
//! (`core/src/model/compact.rs`) are one model: a tch VarStore saved as
//! safetensors loads into candle, and both give the same projection, TGIR
//! and OCIR queries and category logits (max abs difference ≤ 1e-5 in f32);
//! every tensor the tch heads have is one that candle reads, so a module
//! renamed on either side fails here.

use candle_core::Tensor as CandleTensor;
use tch::{nn, Device, Kind, Tensor};
use vitrine_core::model::compact::{CompactConfig, CompactHeads as CandleHeads, OptionalHead};
use vitrine_core::model::ModelError;
use vitrine_index_builder::heads::CompactHeads as TchHeads;

const TOLERANCE: f32 = 1e-5;
const ORIGIN: &str = "heads.safetensors";

fn config() -> CompactConfig {
    CompactConfig { teacher_dim: 384, dim: 256, categories: 7, image_weight: 0.5, heads: OptionalHead::all() }
}

/// Random `[rows, width]` values; unit rows unless `scale` is given.
fn random(rows: i64, width: usize, scale: Option<f64>) -> Tensor {
    let x = Tensor::randn([rows, width as i64], (Kind::Float, Device::Cpu));
    match scale {
        Some(s) => x * s,
        None => &x / x.norm_scalaropt_dim(2.0, [-1i64].as_slice(), true),
    }
}

/// The same values as a candle tensor.
fn to_candle(t: &Tensor) -> CandleTensor {
    let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
    let values = Vec::<f32>::try_from(&t.flatten(0, -1)).unwrap();
    CandleTensor::from_vec(values, shape, &candle_core::Device::Cpu).unwrap()
}

fn max_abs_difference(name: &str, expected: &Tensor, got: &CandleTensor) -> f32 {
    let expected = Vec::<Vec<f32>>::try_from(expected).unwrap();
    let got: Vec<Vec<f32>> = got.to_vec2().unwrap();
    assert_eq!((expected.len(), expected[0].len()), (got.len(), got[0].len()), "{name}: outputs of different shapes");
    let max = expected.iter().flatten().zip(got.iter().flatten()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    eprintln!("{name}: max abs difference {max:.2e} over {}×{}", expected.len(), expected[0].len());
    max
}

#[test]
fn candle_runs_the_tch_compact_heads_alike() {
    let config = config();
    tch::manual_seed(7);
    let vs = nn::VarStore::new(Device::Cpu);
    let tch_heads = TchHeads::new(&vs.root(), &config);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(ORIGIN);
    vs.save(&path).unwrap();
    let candle_heads = CandleHeads::from_bytes(&config, &std::fs::read(&path).unwrap(), ORIGIN).unwrap();

    // Teacher embeddings far from unit norm; compact inputs of unit norm.
    let teacher = random(9, config.teacher_dim, Some(3.0));
    let (reference, text) = (random(9, config.dim, None), random(9, config.dim, None));
    // Four outfits of 3, 1, 2 and 4 items, interleaved; the wanted categories repeat.
    let items = random(10, config.dim, None);
    let outfit_of = [0u32, 1, 0, 2, 2, 0, 3, 3, 3, 3];
    let categories = [6u32, 0, 3, 6];
    let queries = random(9, config.dim, None);

    let as_i64 = |v: &[u32]| Tensor::from_slice(&v.iter().map(|&x| i64::from(x)).collect::<Vec<_>>());
    let outputs = tch::no_grad(|| {
        [
            ("projection", tch_heads.project(&teacher)),
            ("TGIR query", tch_heads.tgir.forward(&reference, &text)),
            ("OCIR query", tch_heads.ocir.forward(&items, &as_i64(&outfit_of), &as_i64(&categories))),
            ("category logits", tch_heads.category.forward(&queries)),
        ]
    });
    let candle_outputs = [
        candle_heads.project(&to_candle(&teacher)).unwrap(),
        candle_heads.tgir.as_ref().unwrap().forward(&to_candle(&reference), &to_candle(&text)).unwrap(),
        candle_heads.ocir.as_ref().unwrap().forward(&to_candle(&items), &outfit_of, &categories).unwrap(),
        candle_heads.category.logits(&to_candle(&queries)).unwrap(),
    ];
    for ((name, expected), got) in outputs.iter().zip(&candle_outputs) {
        let max = max_abs_difference(name, expected, got);
        assert!(max <= TOLERANCE, "{name}: max abs difference {max} > {TOLERANCE}");
    }

    // Candle loaded the whole file, so it reads no name that tch lacks; each
    // tch tensor left out in turn must make candle name it as missing.
    let variables = vs.variables();
    assert_eq!(variables.len(), 12);
    for missing in variables.keys() {
        let rest: Vec<(&str, &Tensor)> = variables.iter().filter(|(n, _)| *n != missing).map(|(n, t)| (n.as_str(), t)).collect();
        let without = dir.path().join("without.safetensors");
        Tensor::write_safetensors(&rest, &without).unwrap();
        let err = CandleHeads::from_bytes(&config, &std::fs::read(&without).unwrap(), ORIGIN).unwrap_err();
        assert!(matches!(&err, ModelError::MissingTensor { name, .. } if name == missing), "without {missing}: {err}");
    }
}
