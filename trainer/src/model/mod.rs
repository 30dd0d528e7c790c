//! The FashionViL model in tch: image encoder, the shared BERT text/fusion
//! encoder, and the heads of the pretext and downstream tasks.

pub mod bert;
pub mod downstream;
pub mod efficientnet;
pub mod fashionvil;
pub mod image_encoder;
pub mod resnet;
