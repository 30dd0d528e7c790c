//! EfficientNet-Lite0 against the reference `efficientnet_pytorch` model.
//!
//! `fixtures/efficientnet/reference.safetensors` holds the reference features
//! (`{input}.features`, 1280×7×7) and ImageNet logits (`{input}.logits`) and
//! `reference.json` the inputs (with a hash of their pixels) and their top-1
//! classes; `fixtures/make_efficientnet_reference.py` made both. The inputs are
//! a synthetic image defined by a formula and two H&M photos, decoded, resized
//! and centre-cropped by this crate; the example `efficientnet_fixture_inputs` writes
//! their pixels for the script.
//!
//! The weights come from `cargo xtask setup` (`models/efficientnet-lite0/`).

use std::path::Path;

use tch::{nn, Device, Tensor};
use vitrine_trainer::model::efficientnet::{load_safetensors, Config, EfficientNet};

const WEIGHTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/efficientnet-lite0/model.safetensors");
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/efficientnet");
mod support;
use support::efficientnet_inputs::*;

const TOLERANCE: f64 = 1e-4;

fn photos_dir() -> Option<&'static Path> {
    let dir = Path::new(PHOTOS);
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var_os("CI").is_some() {
        panic!("the H&M photos are missing ({PHOTOS}); CI must check them");
    }
    None
}

/// The inputs available here: (name, pixels).
fn inputs() -> Vec<(String, Vec<u8>)> {
    let mut inputs = vec![("synthetic".to_string(), synthetic_pixels())];
    match photos_dir() {
        Some(dir) => {
            for (name, file, _) in PHOTO_INPUTS {
                inputs.push((name.to_string(), photo_pixels(&dir.join(file))));
            }
        }
        None => eprintln!("{PHOTOS} is absent: checked only the synthetic input"),
    }
    inputs
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

#[test]
fn matches_the_reference_features_and_logits() {
    assert!(Path::new(WEIGHTS).is_file(), "{WEIGHTS} is missing: run `cargo xtask setup`");
    let vs = nn::VarStore::new(Device::Cpu);
    let net = EfficientNet::new(&vs.root(), &Config::lite0());
    let filled = load_safetensors(&vs, Path::new(WEIGHTS), "").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(filled, vs.variables().len());

    let reference: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(Path::new(FIXTURES).join("reference.safetensors")).unwrap().into_iter().collect();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(Path::new(FIXTURES).join("reference.json")).unwrap()).unwrap();
    let meta_of = |name: &str| meta["inputs"].as_array().unwrap().iter().find(|i| i["name"] == name).unwrap().clone();

    let inputs = inputs();
    for (name, pixels) in &inputs {
        let expected = meta_of(name)["pixels_fnv1a64"].as_str().unwrap().to_string();
        assert_eq!(
            fnv1a64(pixels),
            expected,
            "input `{name}` differs from the fixture's (image decoding or resizing changed?): regenerate it with fixtures/make_efficientnet_reference.py"
        );
    }
    let batch = Tensor::stack(&inputs.iter().map(|(_, p)| normalise(p)).collect::<Vec<_>>(), 0);
    let (features, logits) = tch::no_grad(|| (net.forward_features(&batch, false), net.forward_logits(&batch, false)));
    assert_eq!(features.size(), [inputs.len() as i64, 1280, 7, 7]);
    assert_eq!(logits.size(), [inputs.len() as i64, 1000]);

    for (i, (name, _)) in inputs.iter().enumerate() {
        let i = i as i64;
        let feature_diff = max_abs_diff(&features.get(i), &reference[&format!("{name}.features")]);
        let logit_diff = max_abs_diff(&logits.get(i), &reference[&format!("{name}.logits")]);
        let top1 = logits.get(i).argmax(0, false).int64_value(&[]);
        eprintln!("{name}: max |Δ| features {feature_diff:.3e}, logits {logit_diff:.3e}; top-1 {top1}");
        assert!(feature_diff <= TOLERANCE, "{name}: features differ by {feature_diff:e}");
        assert!(logit_diff <= TOLERANCE, "{name}: logits differ by {logit_diff:e}");
        let meta = meta_of(name);
        if meta["top1_margin"].as_f64().unwrap() > 1e-3 {
            assert_eq!(top1, meta["top1"].as_i64().unwrap(), "{name}: top-1 class");
        }
        if let Some((_, _, class)) = PHOTO_INPUTS.iter().find(|(n, _, _)| n == name) {
            let top2 = Vec::<i64>::try_from(&logits.get(i).topk(2, 0, true, true).1).unwrap();
            assert!(top2.contains(class), "{name}: ImageNet class {class} is not in the top two {top2:?}");
        }
    }
    // The features do not depend on the rest of the batch.
    let alone = tch::no_grad(|| net.forward_features(&batch.get(0).unsqueeze(0), false));
    assert!(max_abs_diff(&alone.get(0), &features.get(0)) <= TOLERANCE);
}
