//! Product photos → image-encoder input.
//!
//! The paper's pipeline: resize the shorter side to 256 (bilinear, with
//! anti-aliasing when shrinking), then a random 224 crop and a random horizontal
//! flip for training or the centre 224 crop for evaluation, then normalise each
//! channel with the fashion-image mean [.468, .445, .407] and standard deviation
//! [.122, .121, .144]. The result is a `[3, 224, 224]` f32 tensor (channels first).
//!
//! Training randomness comes from the caller's RNG, so a seeded RNG (for example
//! `rand_chacha::ChaCha8Rng::seed_from_u64`) gives the same crops and flips on
//! every run.

use std::path::{Path, PathBuf};

use ::image::imageops::{self, FilterType};
use ::image::{DynamicImage, RgbImage};
use rand::Rng;
use tch::Tensor;

/// Per-channel mean of the fashion images (RGB, in 0..1).
pub const IMAGE_MEAN: [f32; 3] = [0.468, 0.445, 0.407];
/// Per-channel standard deviation of the fashion images (RGB, in 0..1).
pub const IMAGE_STD: [f32; 3] = [0.122, 0.121, 0.144];

/// Errors of loading or preprocessing an image; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot read image {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot decode image {}: {source}", path.display())]
    Decode {
        path: PathBuf,
        #[source]
        source: ::image::ImageError,
    },
    #[error("image {} is empty ({width}×{height})", path.display())]
    Empty { path: PathBuf, width: u32, height: u32 },
    #[error("invalid image transform: {0}")]
    Config(String),
}

/// Resize, crop and normalisation settings; [`Default`] is the paper's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageTransform {
    /// Length of the shorter side after resizing.
    pub resize: u32,
    /// Side of the square crop (at most `resize`).
    pub crop: u32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Default for ImageTransform {
    fn default() -> Self {
        ImageTransform { resize: 256, crop: 224, mean: IMAGE_MEAN, std: IMAGE_STD }
    }
}

/// Where to crop and whether to mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Placement {
    x: u32,
    y: u32,
    flip: bool,
}

impl ImageTransform {
    fn validate(&self) -> Result<(), ImageError> {
        if self.crop == 0 || self.crop > self.resize {
            return Err(ImageError::Config(format!("crop {} must be between 1 and the resize length {}", self.crop, self.resize)));
        }
        if self.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) || self.mean.iter().any(|m| !m.is_finite()) {
            return Err(ImageError::Config(format!("bad normalisation mean {:?} std {:?}", self.mean, self.std)));
        }
        Ok(())
    }

    /// Evaluation input: resize, centre crop, normalise.
    pub fn eval(&self, path: &Path) -> Result<Tensor, ImageError> {
        let img = self.load_resized(path)?;
        let (x, y) = (centre_offset(img.width(), self.crop), centre_offset(img.height(), self.crop));
        Ok(self.finish(&img, Placement { x, y, flip: false }))
    }

    /// Training input: resize, random crop, random horizontal flip, normalise.
    pub fn train<R: Rng + ?Sized>(&self, path: &Path, rng: &mut R) -> Result<Tensor, ImageError> {
        let img = self.load_resized(path)?;
        let x = rng.gen_range(0..=img.width() - self.crop);
        let y = rng.gen_range(0..=img.height() - self.crop);
        let flip = rng.gen_bool(0.5);
        Ok(self.finish(&img, Placement { x, y, flip }))
    }

    /// Decodes the file (format from its content) and resizes its shorter side.
    fn load_resized(&self, path: &Path) -> Result<RgbImage, ImageError> {
        self.validate()?;
        let bytes = std::fs::read(path).map_err(|source| ImageError::Read { path: path.to_path_buf(), source })?;
        let img = ::image::load_from_memory(&bytes).map_err(|source| ImageError::Decode { path: path.to_path_buf(), source })?;
        if img.width() == 0 || img.height() == 0 {
            return Err(ImageError::Empty { path: path.to_path_buf(), width: img.width(), height: img.height() });
        }
        Ok(self.resize_shorter(img))
    }

    fn resize_shorter(&self, img: DynamicImage) -> RgbImage {
        let rgb = img.into_rgb8();
        let (w, h) = resized_size(rgb.width(), rgb.height(), self.resize);
        if (w, h) == rgb.dimensions() {
            rgb
        } else {
            imageops::resize(&rgb, w, h, FilterType::Triangle)
        }
    }

    /// Crops, mirrors and normalises into a `[3, crop, crop]` tensor.
    fn finish(&self, img: &RgbImage, at: Placement) -> Tensor {
        let data = self.to_chw(img, at);
        let c = i64::from(self.crop);
        Tensor::from_slice(&data).view([3, c, c])
    }

    fn to_chw(&self, img: &RgbImage, at: Placement) -> Vec<f32> {
        let side = self.crop as usize;
        let plane = side * side;
        let mut out = vec![0f32; 3 * plane];
        let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / self.std[c]);
        for row in 0..self.crop {
            for col in 0..self.crop {
                let src_col = if at.flip { self.crop - 1 - col } else { col };
                let px = img.get_pixel(at.x + src_col, at.y + row).0;
                let i = row as usize * side + col as usize;
                for c in 0..3 {
                    out[c * plane + i] = normalise(px[c], self.mean[c], scale[c]);
                }
            }
        }
        out
    }
}

