//! Product photos → image-encoder input.
//!
//! Two framings of a photo in the square input of `side` pixels (224):
//! - [`Framing::Whole`] (default): the longer side is resized to `side` and the
//!   photo is centred on a square of its own border colour, so a 2:3 portrait
//!   keeps its shoes, hems and necklines. Training first takes a random window
//!   of 80–100% of each side, then frames that, and mirrors half the time.
//! - [`Framing::Crop`] (the paper's): the shorter side is resized (256), then a
//!   random `side` crop for training or the centre crop for evaluation.
//!
//! Resizing is bilinear with anti-aliasing when shrinking. Channels are
//! normalised with the statistics the backbone's weights were trained with:
//! both backbones are ImageNet-pretrained, so [`IMAGENET_MEAN`] and
//! [`IMAGENET_STD`] (the paper's fashion statistics, std about 0.12, suit only
//! a network trained from them). The result is a `[3, side, side]` f32 tensor.
//!
//! Training randomness comes from the caller's RNG, so a seeded RNG (for example
//! `rand_chacha::ChaCha8Rng::seed_from_u64`) gives the same windows and flips on
//! every run.

use std::path::{Path, PathBuf};

use ::image::imageops::{self, FilterType};
use ::image::{Rgb, RgbImage};
use rand::Rng;
use rayon::prelude::*;
use tch::Tensor;

/// Per-channel mean of ImageNet (RGB, in 0..1): the backbones' input statistics.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// Per-channel standard deviation of ImageNet (RGB, in 0..1).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Smallest share of each side a training window keeps ([`Framing::Whole`]).
const MIN_WINDOW: f64 = 0.8;

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

/// How a photo fills the square input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// The whole photo, its longer side at `side`, on a square of its border colour.
    Whole,
    /// The paper's: the shorter side resized to `resize`, then a `side` crop.
    Crop { resize: u32 },
}

/// Framing, size and normalisation settings; [`Default`] frames the whole
/// photo at 224 pixels with the ImageNet statistics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageTransform {
    /// Side of the square input.
    pub side: u32,
    pub framing: Framing,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Default for ImageTransform {
    fn default() -> Self {
        ImageTransform { side: 224, framing: Framing::Whole, mean: IMAGENET_MEAN, std: IMAGENET_STD }
    }
}

/// Where to crop the prepared image and whether to mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Placement {
    x: u32,
    y: u32,
    flip: bool,
}

impl ImageTransform {
    /// A short description of every setting, for the keys of caches that hold
    /// the encoder's outputs of transformed photos.
    pub fn cache_key(&self) -> String {
        let framing = match self.framing {
            Framing::Whole => "whole".to_string(),
            Framing::Crop { resize } => format!("crop{resize}"),
        };
        format!("{framing}-{}-{:?}-{:?}", self.side, self.mean, self.std)
    }

