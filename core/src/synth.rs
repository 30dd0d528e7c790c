//! A small generated catalog, deterministic for a seed, so that every test and
//! the demo run without external data.
//!
//! Each garment group has colour and print variants; its photo is a silhouette
//! of the subcategory's shape painted in the variant's colour and print, so the
//! texts really describe the images and a model can learn from them. Baskets
//! combine items of different categories, like outfits.

use std::collections::BTreeMap;
use std::path::Path;

use image::{Rgb, RgbImage};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::catalog::canonical::{self, write_atomically};
use crate::catalog::{attr, Basket, Catalog, CatalogError, Item, Result, SourceLoc, Split};

/// What to generate.
#[derive(Debug, Clone)]
pub struct SynthSpec {
    /// Number of garment groups; each has 2–4 colour/print variants.
    pub groups: usize,
    pub baskets: usize,
    pub seed: u64,
    /// Image width in pixels (height is 1.5× the width, like the H&M photos).
    pub image_width: u32,
}

impl Default for SynthSpec {
    fn default() -> Self {
        SynthSpec { groups: 60, baskets: 80, seed: 7, image_width: 64 }
    }
}

/// Silhouettes: each subcategory has a shape painted in the photo.
#[derive(Clone, Copy)]
enum Shape {
    Top,
    Trousers,
    Skirt,
    Boot,
    Sneaker,
    Bag,
    Hat,
    Dress,
}

const SUBCATEGORIES: [(&str, &str, Shape); 8] = [
    ("Upper body", "T-shirt", Shape::Top),
    ("Upper body", "Sweater", Shape::Top),
    ("Lower body", "Trousers", Shape::Trousers),
    ("Lower body", "Skirt", Shape::Skirt),
    ("Shoes", "Boots", Shape::Boot),
    ("Shoes", "Sneakers", Shape::Sneaker),
    ("Accessories", "Bag", Shape::Bag),
    ("Full body", "Dress", Shape::Dress),
];
const HAT: (&str, &str, Shape) = ("Accessories", "Hat", Shape::Hat);

const COLOURS: [(&str, [u8; 3]); 8] = [
    ("Black", [20, 20, 20]),
    ("White", [240, 240, 235]),
    ("Dark Blue", [25, 40, 110]),
    ("Red", [200, 30, 35]),
    ("Green", [40, 140, 60]),
    ("Yellow", [235, 205, 40]),
    ("Beige", [215, 195, 160]),
    ("Grey", [128, 128, 128]),
];
const PRINTS: [&str; 4] = ["Solid", "Stripe", "Check", "Dot"];
const MATERIALS: [&str; 6] = ["Cotton", "Linen", "Wool", "Denim", "Jersey", "Leather"];
const DETAILS: [&str; 6] = [
    "with a relaxed fit",
    "with a round neckline",
    "with a chunky sole",
    "with a buttoned front",
    "with a narrow cut",
    "with pockets at the sides",
];

