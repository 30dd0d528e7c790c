//! The frozen image encoder's feature maps of every photo it has seen, kept
//! across runs and keyed by each photo's content. When the recipe trains the
//! encoder's last layers on cached inputs (`image_tail_layers`), the store
//! holds the maps those layers read instead, in a store of its own.
//!
//! A nightly catalog differs from yesterday's by a few items, and with a
//! frozen encoder a photo's feature map never changes: only photos the store
//! has not seen (new ones, or files whose bytes changed) go through the
//! encoder. Layout, one folder per encoder (backbone and weights file):
//!
//! ```text
//! <cache>/photo-features-<encoder>/maps.f16    row i: (tail input) map of photo i, [C, 7, 7] f16, appended
//!                                  /index.txt   line i: SHA-256 of photo i's file, appended after its row
//!                                  /.lock       held while a process adds photos
//! ```
//!
//! A row counts once its index line is complete, and rows are written (and
//! synced) before their lines, so a process killed mid-pass leaves a store
//! that opens as the rows finished before it; the next run carries on.
//! Reads memory-map `maps.f16`: the store does not have to fit in RAM.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use tch::{nn, Device, Kind, Tensor};
use vitrine_core::hash::Fnv1a;

use crate::checkpoint::sha256_file;
use crate::image::ImageTransform;
use crate::model::image_encoder::{Backbone, ImageEncoder};

/// Errors of the photo feature store; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum FeatureStoreError {
    #[error("image encoder weights {path}: {reason} (run `cargo xtask setup` to fetch them)")]
    Weights { path: PathBuf, reason: String },
    #[error("feature cache {path}: {source}")]
    Cache { path: PathBuf, source: tch::TchError },
    #[error("cannot read the photo {path}: {source}")]
    Photo { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
}

/// The frozen encoder's feature maps of `photos` (the input of its last
/// `tail_layers` layers), from the photo feature store in `cache` (only
/// photos it has not seen are encoded).
pub fn frozen_features(
    photos: &[PathBuf],
    backbone: Backbone,
    tail_layers: usize,
    image_weights: &Path,
    cache: &Path,
    device: Device,
) -> Result<PhotoFeatures, FeatureStoreError> {
    let vs = nn::VarStore::new(device);
    let root = vs.root() / "image_encoder";
    let encoder = ImageEncoder::pretrained(&vs, &root, backbone, image_weights)
        .map_err(|e| FeatureStoreError::Weights { path: image_weights.to_path_buf(), reason: e.to_string() })?;
    let folder = store_folder(cache, backbone, tail_layers, image_weights)?;
    photo_features(photos, &encoder, tail_layers, backbone.tail_input_channels(tail_layers), &folder, device)
}

fn cache_io(path: &Path) -> impl Fn(std::io::Error) -> FeatureStoreError + '_ {
    move |e| FeatureStoreError::Cache { path: path.to_path_buf(), source: tch::TchError::Io(e) }
}

/// Photos encoded per batch, and per appended (synced) step.
const CHUNK: usize = 32;
const MAPS: &str = "maps.f16";
const INDEX: &str = "index.txt";

/// Cached maps for a list of photos: `maps` holds every row of the store,
/// `rows[i]` is the row of the i-th photo asked for.
pub struct PhotoFeatures {
    /// `[rows in the store, C, 7, 7]`, f16, memory-mapped.
    pub maps: Tensor,
    pub rows: Vec<i64>,
    /// Photos that went through the encoder in this call.
    pub encoded: usize,
}

/// The folder of `backbone` with the weights in `weights` (their content,
/// so that other weights under the same name get their own store) on photos
/// prepared by the default [`ImageTransform`] (its settings are in the key
/// too), holding the input of the last `tail_layers` layers (in the key when
/// not 0, so that the features' stores keep their names).
pub fn store_folder(cache: &Path, backbone: Backbone, tail_layers: usize, weights: &Path) -> Result<PathBuf, FeatureStoreError> {
    let bytes = std::fs::read(weights).map_err(cache_io(weights))?;
    let mut key = Fnv1a::default().write(&bytes).write(ImageTransform::default().cache_key().as_bytes());
    if tail_layers > 0 {
        key = key.write(format!("tail {tail_layers}").as_bytes());
    }
    let key = key.finish();
    let name = serde_json::to_value(backbone).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
    Ok(cache.join(format!("photo-features-{name}-{key:016x}")))
}

