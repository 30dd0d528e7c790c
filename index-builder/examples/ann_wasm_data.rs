//! The native half of bench/ann_wasm.sh: the vectors, the int8 HNSW indexes
//! (built here, timed, serialised as the bundle's `index` part) and a native
//! one-thread ef sweep, for the WebAssembly ANN benchmark
//! (bench/ann_wasm/, bench/ann_wasm.mjs).
//!
//! `vectors` (needs libtorch, the checkpoint and its feature cache) writes
//! into `--out`, as little-endian f32 / u16 files:
//! - `small.f32`, `small.cat.u16`: the bundle's 11.8k product vectors in f32,
//!   recomputed from the teacher embeddings (`--embeddings`) and the bundle's
//!   projection exactly as `vitrine-index build` does
//!   (`project(l2(w·image + (1 − w)·text))`, `w` the bundle's image weight);
//!   `small.shipped.bin`: the bundle's own index part, byte for byte;
//! - `large.f32`, `large.cat.u16`: `--large` (100,000) of the 118,000 "views"
//!   of index-builder/examples/ann_views.rs (ten crops/mirrors of every
//!   article's 7×7 feature grid, embedded by the fine-tuned model, paired
//!   with the article text as the builder pairs them, projected by the
//!   bundle's heads), picked by a seeded sample (ChaCha8, seed 100) and kept
//!   in view order; each view takes its article's category;
//! - `queries_text.f32`: `--queries` article texts (ChaCha8 seed 7, as
//!   ann_views): the teacher's text embeddings through the bundle's
//!   projection, the kind of vector a text query becomes;
//! - `queries_view.f32`: `--queries` of the 18,000 views left out of
//!   `large` (ChaCha8 seed 101): held-out item-like vectors, in neither index;
//! - `vectors.json`: counts and checks (the cosine of each article's
//!   whole-grid view to its bundle vector tells that the checkpoint is the one
//!   the embeddings came from).
//!
//! `index` (no libtorch needed at run time) reads those files and, for each
//! size (and the large one again with `BuildParams::refine`, as
//! `large_refined`), builds `AnnIndex::build(.., BuildParams::default())` (one thread,
//! deterministic: what `vitrine-index build` does), times it, writes
//! `<size>.index.bin` (`AnnIndex::to_bytes`, the bundle's encoding) and runs
//! the same ef sweep as the wasm side natively on one thread for comparison;
//! for the small size it also says whether the rebuilt index is byte-identical
//! to the shipped one. Writes `index.json`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use vitrine_core::index::{AnnIndex, BuildParams, SearchParams};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Vectors {
        #[arg(long)]
        catalog: PathBuf,
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long, default_value = "cpu")]
        config: String,
        #[arg(long, default_value = "models")]
        models: PathBuf,
        #[arg(long)]
        cache: PathBuf,
        /// The bundle folder (its manifest, heads and index part).
        #[arg(long)]
        bundle: PathBuf,
        /// The `vitrine-index embed` output the bundle was built from (one shard).
        #[arg(long)]
        embeddings: PathBuf,
        #[arg(long, default_value_t = 1000)]
        queries: usize,
        #[arg(long, default_value_t = 100_000)]
        large: usize,
        #[arg(long)]
        out: PathBuf,
    },
    Index {
        #[arg(long)]
        out: PathBuf,
        /// Beam widths of the native sweep (the wasm side takes its own list).
        #[arg(long, value_delimiter = ',', default_value = "10,16,24,32,48,64,100,128,200,300,400,800")]
        ef: Vec<usize>,
    },
}

