//! Writes the pixels of the EfficientNet-Lite0 parity fixture's photo inputs
//! (224×224×3 u8, row-major RGB) to `/tmp/vitrine-efficientnet-inputs`, for
//! `fixtures/make_efficientnet_reference.py`:
//!
//! ```sh
//! cargo run -p vitrine-trainer --example efficientnet_fixture_inputs
//! ```

use std::path::Path;

#[path = "../tests/support/efficientnet_inputs.rs"]
mod efficientnet_inputs;

use efficientnet_inputs::{fnv1a64, photo_pixels, synthetic_pixels, PHOTOS, PHOTO_INPUTS};

const DUMP_DIR: &str = "/tmp/vitrine-efficientnet-inputs";

fn main() -> std::io::Result<()> {
    let dir = Path::new(PHOTOS);
    if !dir.is_dir() {
        eprintln!("the H&M photos are missing: {PHOTOS}");
        std::process::exit(1);
    }
    std::fs::create_dir_all(DUMP_DIR)?;
    for (name, file, _) in PHOTO_INPUTS {
        let pixels = photo_pixels(&dir.join(file));
        let out = Path::new(DUMP_DIR).join(format!("{name}.rgb"));
        std::fs::write(&out, &pixels)?;
        println!("{} ({} bytes, fnv1a64 {})", out.display(), pixels.len(), fnv1a64(&pixels));
    }
    println!("synthetic: fnv1a64 {}", fnv1a64(&synthetic_pixels()));
    Ok(())
}
