//! ResNet-50 (the paper's image encoder), an option beside EfficientNet-Lite0.
//!
//! torchvision's architecture (v1.5: the stride is on the 3×3 convolution of a
//! bottleneck) and variable names (`conv1`, `bn1`, `layer1.0.conv1`,
//! `layer1.0.downsample.0`, …, `fc`), so a safetensors file of a torchvision
//! state dict loads with [`load_safetensors`](super::efficientnet::load_safetensors).
//! There are no bundled weights: the file is the user's.

use serde::{Deserialize, Serialize};
use tch::{nn, nn::ModuleT, Kind, Tensor};

/// Architecture; [`Default`] is ResNet-50 with the ImageNet classifier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Bottleneck blocks in `layer1` … `layer4` (ResNet-50: 3, 4, 6, 3).
    pub layers: [usize; 4],
    /// Size of the classifier (`fc`); `None` builds none.
    pub num_classes: Option<i64>,
}

impl Config {
    pub fn resnet50() -> Self {
        Config { layers: [3, 4, 6, 3], num_classes: Some(1000) }
    }

    /// ResNet-50 without the classifier: the image encoder.
    pub fn resnet50_features() -> Self {
        Config { num_classes: None, ..Self::resnet50() }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::resnet50()
    }
}

/// Output channels of the last stage (the feature dimension).
pub const FEATURE_CHANNELS: i64 = 2048;
const EXPANSION: i64 = 4;

fn conv(vs: nn::Path, cin: i64, cout: i64, k: i64, stride: i64, padding: i64) -> nn::Conv2D {
    nn::conv2d(vs, cin, cout, k, nn::ConvConfig { stride, padding, bias: false, ..Default::default() })
}

fn bn(vs: nn::Path, c: i64) -> nn::BatchNorm {
    // torchvision's: eps 1e-5, momentum 0.1, weight 1 and bias 0 at initialisation.
    nn::batch_norm2d(vs, c, nn::BatchNormConfig { ws_init: nn::Init::Const(1.0), ..Default::default() })
}

/// 1×1 reduce, 3×3 (with the stride), 1×1 expand; residual, projected by
/// `downsample` when the shape changes.
#[derive(Debug)]
pub struct Bottleneck {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    conv2: nn::Conv2D,
    bn2: nn::BatchNorm,
    conv3: nn::Conv2D,
    bn3: nn::BatchNorm,
    downsample: Option<(nn::Conv2D, nn::BatchNorm)>,
}

impl Bottleneck {
    pub fn new(vs: &nn::Path, in_channels: i64, width: i64, stride: i64) -> Self {
        let out = width * EXPANSION;
        let downsample = (stride != 1 || in_channels != out)
            .then(|| (conv(vs / "downsample" / 0, in_channels, out, 1, stride, 0), bn(vs / "downsample" / 1, out)));
        Bottleneck {
            conv1: conv(vs / "conv1", in_channels, width, 1, 1, 0),
            bn1: bn(vs / "bn1", width),
            conv2: conv(vs / "conv2", width, width, 3, stride, 1),
            bn2: bn(vs / "bn2", width),
            conv3: conv(vs / "conv3", width, out, 1, 1, 0),
            bn3: bn(vs / "bn3", out),
            downsample,
        }
    }

    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let ys = xs.apply(&self.conv1).apply_t(&self.bn1, train).relu();
        let ys = ys.apply(&self.conv2).apply_t(&self.bn2, train).relu();
        let ys = ys.apply(&self.conv3).apply_t(&self.bn3, train);
        let shortcut = match &self.downsample {
            Some((conv, bn)) => xs.apply(conv).apply_t(bn, train),
            None => xs.shallow_clone(),
        };
        (ys + shortcut).relu()
    }
}

/// ResNet: stem (7×7 stride-2 convolution, max pool), four stages of bottlenecks,
/// optionally the pooled classifier.
#[derive(Debug)]
pub struct ResNet {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    blocks: Vec<Bottleneck>,
    fc: Option<nn::Linear>,
}

impl ResNet {
    /// Builds the network under `vs` (randomly initialised).
    pub fn new(vs: &nn::Path, cfg: &Config) -> Self {
        let mut blocks = Vec::new();
        let mut in_channels = 64;
        for (stage, &count) in cfg.layers.iter().enumerate() {
            let width = 64 << stage;
            let layer = vs / format!("layer{}", stage + 1);
            for i in 0..count {
                let stride = if i == 0 && stage > 0 { 2 } else { 1 };
                blocks.push(Bottleneck::new(&(&layer / i), in_channels, width, stride));
                in_channels = width * EXPANSION;
            }
        }
        ResNet {
            conv1: conv(vs / "conv1", 3, 64, 7, 2, 3),
            bn1: bn(vs / "bn1", 64),
            blocks,
            fc: cfg.num_classes.map(|n| nn::linear(vs / "fc", in_channels, n, Default::default())),
        }
    }

    /// `[B, 3, H, W]` → `[B, 2048, H/32, W/32]` (`[B, 2048, 7, 7]` at 224 pixels).
    pub fn forward_features(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut ys = xs.apply(&self.conv1).apply_t(&self.bn1, train).relu().max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        for block in &self.blocks {
            ys = block.forward_t(&ys, train);
        }
        ys
    }