/// Returns the cached maps of `photos` (the input of `encoder`'s last
/// `tail_layers` layers, `channels` deep), encoding only those the store in
/// `folder` has not seen.
pub fn photo_features(
    photos: &[PathBuf],
    encoder: &ImageEncoder,
    tail_layers: usize,
    channels: i64,
    folder: &Path,
    device: Device,
) -> Result<PhotoFeatures, FeatureStoreError> {
    std::fs::create_dir_all(folder).map_err(cache_io(folder))?;
    let digests = photo_digests(photos)?;
    let lock_path = folder.join(".lock");
    let lock = File::create(&lock_path).map_err(cache_io(&lock_path))?;
    lock.lock().map_err(cache_io(&lock_path))?;

    let row_bytes = channels as u64 * 49 * 2;
    let index_path = folder.join(INDEX);
    let (mut known, mut stored) = read_index(&index_path)?;
    let maps_path = folder.join(MAPS);
    let mut maps = OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&maps_path).map_err(cache_io(&maps_path))?;
    let committed = stored as u64 * row_bytes;
    let on_disk = maps.metadata().map_err(cache_io(&maps_path))?.len();
    if on_disk < committed {
        return Err(corrupt(&maps_path, format!("{on_disk} bytes cannot hold the {stored} rows its index names")));
    }
    // Rows past the index are from a run killed before it named them.
    maps.set_len(committed).map_err(cache_io(&maps_path))?;
    maps.seek(SeekFrom::End(0)).map_err(cache_io(&maps_path))?;

    let mut missing: Vec<usize> = Vec::new();
    let mut queued = std::collections::HashSet::new();
    for (i, digest) in digests.iter().enumerate() {
        if !known.contains_key(digest) && queued.insert(digest.clone()) {
            missing.push(i);
        }
    }
    if !missing.is_empty() {
        let mut index = OpenOptions::new().append(true).open(&index_path).map_err(cache_io(&index_path))?;
        let transform = ImageTransform::default();
        let bar = crate::progress::bar(missing.len(), "encoding new catalog photos");
        for chunk in missing.chunks(CHUNK) {
            let paths: Vec<PathBuf> = chunk.iter().map(|&i| photos[i].clone()).collect();
            let images = transform.eval_batch(&paths)?.to_device(device);
            let features =
                tch::no_grad(|| encoder.forward_before_tail(&images, tail_layers, false)).to_kind(Kind::Half).to_device(Device::Cpu);
            let mut bytes = vec![0u8; features.numel() * 2];
            features.contiguous().copy_data_u8(&mut bytes, features.numel());
            if bytes.len() as u64 != row_bytes * chunk.len() as u64 {
                return Err(corrupt(
                    folder,
                    format!("the encoder gave {} bytes per photo, the store holds {row_bytes}", bytes.len() / chunk.len()),
                ));
            }
            maps.write_all(&bytes).and_then(|()| maps.sync_data()).map_err(cache_io(&maps_path))?;
            let mut lines = String::new();
            for &i in chunk {
                known.insert(digests[i].clone(), stored as i64);
                stored += 1;
                lines.push_str(&digests[i]);
                lines.push('\n');
            }
            index.write_all(lines.as_bytes()).and_then(|()| index.sync_data()).map_err(cache_io(&index_path))?;
            bar.inc(chunk.len() as u64);
            if bar.is_hidden() && bar.position() % 1024 < CHUNK as u64 {
                tracing::info!(done = bar.position(), of = missing.len(), "encoding new catalog photos");
            }
        }
        bar.finish_and_clear();
    }
    drop(lock);
    tracing::info!(photos = photos.len(), encoded = missing.len(), stored, "photo feature store");

    let rows = digests.iter().map(|d| known[d]).collect();
    let maps = map_rows(&maps_path, stored, channels)?;
    Ok(PhotoFeatures { maps, rows, encoded: missing.len() })
}

/// SHA-256 of each photo file, in parallel.
fn photo_digests(photos: &[PathBuf]) -> Result<Vec<String>, FeatureStoreError> {
    photos.par_iter().map(|path| sha256_file(path).map_err(|source| FeatureStoreError::Photo { path: path.clone(), source })).collect()
}