#[inline]
fn normalise(value: u8, mean: f32, inv_std: f32) -> f32 {
    (f32::from(value) / 255.0 - mean) * inv_std
}

/// Size after scaling the shorter side to `shorter` (the longer side is truncated,
/// as torchvision does).
fn resized_size(width: u32, height: u32, shorter: u32) -> (u32, u32) {
    let long = |l: u32, s: u32| ((u64::from(l) * u64::from(shorter)) / u64::from(s)).max(u64::from(shorter)) as u32;
    if width <= height {
        (shorter, long(height, width))
    } else {
        (long(width, height), shorter)
    }
}

/// Offset of a centred crop, rounding half to even like torchvision's CenterCrop.
fn centre_offset(len: u32, crop: u32) -> u32 {
    let diff = len - crop;
    let half = diff / 2;
    if diff % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::image::{ImageFormat, Rgb};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use tch::Kind;

    fn save(img: &RgbImage, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        img.save_with_format(&path, ImageFormat::Png).unwrap();
        path
    }

    fn values(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(&t.flatten(0, -1)).unwrap()
    }

    #[test]
    fn output_is_3x224x224_f32_for_portrait_and_landscape() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for (w, h) in [(300, 400), (640, 480), (224, 224), (100, 90)] {
            let img = RgbImage::from_fn(w, h, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 7]));
            let path = save(&img, dir.path(), &format!("{w}x{h}.png"));
            let t = ImageTransform::default();
            for out in [t.eval(&path).unwrap(), t.train(&path, &mut rng).unwrap()] {
                assert_eq!(out.size(), vec![3, 224, 224], "{w}x{h}");
                assert_eq!(out.kind(), Kind::Float);
            }
        }
    }

    #[test]
    fn resizes_the_shorter_side() {
        assert_eq!(resized_size(300, 400, 256), (256, 341));
        assert_eq!(resized_size(400, 300, 256), (341, 256));
        assert_eq!(resized_size(256, 256, 256), (256, 256));
        assert_eq!(resized_size(1000, 10, 256), (25600, 256));
    }

    #[test]
    fn solid_colour_normalises_to_exact_channel_values() {
        let dir = tempfile::tempdir().unwrap();
        let colour = [200u8, 100, 50];
        let path = save(&RgbImage::from_pixel(500, 300, Rgb(colour)), dir.path(), "solid.png");
        let out = ImageTransform::default().eval(&path).unwrap();
        let expected = [(200.0 / 255.0 - 0.468) / 0.122, (100.0 / 255.0 - 0.445) / 0.121, (50.0 / 255.0 - 0.407) / 0.144];
        for c in 0..3 {
            let channel = values(&out.get(c as i64));
            assert_eq!(channel.len(), 224 * 224);
            for v in channel {
                assert!((f64::from(v) - expected[c]).abs() < 1e-5, "channel {c}: {v} != {}", expected[c]);
            }
        }
        // Spot values: red is above the mean, green and blue below it.
        assert!(expected[0] > 2.5 && expected[1] < -0.4 && expected[2] < -1.4, "{expected:?}");
    }

    #[test]
    fn flip_mirrors_the_crop() {
        let img = RgbImage::from_fn(256, 256, |x, y| Rgb([x as u8, y as u8, (x ^ y) as u8]));
        let t = ImageTransform::default();
        let plain = t.to_chw(&img, Placement { x: 5, y: 9, flip: false });
        let flipped = t.to_chw(&img, Placement { x: 5, y: 9, flip: true });
        let side = 224;
        for c in 0..3 {
            for row in 0..side {
                for col in 0..side {
                    let a = plain[c * side * side + row * side + col];
                    let b = flipped[c * side * side + row * side + (side - 1 - col)];
                    assert_eq!(a, b, "c{c} row{row} col{col}");
                }
            }
        }
        assert_ne!(plain, flipped);
        // Top-left of the plain crop is pixel (5, 9): red channel = 5/255.
        assert!((plain[0] - normalise(5, IMAGE_MEAN[0], 1.0 / IMAGE_STD[0])).abs() < 1e-7);
    }

    #[test]
    fn training_flips_about_half_the_time_and_is_seeded() {
        let dir = tempfile::tempdir().unwrap();
        let img = RgbImage::from_fn(8, 8, |x, y| Rgb([(x * 30) as u8, (y * 30) as u8, 0]));
        let path = save(&img, dir.path(), "grad.png");
        let t = ImageTransform { resize: 8, crop: 8, ..Default::default() };
        let plain = values(&t.eval(&path).unwrap());
        let mirrored = values(&t.eval(&path).unwrap().flip([2]));
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        let mut flips = 0;
        for _ in 0..64 {
            let v = values(&t.train(&path, &mut rng).unwrap());
            if v == mirrored {
                flips += 1;
            } else {
                assert_eq!(v, plain);
            }
        }
        assert!((16..=48).contains(&flips), "{flips} flips of 64");

        let big = save(&RgbImage::from_fn(300, 260, |x, y| Rgb([x as u8, y as u8, 1])), dir.path(), "big.png");
        let t = ImageTransform::default();
        let run = |seed| values(&t.train(&big, &mut ChaCha8Rng::seed_from_u64(seed)).unwrap());
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }

    #[test]
    fn centre_crop_is_deterministic_and_centred() {
        let dir = tempfile::tempdir().unwrap();
        // Already 256 on the shorter side, so there is no resampling: the crop
        // starts at ((256-224)/2, (300-224)/2) = (16, 38).
        let img = RgbImage::from_fn(256, 300, |x, y| Rgb([x as u8, (y % 256) as u8, 0]));
        let path = save(&img, dir.path(), "centre.png");
        let t = ImageTransform::default();
        let a = values(&t.eval(&path).unwrap());
        let b = values(&t.eval(&path).unwrap());
        assert_eq!(a, b);
        let plane = 224 * 224;
        assert_eq!(a[0], normalise(16, IMAGE_MEAN[0], 1.0 / IMAGE_STD[0]));
        assert_eq!(a[plane], normalise(38, IMAGE_MEAN[1], 1.0 / IMAGE_STD[1]));
        assert_eq!(a[223], normalise(16 + 223, IMAGE_MEAN[0], 1.0 / IMAGE_STD[0]));
    }

    #[test]
    fn centre_offset_rounds_like_torchvision() {
        assert_eq!(centre_offset(256, 224), 16);
        assert_eq!(centre_offset(257, 224), 16); // 16.5 → 16
        assert_eq!(centre_offset(259, 224), 18); // 17.5 → 18
        assert_eq!(centre_offset(224, 224), 0);
    }

    #[test]
    fn corrupt_and_missing_files_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("broken-photo.jpg");
        std::fs::write(&bad, b"\xff\xd8\xff\xe0 this is not really a jpeg").unwrap();
        let err = ImageTransform::default().eval(&bad).unwrap_err();
        assert!(matches!(err, ImageError::Decode { .. }), "{err:?}");
        assert!(err.to_string().contains(&bad.display().to_string()), "{err}");

        let missing = dir.path().join("missing.png");
        let err = ImageTransform::default().train(&missing, &mut ChaCha8Rng::seed_from_u64(0)).unwrap_err();
        assert!(matches!(err, ImageError::Read { .. }), "{err:?}");
        assert!(err.to_string().contains("missing.png"), "{err}");
    }

    #[test]
    fn rejects_a_crop_larger_than_the_resize() {
        let dir = tempfile::tempdir().unwrap();
        let path = save(&RgbImage::from_pixel(10, 10, Rgb([1, 2, 3])), dir.path(), "x.png");
        let t = ImageTransform { resize: 100, crop: 200, ..Default::default() };
        assert!(matches!(t.eval(&path), Err(ImageError::Config(_))));
    }
}