/// Writes a generated catalog in the canonical format (with images, baskets and
/// a split by group) into `dir`, and returns it.
pub fn generate(dir: &Path, spec: &SynthSpec) -> Result<Catalog> {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let images_dir = dir.join("images");
    std::fs::create_dir_all(&images_dir).map_err(|e| CatalogError::io(&images_dir, e))?;
    let mut catalog = Catalog::new(dir);
    let kinds: Vec<_> = SUBCATEGORIES.iter().copied().chain([HAT]).collect();
    for group in 0..spec.groups {
        let (category, subcategory, shape) = kinds[group % kinds.len()];
        let material = MATERIALS[rng.gen_range(0..MATERIALS.len())];
        let detail = DETAILS[rng.gen_range(0..DETAILS.len())];
        let group_id = format!("g{group:04}");
        let split = match group % 20 {
            0..=13 => Split::Train,
            14..=16 => Split::Val,
            _ => Split::Test,
        };
        let mut colours: Vec<usize> = (0..COLOURS.len()).collect();
        colours.shuffle(&mut rng);
        let base_print = if rng.gen_bool(0.6) { 0 } else { rng.gen_range(1..PRINTS.len()) };
        for variant in 0..rng.gen_range(2..=4usize) {
            let (colour, rgb) = COLOURS[colours[variant]];
            // Most variants keep the group's print; some change it.
            let print = if variant > 0 && rng.gen_bool(0.25) { (base_print + variant) % PRINTS.len() } else { base_print };
            let id = format!("{group_id}-{variant:02}");
            let image = format!("images/{id}.jpg");
            let path = dir.join(&image);
            let photo = draw(shape, rgb, PRINTS[print], spec.image_width);
            write_atomically(&path, |out| {
                image::codecs::jpeg::JpegEncoder::new_with_quality(out, 90).encode_image(&photo).map_err(std::io::Error::other)
            })?;
            let print_words = match PRINTS[print] {
                "Solid" => String::new(),
                other => format!(" with a {} pattern", other.to_lowercase()),
            };
            let item = Item {
                id: id.clone(),
                group_id: group_id.clone(),
                title: format!("{material} {}", subcategory.to_lowercase()),
                description: format!("{colour} {} in {}{print_words}, {detail}.", subcategory.to_lowercase(), material.to_lowercase()),
                category: category.to_string(),
                subcategory: subcategory.to_string(),
                attributes: BTreeMap::from([
                    (attr::COLOUR.to_string(), colour.to_string()),
                    (attr::PRINT.to_string(), PRINTS[print].to_string()),
                ]),
                images: vec![image],
                price: Some(f64::from(rng.gen_range(10..120u32)) - 0.01),
                url: None,
                source: SourceLoc::new(dir.join(canonical::ITEMS_FILE), catalog.items.len() as u64 + 1),
            };
            catalog.splits.insert(id, split);
            catalog.items.push(item);
        }
    }
    let mut by_category: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for item in &catalog.items {
        by_category.entry(item.category.as_str()).or_default().push(item.id.as_str());
    }
    let categories: Vec<&Vec<&str>> = by_category.values().collect();
    for b in 0..spec.baskets {
        let mut picked: Vec<&Vec<&str>> = categories.clone();
        picked.shuffle(&mut rng);
        let size = rng.gen_range(3..=picked.len().min(5));
        let items = picked[..size].iter().map(|ids| ids[rng.gen_range(0..ids.len())].to_string()).collect();
        catalog.baskets.push(Basket { id: format!("b{b:04}"), items, source: SourceLoc::default() });
    }
    canonical::write_dir(&catalog, dir)?;
    canonical::import_dir(dir, Default::default())
}

/// Paints a garment silhouette in `colour` with `print` on a light background.
fn draw(shape: Shape, colour: [u8; 3], print: &str, width: u32) -> RgbImage {
    let height = width * 3 / 2;
    let shade = colour.map(|c| if c > 127 { c - 90 } else { c + 90 });
    RgbImage::from_fn(width, height, |x, y| {
        let (u, v) = (x as f32 / width as f32, y as f32 / height as f32);
        if !inside(shape, u, v) {
            return Rgb([236, 234, 230]);
        }
        let cell = width as f32 / 8.0;
        let (cx, cy) = (x as f32 / cell, y as f32 / cell);
        let marked = match print {
            "Stripe" => (cy as u32) % 2 == 0,
            "Check" => ((cx as u32) + (cy as u32)) % 2 == 0,
            "Dot" => (cx.fract() - 0.5).hypot(cy.fract() - 0.5) < 0.25,
            _ => false,
        };
        Rgb(if marked { shade } else { colour })
    })
}

/// Whether the point (u, v) in unit coordinates is inside the silhouette.
fn inside(shape: Shape, u: f32, v: f32) -> bool {
    let centred = (u - 0.5).abs();
    match shape {
        Shape::Top => (0.2..0.75).contains(&v) && (centred < 0.25 || (v < 0.45 && centred < 0.45)),
        Shape::Dress => (0.1..0.9).contains(&v) && centred < 0.15 + 0.25 * v,
        Shape::Trousers => (0.1..0.9).contains(&v) && centred < 0.3 && (v < 0.35 || centred > 0.05),
        Shape::Skirt => (0.25..0.7).contains(&v) && centred < 0.1 + 0.4 * (v - 0.25),
        Shape::Boot => (0.3..0.8).contains(&v) && ((0.3..0.55).contains(&u) || (v > 0.65 && (0.3..0.8).contains(&u))),
        Shape::Sneaker => (0.6..0.8).contains(&v) && (0.15..0.85).contains(&u) && (v > 0.68 || u < 0.55),
        Shape::Bag => (0.4..0.8).contains(&v) && centred < 0.3 || ((0.25..0.4).contains(&v) && (0.1..0.2).contains(&centred)),
        Shape::Hat => (0.35..0.55).contains(&v) && (centred < 0.2 || (v > 0.5 && centred < 0.4)),
    }
}