fn write_f32(path: &Path, values: &[f32]) -> Result<()> {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

fn write_u16(path: &Path, values: &[u16]) -> Result<()> {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

fn read_f32(path: &Path) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

fn read_u16(path: &Path) -> Result<Vec<u16>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(bytes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect())
}

mod vectors {
    use super::*;
    use tch::{nn, Device, Kind, Tensor};
    use vitrine_core::bundle::{Bundle, Limits};
    use vitrine_core::catalog::{self, ImportOptions};
    use vitrine_core::engine::BundleModelConfig;
    use vitrine_index_builder::embed::merge;
    use vitrine_index_builder::heads::CompactHeads;
    use vitrine_trainer::catalog_inputs::{CatalogInputs, ItemTexts};
    use vitrine_trainer::model::bert::l2_normalize;
    use vitrine_trainer::recipe::Recipe;
    use vitrine_trainer::teacher::load_finetuned;

    /// Windows of the 7×7 grid: (size, top, left). The whole grid and its
    /// four 6×6 corners are ann_views.rs's unmirrored views; the nine 5×5
    /// windows are added. ann_views.rs's mirrored views are left out: a mean
    /// over a window does not depend on the order of its tokens, so a window of
    /// the mirrored grid is a window of the grid itself, and each of those
    /// views duplicates another (the same vector up to rounding).
    pub const WINDOWS: [(i64, i64, i64); 14] = [
        (7, 0, 0),
        (6, 0, 0),
        (6, 0, 1),
        (6, 1, 0),
        (6, 1, 1),
        (5, 0, 0),
        (5, 0, 1),
        (5, 0, 2),
        (5, 1, 0),
        (5, 1, 1),
        (5, 1, 2),
        (5, 2, 0),
        (5, 2, 1),
        (5, 2, 2),
    ];

    /// The views' image embeddings `[B·V, H]` (unit length, V = WINDOWS.len(),
    /// article after article) of visual tokens `[B, 49, H]`.
    fn views(tokens: &Tensor) -> Tensor {
        let (b, h) = (tokens.size()[0], tokens.size()[2]);
        let grid = tokens.view([b, 7, 7, h]);
        let out: Vec<Tensor> = WINDOWS
            .iter()
            .map(|&(size, y, x)| grid.narrow(1, y, size).narrow(2, x, size).mean_dim([1i64, 2].as_slice(), false, Kind::Float))
            .collect();
        l2_normalize(&Tensor::stack(&out, 1).view([b * WINDOWS.len() as i64, h]))
    }

    #[allow(clippy::too_many_arguments)]
    pub fn run(
        catalog: &Path,
        checkpoint: &Path,
        config: &str,
        models: &Path,
        cache: &Path,
        bundle_dir: &Path,
        embeddings_dir: &Path,
        queries: usize,
        large: usize,
        out: &Path,
    ) -> Result<()> {
        std::fs::create_dir_all(out)?;
        let catalog = catalog::open(catalog, ImportOptions::default())?;
        let recipe = Recipe::load(config)?;
        let finetuned = load_finetuned(checkpoint, recipe.max_text_tokens, Device::Cpu)?;
        let bundle = Bundle::read_folder(bundle_dir, &Limits::default())?;
        let shipped =
            bundle.manifest.parts.iter().find(|p| p.file.starts_with("index.")).context("the bundle's manifest lists no index part")?;
        let shipped_bytes = std::fs::read(bundle_dir.join(&shipped.file))?;
        std::fs::write(out.join("small.shipped.bin"), &shipped_bytes)?;
        let model: BundleModelConfig = serde_json::from_value(bundle.manifest.model_config.clone())?;
        let dim = model.compact.dim;
        let mut vs = nn::VarStore::new(Device::Cpu);
        let heads = CompactHeads::new(&vs.root(), &model.compact);
        let heads_file = std::env::temp_dir().join(format!("vitrine-heads-{}.safetensors", std::process::id()));
        std::fs::write(&heads_file, &bundle.contents.heads)?;
        vs.load(&heads_file).context("loading the bundle's heads")?;
        std::fs::remove_file(&heads_file)?;

        let embeddings = merge(embeddings_dir, 1, &catalog)?;
        let n = embeddings.items.len();
        if n != bundle.contents.index.len() {
            bail!("{n} embedded items but {} in the bundle's index", bundle.contents.index.len());
        }
        let w = f64::from(model.compact.image_weight);
        let texts = l2_normalize(&embeddings.text);
        let images = l2_normalize(&embeddings.image);

        // The bundle's product vectors, as the builder computes them (TeacherSpace::products, then the projection).
        let small = tch::no_grad(|| heads.project(&l2_normalize(&(&images * w + &texts * (1.0 - w)))));
        let small: Vec<f32> = Vec::<f32>::try_from(small.flatten(0, -1))?;
        let categories = bundle.contents.index.categories().to_vec();
        write_f32(&out.join("small.f32"), &small)?;
        write_u16(&out.join("small.cat.u16"), &categories)?;

        // The views of every article (ann_views.rs's way, other windows).
        let per = WINDOWS.len();
        let inputs = CatalogInputs::for_items(
            &catalog,
            embeddings.items.clone(),
            ItemTexts::Plain,
            &finetuned.tokenizer,
            &recipe,
            &models.join("efficientnet-lite0/model.safetensors"),
            cache,
            Device::Cpu,
        )?;
        let started = Instant::now();
        let mut all_views: Vec<f32> = Vec::with_capacity(n * per * dim);
        for start in (0..n).step_by(256) {
            let rows: Vec<usize> = (start..(start + 256).min(n)).collect();
            let chunk = tch::no_grad(|| -> Result<Tensor> {
                let tokens = inputs.visual_tokens(&finetuned.model, &rows, None, Device::Cpu)?;
                let image = views(&tokens);
                let text = texts.narrow(0, start as i64, rows.len() as i64).repeat_interleave_self_int(per as i64, 0, None);
                Ok(heads.project(&l2_normalize(&(image * w + text * (1.0 - w)))))
            })?;
            all_views.extend(Vec::<f32>::try_from(chunk.flatten(0, -1))?);
        }
        let embed_seconds = started.elapsed().as_secs_f64();
        let total = n * per;

        // Whole-grid view (view 0) against the article's bundle vector.
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        let cosines: Vec<f32> =
            (0..n).map(|i| dot(&all_views[i * per * dim..(i * per + 1) * dim], &small[i * dim..(i + 1) * dim])).collect();
        let min_cosine = cosines.iter().copied().fold(f32::INFINITY, f32::min);
        let mean_cosine = cosines.iter().sum::<f32>() / n as f32;

        if large > total {
            bail!("--large {large} is more than the {total} views");
        }
        let mut rng = ChaCha8Rng::seed_from_u64(100);
        let mut picked = sample(&mut rng, total, large).into_vec();
        picked.sort_unstable();
        let mut in_large = vec![false; total];
        let mut large_vectors = Vec::with_capacity(large * dim);
        let mut large_categories = Vec::with_capacity(large);
        for &v in &picked {
            in_large[v] = true;
            large_vectors.extend_from_slice(&all_views[v * dim..(v + 1) * dim]);
            large_categories.push(categories[v / per]);
        }
        write_f32(&out.join("large.f32"), &large_vectors)?;
        write_u16(&out.join("large.cat.u16"), &large_categories)?;

        // How close each item of `large` is to the nearest other view of its article in `large`.
        let mut nearest_sibling = vec![f32::NEG_INFINITY; large];
        for (a, &va) in picked.iter().enumerate() {
            for (b, _) in picked.iter().enumerate().skip(a + 1).take_while(|(_, &vb)| vb / per == va / per) {
                let c = dot(&large_vectors[a * dim..(a + 1) * dim], &large_vectors[b * dim..(b + 1) * dim]);
                nearest_sibling[a] = nearest_sibling[a].max(c);
                nearest_sibling[b] = nearest_sibling[b].max(c);
            }
        }
        let share = |t: f32| nearest_sibling.iter().filter(|&&c| c >= t).count() as f64 / large as f64;
        let mut sorted_siblings = nearest_sibling.clone();
        sorted_siblings.sort_by(f32::total_cmp);

        let held_out: Vec<usize> = (0..total).filter(|&v| !in_large[v]).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(101);
        let view_queries: Vec<f32> = sample(&mut rng, held_out.len(), queries.min(held_out.len()))
            .into_iter()
            .flat_map(|i| all_views[held_out[i] * dim..(held_out[i] + 1) * dim].to_vec())
            .collect();
        write_f32(&out.join("queries_view.f32"), &view_queries)?;

        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let picks = sample(&mut rng, n, queries.min(n)).into_vec();
        let rows = Tensor::from_slice(&picks.iter().map(|&p| p as i64).collect::<Vec<_>>());
        let text_queries = tch::no_grad(|| heads.project(&texts.index_select(0, &rows)));
        write_f32(&out.join("queries_text.f32"), &Vec::<f32>::try_from(text_queries.flatten(0, -1))?)?;

        let meta = json!({
            "dim": dim,
            "bundle": bundle_dir.display().to_string(),
            "bundle_index_part": shipped.file,
            "image_weight": model.compact.image_weight,
            "small_items": n,
            "views": total,
            "views_per_article": per,
            "large_items": large,
            "held_out_views": held_out.len(),
            "text_queries": picks.len(),
            "view_queries": view_queries.len() / dim,
            "views_embed_seconds": embed_seconds,
            "view0_vs_bundle_vector_cosine": {"min": min_cosine, "mean": mean_cosine},
            "large_nearest_sibling_cosine": {
                "median": sorted_siblings[large / 2],
                "share_at_least_0_99": share(0.99),
                "share_at_least_0_999": share(0.999),
                "share_at_least_0_99999": share(0.99999),
            },
        });
        std::fs::write(out.join("vectors.json"), serde_json::to_string_pretty(&meta)?)?;
        println!("{}", serde_json::to_string(&meta)?);
        Ok(())
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at]
}

/// Native one-thread ef sweep: mean, median and p90 µs per search (rerank = ef,
/// as the wasm side), over all queries after a warm-up.
fn sweep(index: &AnnIndex, queries: &[f32], efs: &[usize]) -> Result<Vec<serde_json::Value>> {
    let dim = index.dim();
    for q in queries.chunks_exact(dim).take(100) {
        index.search(q, 10, None, &SearchParams::default())?;
    }
    let mut rows = Vec::new();
    for &ef in efs {
        let params = SearchParams { ef, rerank: ef, ..SearchParams::default() };
        let mut times = Vec::new();
        for q in queries.chunks_exact(dim) {
            let started = Instant::now();
            let hits = index.search(q, 10, None, &params)?;
            times.push(started.elapsed().as_secs_f64() * 1e6);
            std::hint::black_box(hits);
        }
        times.sort_by(f64::total_cmp);
        let mean = times.iter().sum::<f64>() / times.len() as f64;
        rows.push(json!({"ef": ef, "mean_us": mean, "p50_us": percentile(&times, 0.5), "p90_us": percentile(&times, 0.9)}));
    }
    Ok(rows)
}

fn index(out: &Path, efs: &[usize]) -> Result<()> {
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("vectors.json"))?)?;
    let dim = meta["dim"].as_u64().context("dim")? as usize;
    let text = read_f32(&out.join("queries_text.f32"))?;
    let view = read_f32(&out.join("queries_view.f32"))?;
    let mut report = serde_json::Map::new();
    // The large set twice: int8 codes alone (the default), and with the 4-bit refinement (`vitrine-index build --refine`).
    for (size, vectors_of, refine) in [("small", "small", false), ("large", "large", false), ("large_refined", "large", true)] {
        let vectors = read_f32(&out.join(format!("{vectors_of}.f32")))?;
        let categories = read_u16(&out.join(format!("{vectors_of}.cat.u16")))?;
        let started = Instant::now();
        let index = AnnIndex::build(dim, &vectors, categories, &BuildParams { refine, ..BuildParams::default() })?;
        let build_seconds = started.elapsed().as_secs_f64();
        let bytes = index.to_bytes();
        std::fs::write(out.join(format!("{size}.index.bin")), &bytes)?;
        let links: usize = index.graph().layers().iter().map(|l| l.links()).sum();
        let mut entry = json!({
            "items": index.len(),
            "build_seconds": build_seconds,
            "index_bytes": bytes.len(),
            "layers": index.graph().layers().len(),
            "links_per_item": links as f64 / index.len() as f64,
            "native_text": sweep(&index, &text, efs)?,
            "native_view": sweep(&index, &view, efs)?,
        });
        if size == "small" {
            let shipped = std::fs::read(out.join("small.shipped.bin"))?;
            entry["equals_shipped"] = json!(shipped == bytes);
            entry["shipped_bytes"] = json!(shipped.len());
        }
        eprintln!("{size}: {} items, build {build_seconds:.1} s, {} bytes", index.len(), bytes.len());
        report.insert(size.to_string(), entry);
    }
    std::fs::write(out.join("index.json"), serde_json::to_string_pretty(&report)?)?;
    Ok(())
}

fn main() -> Result<()> {
    match Args::parse().command {
        Command::Vectors { catalog, checkpoint, config, models, cache, bundle, embeddings, queries, large, out } => {
            vectors::run(&catalog, &checkpoint, &config, &models, &cache, &bundle, &embeddings, queries, large, &out)
        }
        Command::Index { out, ef } => index(&out, &ef),
    }
}