/// The complete lines of `index.txt` (digest → row) and their count, which
/// is the rows' (line n names row n; a digest listed twice keeps its first
/// row); a torn last line, left by a process killed while writing it, is cut off.
fn read_index(path: &Path) -> Result<(HashMap<String, i64>, usize), FeatureStoreError> {
    let text = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            File::create(path).map_err(cache_io(path))?;
            Vec::new()
        }
        Err(e) => return Err(cache_io(path)(e)),
    };
    let complete = text.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    if complete < text.len() {
        OpenOptions::new().write(true).open(path).and_then(|f| f.set_len(complete as u64)).map_err(cache_io(path))?;
    }
    let mut known = HashMap::new();
    let mut lines = 0;
    for (line, digest) in text[..complete].split_inclusive(|&b| b == b'\n').enumerate() {
        let digest = std::str::from_utf8(&digest[..digest.len() - 1])
            .ok()
            .filter(|d| d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| corrupt(path, format!("line {} is not a SHA-256 digest", line + 1)))?;
        known.entry(digest.to_string()).or_insert(line as i64);
        lines = line + 1;
    }
    Ok((known, lines))
}

/// The first `rows` rows of `maps.f16` as `[rows, C, 7, 7]`, memory-mapped.
fn map_rows(path: &Path, rows: usize, channels: i64) -> Result<Tensor, FeatureStoreError> {
    if rows == 0 {
        return Ok(Tensor::zeros([0, channels, 7, 7], (Kind::Half, Device::Cpu)));
    }
    let name = path.to_str().ok_or_else(|| corrupt(path, "the cache path is not UTF-8".to_string()))?;
    let values = rows as i64 * channels * 49;
    let flat = Tensor::f_from_file(name, false, Some(values), (Kind::Half, Device::Cpu))
        .map_err(|source| FeatureStoreError::Cache { path: path.to_path_buf(), source })?;
    Ok(flat.view([rows as i64, channels, 7, 7]))
}

