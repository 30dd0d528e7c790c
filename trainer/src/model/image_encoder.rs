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
