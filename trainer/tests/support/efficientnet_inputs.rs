//! The inputs of the EfficientNet-Lite0 parity fixture, shared by the parity
//! test and the example that writes them for the fixture generator.

use std::path::Path;

use tch::Tensor;
use vitrine_trainer::image::{Framing, ImageTransform, IMAGENET_MEAN, IMAGENET_STD};

pub const PHOTOS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/hm/images");

pub const SIDE: usize = 224;

/// The photos of the fixture: (input name, path under the images folder, ImageNet
/// class). The sandal is class 774 (sandal). The necklace is 679 (necklace) only
/// by a hair over 488 (chain) or below it, depending on the crop; on this input
/// the reference ranks 488 first and 679 second, so the test asks for the
/// reference's top-1 and for the named class within the top two.
pub const PHOTO_INPUTS: [(&str, &str, i64); 2] = [("sandal", "080/0808648001.jpg", 774), ("necklace", "090/0908652001.jpg", 679)];

/// The synthetic input: r = (7x + 3y) mod 256, g = xy mod 256, b = (255 - x + 2y) mod 256.
pub fn synthetic_pixels() -> Vec<u8> {
    let mut out = Vec::with_capacity(SIDE * SIDE * 3);
    for y in 0..SIDE {
        for x in 0..SIDE {
            out.push(((x * 7 + y * 3) % 256) as u8);
            out.push(((x * y) % 256) as u8);
            out.push(((255 + 2 * y - x) % 256) as u8);
        }
    }
    out
}

/// Row-major RGB bytes → `[3, 224, 224]`, normalised with the ImageNet statistics
/// exactly as `ImageTransform` does (and the script, in f32).
pub fn normalise(pixels: &[u8]) -> Tensor {
    let plane = SIDE * SIDE;
    let mut out = vec![0f32; 3 * plane];
    for (i, px) in pixels.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * plane + i] = (f32::from(px[c]) / 255.0 - IMAGENET_MEAN[c]) * (1.0 / IMAGENET_STD[c]);
        }
    }
    Tensor::from_slice(&out).view([3, SIDE as i64, SIDE as i64])
}

/// The photo as the crate prepares it for evaluation at 224 pixels (shorter side
/// resized to 224, centre crop 224), as row-major RGB bytes. The H&M photos are
/// 224×336, so this is a plain centre crop of the decoded JPEG: no resampling.
/// `ImageTransform` returns normalised values; the bytes are recovered exactly,
/// which is checked by normalising them again.
pub fn photo_pixels(path: &Path) -> Vec<u8> {
    let transform =
        ImageTransform { side: SIDE as u32, framing: Framing::Crop { resize: SIDE as u32 }, mean: IMAGENET_MEAN, std: IMAGENET_STD };
    let chw = transform.eval(path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(chw.size(), [3, SIDE as i64, SIDE as i64]);
    let values = Vec::<f32>::try_from(&chw.flatten(0, -1)).unwrap();
    let plane = SIDE * SIDE;
    let mut pixels = vec![0u8; 3 * plane];
    for i in 0..plane {
        for c in 0..3 {
            let v = (values[c * plane + i] * IMAGENET_STD[c] + IMAGENET_MEAN[c]) * 255.0;
            pixels[i * 3 + c] = v.round().clamp(0.0, 255.0) as u8;
        }
    }
    let again = Vec::<f32>::try_from(&normalise(&pixels).flatten(0, -1)).unwrap();
    assert_eq!(again, values, "the pixels of {} do not round-trip", path.display());
    pixels
}

/// FNV-1a (64 bits) of the pixels, as the script computes it.
pub fn fnv1a64(bytes: &[u8]) -> String {
    format!("{:016x}", vitrine_core::hash::fnv1a64(bytes))
}