fn corrupt(path: &Path, reason: String) -> FeatureStoreError {
    FeatureStoreError::Cache { path: path.to_path_buf(), source: tch::TchError::FileFormat(format!("{reason}; delete it to recompute")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `count` distinct solid-colour JPEGs and returns their paths.
    fn photos(dir: &Path, count: usize) -> Vec<PathBuf> {
        (0..count)
            .map(|i| {
                let path = dir.join(format!("photo-{i}.jpg"));
                let shade = (i * 50 % 256) as u8;
                image::RgbImage::from_pixel(32, 48, image::Rgb([shade, 255 - shade, 90])).save(&path).unwrap();
                path
            })
            .collect()
    }

    const CHANNELS: i64 = 1280;

    /// A temporary folder with `count` photos, a store path in it and a seeded encoder.
    struct Setup {
        dir: tempfile::TempDir,
        store: PathBuf,
        encoder: ImageEncoder,
        photos: Vec<PathBuf>,
    }

    impl Setup {
        fn new(count: usize) -> Setup {
            let dir = tempfile::tempdir().unwrap();
            let store = dir.path().join("store");
            let photos = photos(dir.path(), count);
            let vs = nn::VarStore::new(Device::Cpu);
            tch::manual_seed(3);
            let encoder = ImageEncoder::new(&(vs.root() / "image_encoder"), Backbone::EfficientnetLite0);
            Setup { dir, store, encoder, photos }
        }

        fn features(&self, photos: &[PathBuf]) -> Result<PhotoFeatures, FeatureStoreError> {
            photo_features(photos, &self.encoder, 0, CHANNELS, &self.store, Device::Cpu)
        }
    }

    #[test]
    fn only_unseen_photos_are_encoded_and_rows_follow_the_content() {
        let setup = Setup::new(4);
        let all = &setup.photos;
        let first = setup.features(&all[..3]).unwrap();
        assert_eq!((first.encoded, first.rows.clone()), (3, vec![0, 1, 2]));
        let expected = tch::no_grad(|| setup.encoder.forward_features(&ImageTransform::default().eval_batch(all).unwrap(), false))
            .to_kind(Kind::Float);
        let close = |a: &Tensor, b: &Tensor| a.to_kind(Kind::Float).allclose(b, 1e-2, 1e-2, false);
        assert!(!close(&expected.get(0), &expected.get(3)), "the test photos must differ in features");

        // Tomorrow: photo 1 is gone, photo 3 is new, photo 0 is listed twice.
        let asked = vec![all[3].clone(), all[0].clone(), all[2].clone(), all[0].clone()];
        let second = setup.features(&asked).unwrap();
        assert_eq!((second.encoded, second.rows.clone()), (1, vec![3, 0, 2, 0]));
        for (i, &row) in second.rows.iter().enumerate() {
            let want = [3, 0, 2, 0][i];
            // Batches of other sizes may round a few values differently.
            assert!(close(&second.maps.get(row), &expected.get(want)), "photo {i} maps to the wrong row");
        }

        // A photo rewritten in place is new content: encoded again, new row.
        std::fs::copy(&all[1], &all[0]).unwrap();
        let third = setup.features(&all[..1]).unwrap();
        assert_eq!((third.encoded, third.rows), (0, vec![1]), "photo 0 now has photo 1's bytes, which the store has");
    }

    #[test]
    fn rows_written_after_the_last_index_line_are_dropped_and_a_torn_line_is_cut() {
        let setup = Setup::new(3);
        setup.features(&setup.photos[..2]).unwrap();

        // What a kill mid-append leaves: half a row without a line, half a line.
        let row_bytes = (CHANNELS * 49 * 2) as usize;
        OpenOptions::new().append(true).open(setup.store.join(MAPS)).unwrap().write_all(&vec![7u8; row_bytes / 2]).unwrap();
        OpenOptions::new().append(true).open(setup.store.join(INDEX)).unwrap().write_all(b"abc").unwrap();

        let again = setup.features(&setup.photos).unwrap();
        assert_eq!((again.encoded, again.rows), (1, vec![0, 1, 2]));
        assert_eq!(std::fs::metadata(setup.store.join(MAPS)).unwrap().len(), 3 * row_bytes as u64);
        assert_eq!(std::fs::read_to_string(setup.store.join(INDEX)).unwrap().lines().count(), 3);
    }

    #[test]
    fn rows_are_counted_by_index_lines_so_a_digest_listed_twice_shifts_no_row() {
        let setup = Setup::new(3);
        setup.features(&setup.photos[..2]).unwrap();
        // A second line for photo 0's digest, with its row (as a store written
        // by an older version could hold): three rows, two distinct digests.
        let index = std::fs::read_to_string(setup.store.join(INDEX)).unwrap();
        let first_line = index.lines().next().unwrap().to_string();
        OpenOptions::new().append(true).open(setup.store.join(INDEX)).unwrap().write_all(format!("{first_line}\n").as_bytes()).unwrap();
        let row_bytes = (CHANNELS * 49 * 2) as usize;
        OpenOptions::new().append(true).open(setup.store.join(MAPS)).unwrap().write_all(&vec![0u8; row_bytes]).unwrap();

        let again = setup.features(&setup.photos).unwrap();
        assert_eq!((again.encoded, again.rows.clone()), (1, vec![0, 1, 3]), "photo 2 goes after the three rows");
        assert_eq!(again.maps.size()[0], 4);
        assert_eq!(std::fs::metadata(setup.store.join(MAPS)).unwrap().len(), 4 * row_bytes as u64);
        let expected =
            tch::no_grad(|| setup.encoder.forward_features(&ImageTransform::default().eval_batch(&setup.photos[2..]).unwrap(), false));
        assert!(again.maps.get(3).to_kind(Kind::Float).allclose(&expected.get(0).to_kind(Kind::Float), 1e-2, 1e-2, false));
        // And it reads back the same.
        assert_eq!(setup.features(&setup.photos).unwrap().rows, vec![0, 1, 3]);
    }

    #[test]
    fn a_store_shorter_than_its_index_is_reported_with_its_path() {
        let setup = Setup::new(2);
        setup.features(&setup.photos).unwrap();
        OpenOptions::new().write(true).open(setup.store.join(MAPS)).unwrap().set_len(100).unwrap();
        let message = setup.features(&setup.photos).err().unwrap().to_string();
        assert!(message.contains("maps.f16") && message.contains("cannot hold the 2 rows"), "{message}");
    }

    #[test]
    fn a_missing_photo_is_named() {
        let setup = Setup::new(0);
        let message = setup.features(&[setup.dir.path().join("gone.jpg")]).err().unwrap().to_string();
        assert!(message.contains("gone.jpg"), "{message}");
    }
}