    /// `[B, 3, H, W]` → `[B, num_classes]`: features, global average pool, `fc`.
    ///
    /// # Panics
    /// If the network was built without a classifier.
    pub fn forward_logits(&self, xs: &Tensor, train: bool) -> Tensor {
        let fc = self.fc.as_ref().expect("ResNet built without a classifier (Config::num_classes is None)");
        self.forward_features(xs, train).mean_dim(&[-2i64, -1][..], false, None::<Kind>).apply(fc)
    }
}

impl ModuleT for ResNet {
    /// The features, as [`ResNet::forward_features`].
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.forward_features(xs, train)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::efficientnet::{load_safetensors, WeightsError};
    use tch::Device;

    #[test]
    fn resnet50_has_torchvision_shapes_and_parameter_count() {
        tch::manual_seed(1);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = ResNet::new(&vs.root(), &Config::resnet50());
        let vars = vs.variables();
        for (name, shape) in [
            ("conv1.weight", vec![64, 3, 7, 7]),
            ("layer1.0.downsample.0.weight", vec![256, 64, 1, 1]),
            ("layer2.0.conv2.weight", vec![128, 128, 3, 3]),
            ("layer3.5.bn3.running_var", vec![1024]),
            ("layer4.2.conv3.weight", vec![2048, 512, 1, 1]),
            ("fc.weight", vec![1000, 2048]),
        ] {
            assert_eq!(vars.get(name).map(|t| t.size()), Some(shape), "{name}");
        }
        assert!(!vars.contains_key("layer1.1.downsample.0.weight"));
        assert!(!vars.contains_key("layer3.6.conv1.weight"));
        // torchvision's resnet50 has 25,557,032 parameters.
        let params: i64 = vs.trainable_variables().iter().map(|t| t.numel() as i64).sum();
        assert_eq!(params, 25_557_032);

        let xs = Tensor::randn([2, 3, 224, 224], (Kind::Float, Device::Cpu));
        let (features, logits) = tch::no_grad(|| (net.forward_features(&xs, false), net.forward_logits(&xs, false)));
        assert_eq!(features.size(), [2, FEATURE_CHANNELS, 7, 7]);
        assert_eq!(logits.size(), [2, 1000]);
    }

    #[test]
    fn loads_a_safetensors_file_and_names_a_missing_or_misshaped_key() {
        tch::manual_seed(2);
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config { layers: [1, 1, 1, 1], num_classes: None };
        let source = nn::VarStore::new(Device::Cpu);
        let source_net = ResNet::new(&source.root(), &cfg);
        let full = dir.path().join("full.safetensors");
        source.save(&full).unwrap();

        let target = nn::VarStore::new(Device::Cpu);
        let target_net = ResNet::new(&target.root(), &cfg);
        assert_eq!(load_safetensors(&target, &full, "").unwrap(), source.variables().len());
        let xs = Tensor::randn([1, 3, 64, 64], (Kind::Float, Device::Cpu));
        let (a, b) = tch::no_grad(|| (source_net.forward_features(&xs, false), target_net.forward_features(&xs, false)));
        assert_eq!(a.size(), [1, FEATURE_CHANNELS, 2, 2]);
        assert_eq!((a - b).abs().max().double_value(&[]), 0.0);

        // Every tensor but one.
        let missing = "layer3.0.downsample.1.running_var";
        let mut named: Vec<(String, Tensor)> = source.variables().into_iter().filter(|(k, _)| k != missing).collect();
        let partial = dir.path().join("partial.safetensors");
        Tensor::write_safetensors(&named, &partial).unwrap();
        let err = load_safetensors(&target, &partial, "").unwrap_err();
        assert!(matches!(&err, WeightsError::Missing { key, .. } if key == missing), "{err:?}");
        assert!(err.to_string().contains(missing) && err.to_string().contains("partial.safetensors"), "{err}");

        // A tensor of the wrong shape.
        named.push((missing.to_string(), Tensor::zeros([3], (Kind::Float, Device::Cpu))));
        let misshaped = dir.path().join("misshaped.safetensors");
        Tensor::write_safetensors(&named, &misshaped).unwrap();
        let err = load_safetensors(&target, &misshaped, "").unwrap_err();
        assert!(matches!(&err, WeightsError::Shape { key, .. } if key == missing), "{err:?}");
        assert!(err.to_string().contains(missing), "{err}");

        // Under a prefix, the file's keys are the names without it; the values
        // take the variables' kind.
        let mut nested = nn::VarStore::new(Device::Cpu);
        let _net = ResNet::new(&(nested.root() / "image_encoder"), &cfg);
        nested.set_kind(Kind::Double);
        assert_eq!(load_safetensors(&nested, &full, "image_encoder").unwrap(), source.variables().len());
        let loaded = &nested.variables()["image_encoder.layer2.0.conv2.weight"];
        assert_eq!(loaded.kind(), Kind::Double);
        let original = source.variables()["layer2.0.conv2.weight"].to_kind(Kind::Double);
        assert_eq!((loaded - original).abs().max().double_value(&[]), 0.0);
    }
}
