//! The image encoder behind the visual tokens: EfficientNet-Lite0 (default,
//! ImageNet weights from the set-up) or ResNet-50 (the paper's, from a
//! user-supplied safetensors file with torchvision names). Both end in a 7×7
//! grid at 224 px.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

use super::efficientnet::{self, EfficientNet, WeightsError};
use super::resnet::{self, ResNet};

/// Which network encodes the photos.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backbone {
    #[default]
    EfficientnetLite0,
    Resnet50,
}

impl Backbone {
    /// Channels of the last feature map.
    pub fn channels(self) -> i64 {
        match self {
            Backbone::EfficientnetLite0 => 1280,
            Backbone::Resnet50 => 2048,
        }
    }

    /// The most layers at the end of the network that can train on cached
    /// inputs ([`efficientnet::Tail`]; none for ResNet-50).
    pub fn max_tail_layers(self) -> usize {
        match self {
            Backbone::EfficientnetLite0 => efficientnet::Config::lite0_features().max_tail_layers(),
            Backbone::Resnet50 => 0,
        }
    }

    /// Channels of the cached map a tail of `layers` layers reads (the
    /// features' for 0).
    pub fn tail_input_channels(self, layers: usize) -> i64 {
        match (self, layers) {
            (_, 0) => self.channels(),
            (Backbone::EfficientnetLite0, _) => efficientnet::Config::lite0_features().tail_input_channels(layers),
            (Backbone::Resnet50, _) => panic!("ResNet-50 has no trainable tail"),
        }
    }
}

/// A feature extractor of either backbone.
#[derive(Debug)]
pub enum ImageEncoder {
    EfficientNet(EfficientNet),
    ResNet(ResNet),
}

impl ImageEncoder {
    pub fn new(p: &nn::Path, backbone: Backbone) -> Self {
        match backbone {
            Backbone::EfficientnetLite0 => ImageEncoder::EfficientNet(EfficientNet::new(p, &efficientnet::Config::lite0_features())),
            Backbone::Resnet50 => ImageEncoder::ResNet(ResNet::new(p, &resnet::Config::resnet50_features())),
        }
    }

    /// Builds the encoder under `p` and fills it from `weights`, checking every name and shape.
    pub fn pretrained(vs: &nn::VarStore, p: &nn::Path, backbone: Backbone, weights: &Path) -> Result<Self, WeightsError> {
        let encoder = ImageEncoder::new(p, backbone);
        let prefix = p.components().collect::<Vec<_>>().join(".");
        efficientnet::load_safetensors(vs, weights, &prefix)?;
        Ok(encoder)
    }

    /// `[B, 3, 224, 224]` normalised photos → `[B, C, 7, 7]`.
    pub fn forward_features(&self, images: &Tensor, train: bool) -> Tensor {
        match self {
            ImageEncoder::EfficientNet(net) => net.forward_features(images, train),
            ImageEncoder::ResNet(net) => net.forward_features(images, train),
        }
    }

    /// `[B, 3, 224, 224]` normalised photos → the input `[B, C, 7, 7]` of the
    /// last `tail_layers` layers (the features for 0).
    ///
    /// # Panics
    /// With `tail_layers > 0` on ResNet-50 (see [`Backbone::max_tail_layers`]).
    pub fn forward_before_tail(&self, images: &Tensor, tail_layers: usize, train: bool) -> Tensor {
        match (self, tail_layers) {
            (_, 0) => self.forward_features(images, train),
            (ImageEncoder::EfficientNet(net), _) => net.forward_before_tail(images, tail_layers, train),
            (ImageEncoder::ResNet(_), _) => panic!("ResNet-50 has no trainable tail"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_backbones_give_their_channels_on_a_7x7_grid() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let x = Tensor::zeros([1, 3, 224, 224], (tch::Kind::Float, tch::Device::Cpu));
        for backbone in [Backbone::EfficientnetLite0, Backbone::Resnet50] {
            let encoder = ImageEncoder::new(&(vs.root() / format!("{backbone:?}")), backbone);
            let features = tch::no_grad(|| encoder.forward_features(&x, false));
            assert_eq!(features.size(), [1, backbone.channels(), 7, 7]);
        }
    }
}