    fn validate(&self) -> Result<(), ImageError> {
        if self.side == 0 {
            return Err(ImageError::Config("the input side must be at least 1 pixel".into()));
        }
        if let Framing::Crop { resize } = self.framing {
            if self.side > resize {
                return Err(ImageError::Config(format!("crop {} must be between 1 and the resize length {resize}", self.side)));
            }
        }
        if self.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) || self.mean.iter().any(|m| !m.is_finite()) {
            return Err(ImageError::Config(format!("bad normalisation mean {:?} std {:?}", self.mean, self.std)));
        }
        Ok(())
    }

    /// Evaluation input: the whole photo framed (or the centre crop), normalised.
    pub fn eval(&self, path: &Path) -> Result<Tensor, ImageError> {
        let photo = self.load(path)?;
        match self.framing {
            Framing::Whole => Ok(self.finish(&self.frame(&photo), Placement { x: 0, y: 0, flip: false })),
            Framing::Crop { resize } => {
                let img = resize_shorter(photo, resize);
                let (x, y) = (centre_offset(img.width(), self.side), centre_offset(img.height(), self.side));
                Ok(self.finish(&img, Placement { x, y, flip: false }))
            }
        }
    }

    /// The evaluation inputs of `paths`, decoded in parallel: `[B, 3, side, side]`.
    pub fn eval_batch(&self, paths: &[PathBuf]) -> Result<Tensor, ImageError> {
        let images = paths.par_iter().map(|p| self.eval(p)).collect::<Result<Vec<_>, _>>()?;
        Ok(Tensor::stack(&images, 0))
    }

    /// Training input: a random window framed (or a random crop), a random
    /// horizontal flip, normalised.
    pub fn train<R: Rng + ?Sized>(&self, path: &Path, rng: &mut R) -> Result<Tensor, ImageError> {
        let photo = self.load(path)?;
        let (img, x, y) = match self.framing {
            Framing::Whole => {
                let share = rng.gen_range(MIN_WINDOW..=1.0);
                let (w, h) = (window_len(photo.width(), share), window_len(photo.height(), share));
                let (x, y) = (rng.gen_range(0..=photo.width() - w), rng.gen_range(0..=photo.height() - h));
                (self.frame(&imageops::crop_imm(&photo, x, y, w, h).to_image()), 0, 0)
            }
            Framing::Crop { resize } => {
                let img = resize_shorter(photo, resize);
                let x = rng.gen_range(0..=img.width() - self.side);
                let y = rng.gen_range(0..=img.height() - self.side);
                (img, x, y)
            }
        };
        let flip = rng.gen_bool(0.5);
        Ok(self.finish(&img, Placement { x, y, flip }))
    }

    /// Decodes the file (format from its content) into RGB.
    fn load(&self, path: &Path) -> Result<RgbImage, ImageError> {
        self.validate()?;
        let bytes = std::fs::read(path).map_err(|source| ImageError::Read { path: path.to_path_buf(), source })?;
        let img = ::image::load_from_memory(&bytes).map_err(|source| ImageError::Decode { path: path.to_path_buf(), source })?;
        if img.width() == 0 || img.height() == 0 {
            return Err(ImageError::Empty { path: path.to_path_buf(), width: img.width(), height: img.height() });
        }
        Ok(img.into_rgb8())
    }

    /// The photo with its longer side at `side`, centred on a `side` square
    /// filled with the photo's mean border colour (its background, for a
    /// product shot).
    fn frame(&self, photo: &RgbImage) -> RgbImage {
        let (w, h) = fitted_size(photo.width(), photo.height(), self.side);
        let resized = if (w, h) == photo.dimensions() { photo.clone() } else { imageops::resize(photo, w, h, FilterType::Triangle) };
        let mut canvas = RgbImage::from_pixel(self.side, self.side, border_colour(photo));
        imageops::replace(&mut canvas, &resized, i64::from((self.side - w) / 2), i64::from((self.side - h) / 2));
        canvas
    }

    /// Crops, mirrors and normalises into a `[3, side, side]` tensor.
    fn finish(&self, img: &RgbImage, at: Placement) -> Tensor {
        let data = self.to_chw(img, at);
        let c = i64::from(self.side);
        Tensor::from_slice(&data).view([3, c, c])
    }

    fn to_chw(&self, img: &RgbImage, at: Placement) -> Vec<f32> {
        let side = self.side as usize;
        let plane = side * side;
        let mut out = vec![0f32; 3 * plane];
        let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / self.std[c]);
        for row in 0..self.side {
            for col in 0..self.side {
                let src_col = if at.flip { self.side - 1 - col } else { col };
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

fn resize_shorter(rgb: RgbImage, shorter: u32) -> RgbImage {
    let (w, h) = resized_size(rgb.width(), rgb.height(), shorter);
    if (w, h) == rgb.dimensions() {
        rgb
    } else {
        imageops::resize(&rgb, w, h, FilterType::Triangle)
    }
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

/// Size after scaling the longer side to `longer` (the shorter side rounded, at least 1).
fn fitted_size(width: u32, height: u32, longer: u32) -> (u32, u32) {
    let short = |s: u32, l: u32| ((u64::from(s) * u64::from(longer) + u64::from(l) / 2) / u64::from(l)).clamp(1, u64::from(longer)) as u32;
    if width <= height {
        (short(width, height), longer)
    } else {
        (longer, short(height, width))
    }
}

/// Length of a window keeping `share` of a side (at least 1 pixel).
fn window_len(len: u32, share: f64) -> u32 {
    ((f64::from(len) * share).round() as u32).clamp(1, len)
}

/// Mean colour of the outermost rows and columns.
fn border_colour(img: &RgbImage) -> Rgb<u8> {
    let (w, h) = img.dimensions();
    let mut sum = [0u64; 3];
    let mut count = 0u64;
    for (x, y, px) in img.enumerate_pixels() {
        if x == 0 || y == 0 || x + 1 == w || y + 1 == h {
            for c in 0..3 {
                sum[c] += u64::from(px.0[c]);
            }
            count += 1;
        }
    }
    Rgb(std::array::from_fn(|c| ((sum[c] + count / 2) / count) as u8))
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
    use ::image::ImageFormat;
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

    fn paper() -> ImageTransform {
        ImageTransform { framing: Framing::Crop { resize: 256 }, ..Default::default() }
    }

    #[test]
    fn output_is_3x224x224_f32_for_portrait_and_landscape() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for (w, h) in [(300, 400), (640, 480), (224, 224), (100, 90), (1, 500)] {
            let img = RgbImage::from_fn(w, h, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 7]));
            let path = save(&img, dir.path(), &format!("{w}x{h}.png"));
            for t in [ImageTransform::default(), paper()] {
                for out in [t.eval(&path).unwrap(), t.train(&path, &mut rng).unwrap()] {
                    assert_eq!(out.size(), vec![3, 224, 224], "{w}x{h} {:?}", t.framing);
                    assert_eq!(out.kind(), Kind::Float);
                }
            }
        }
    }

    #[test]
    fn resizes_the_shorter_or_the_longer_side() {
        assert_eq!(resized_size(300, 400, 256), (256, 341));
        assert_eq!(resized_size(400, 300, 256), (341, 256));
        assert_eq!(resized_size(256, 256, 256), (256, 256));
        assert_eq!(resized_size(1000, 10, 256), (25600, 256));
        assert_eq!(fitted_size(224, 336, 224), (149, 224));
        assert_eq!(fitted_size(336, 224, 224), (224, 149));
        assert_eq!(fitted_size(10, 10, 224), (224, 224));
        assert_eq!(fitted_size(1, 1000, 224), (1, 224));
    }

    #[test]
    fn whole_framing_keeps_the_top_and_bottom_rows_and_pads_with_the_border() {
        // A 2:3 portrait with a grey background, a red top row and a blue bottom
        // row: the centre crop loses both, the whole framing keeps both.
        let dir = tempfile::tempdir().unwrap();
        let img = RgbImage::from_fn(224, 336, |_, y| match y {
            0..=11 => Rgb([255, 0, 0]),
            324.. => Rgb([0, 0, 255]),
            _ => Rgb([230, 230, 230]),
        });
        let path = save(&img, dir.path(), "portrait.png");
        let t = ImageTransform::default();
        let out = t.eval(&path).unwrap();
        let pixel = |row: i64, col: i64| -> [f32; 3] { std::array::from_fn(|c| out.double_value(&[c as i64, row, col]) as f32) };
        let colour = |rgb: [u8; 3]| -> [f32; 3] { std::array::from_fn(|c| normalise(rgb[c], IMAGENET_MEAN[c], 1.0 / IMAGENET_STD[c])) };
        let near = |a: [f32; 3], b: [f32; 3]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 0.05);
        assert!(near(pixel(1, 112), colour([255, 0, 0])), "top row {:?}", pixel(1, 112));
        assert!(near(pixel(222, 112), colour([0, 0, 255])), "bottom row {:?}", pixel(222, 112));
        // The pad (left and right of a 149-pixel-wide photo) is the border's mean colour.
        let border = border_colour(&img).0;
        assert!(near(pixel(112, 10), colour(border)) && near(pixel(112, 214), colour(border)), "pad {:?}", pixel(112, 10));
        let crop = paper().eval(&path).unwrap();
        assert!(!near(std::array::from_fn(|c| crop.double_value(&[c as i64, 0, 112]) as f32), colour([255, 0, 0])));
    }

    #[test]
    fn solid_colour_normalises_to_exact_channel_values() {
        let dir = tempfile::tempdir().unwrap();
        let colour = [200u8, 100, 50];
        let path = save(&RgbImage::from_pixel(500, 300, Rgb(colour)), dir.path(), "solid.png");
        let expected = [(200.0 / 255.0 - 0.485) / 0.229, (100.0 / 255.0 - 0.456) / 0.224, (50.0 / 255.0 - 0.406) / 0.225];
        for t in [ImageTransform::default(), paper()] {
            let out = t.eval(&path).unwrap();
            for c in 0..3 {
                let channel = values(&out.get(c as i64));
                assert_eq!(channel.len(), 224 * 224);
                for v in channel {
                    assert!((f64::from(v) - expected[c]).abs() < 1e-5, "channel {c}: {v} != {}", expected[c]);
                }
            }
        }
        // Spot values: red is above the mean, green and blue below it.
        assert!(expected[0] > 1.3 && expected[1] < -0.2 && expected[2] < -0.8, "{expected:?}");
    }

    #[test]
    fn flip_mirrors_the_crop() {
        let img = RgbImage::from_fn(256, 256, |x, y| Rgb([x as u8, y as u8, (x ^ y) as u8]));
        let t = paper();
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
        assert!((plain[0] - normalise(5, IMAGENET_MEAN[0], 1.0 / IMAGENET_STD[0])).abs() < 1e-7);
    }

    #[test]
    fn training_flips_about_half_the_time_and_is_seeded() {
        let dir = tempfile::tempdir().unwrap();
        let img = RgbImage::from_fn(8, 8, |x, y| Rgb([(x * 30) as u8, (y * 30) as u8, 0]));
        let path = save(&img, dir.path(), "grad.png");
        let t = ImageTransform { side: 8, framing: Framing::Crop { resize: 8 }, ..Default::default() };
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
        for t in [ImageTransform::default(), paper()] {
            let run = |seed| values(&t.train(&big, &mut ChaCha8Rng::seed_from_u64(seed)).unwrap());
            assert_eq!(run(3), run(3));
            assert_ne!(run(3), run(4));
        }
    }

    #[test]
    fn centre_crop_is_deterministic_and_centred() {
        let dir = tempfile::tempdir().unwrap();
        // Already 256 on the shorter side, so there is no resampling: the crop
        // starts at ((256-224)/2, (300-224)/2) = (16, 38).
        let img = RgbImage::from_fn(256, 300, |x, y| Rgb([x as u8, (y % 256) as u8, 0]));
        let path = save(&img, dir.path(), "centre.png");
        let t = paper();
        let a = values(&t.eval(&path).unwrap());
        let b = values(&t.eval(&path).unwrap());
        assert_eq!(a, b);
        let plane = 224 * 224;
        assert_eq!(a[0], normalise(16, IMAGENET_MEAN[0], 1.0 / IMAGENET_STD[0]));
        assert_eq!(a[plane], normalise(38, IMAGENET_MEAN[1], 1.0 / IMAGENET_STD[1]));
        assert_eq!(a[223], normalise(16 + 223, IMAGENET_MEAN[0], 1.0 / IMAGENET_STD[0]));
    }

    #[test]
    fn centre_offset_rounds_like_torchvision() {
        assert_eq!(centre_offset(256, 224), 16);
        assert_eq!(centre_offset(257, 224), 16); // 16.5 → 16
        assert_eq!(centre_offset(259, 224), 18); // 17.5 → 18
        assert_eq!(centre_offset(224, 224), 0);
    }

    #[test]
    fn cache_keys_differ_with_every_setting() {
        let keys = [
            ImageTransform::default(),
            paper(),
            ImageTransform { side: 160, ..Default::default() },
            ImageTransform { mean: [0.5; 3], ..Default::default() },
        ]
        .map(|t| t.cache_key());
        for i in 0..keys.len() {
            for j in i + 1..keys.len() {
                assert_ne!(keys[i], keys[j]);
            }
        }
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
        let t = ImageTransform { side: 200, framing: Framing::Crop { resize: 100 }, ..Default::default() };
        assert!(matches!(t.eval(&path), Err(ImageError::Config(_))));
    }
}
