//! Building a bundle from a generated catalog and a briefly fine-tuned model:
//! the folder and the single file read back the same, the browser engine
//! loads it, the compact space keeps the teacher's retrieval, and the bundle
//! evaluates with the teacher's protocols.

use tch::Device;
use vitrine_core::bundle::{Bundle, Limits};
use vitrine_core::catalog::{BadRowPolicy, Split};
use vitrine_core::engine::Engine;
use vitrine_core::index::BuildParams;
use vitrine_core::tasks::Labels;
use vitrine_index_builder::build::{build_catalog, bundle_folder, single_file, BuildInputs, EmbeddingSource, StageTimes, Teacher};
use vitrine_index_builder::distill::DistillOptions;
use vitrine_index_builder::evaluate::evaluate_bundle;
use vitrine_trainer::finetune::{load_finetuned, CatalogInputs};

mod common;

#[test]
fn a_generated_catalog_builds_into_a_bundle_the_engine_searches() {
    let dir = tempfile::tempdir().unwrap();
    let common::Setup { catalog, paths, recipe, checkpoint } = common::finetuned_on_generated(dir.path(), 24, 40);
    let labels = Labels::from_catalog(&catalog, BadRowPolicy::Skip).unwrap();
    let finetuned = load_finetuned(&checkpoint, 32, Device::Cpu).unwrap();
    let inputs =
        CatalogInputs::new(&catalog, &finetuned.tokenizer, &recipe, &paths.image_encoder, &dir.path().join("cache"), Device::Cpu).unwrap();
    let teacher = Teacher { finetuned: &finetuned, catalog: &catalog, labels: &labels, inputs: &inputs, device: Device::Cpu };
    // Wider than the train split has product and text vectors: the projection
    // still starts from `dim` principal directions.
    let options = DistillOptions { dim: 128, steps: 40, batch: 32, ..Default::default() };
    let out = dir.path().join("out");
    let params = BuildParams::default();
    let inputs = BuildInputs { checkpoint: &checkpoint, max_query_tokens: 32, distill: &options, index: &params, out: &out };
    let source = EmbeddingSource::Embed(&dir.path().join("embeddings"));
    let report = build_catalog(&teacher, source, &inputs, StageTimes::default()).unwrap();

    assert_eq!(report.items, catalog.items.iter().filter(|it| !it.images.is_empty()).count());
    assert_eq!(report.dims, 128);
    let train = catalog.items_in(Split::Train).filter(|(_, it)| !it.images.is_empty()).count();
    assert!(2 * train < 128, "{train} train items: the test wants fewer vectors than dimensions");
    let stages: Vec<&str> = report.stages.0.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(stages, ["embed", "distil", "index", "text encoder", "write"]);
    // Eleven weights tried on val, the chosen one among them with the best score.
    let scores = &report.distill.image_weight_scores;
    assert_eq!(scores.len(), 11);
    let best = scores.iter().map(|s| s.1).fold(f64::MIN, f64::max);
    assert!(scores.iter().any(|&(w, s)| w == report.distill.image_weight && s == best));
    // The compact space keeps most of the teacher's title → product retrieval.
    assert!(
        report.distill.val_title_r10_compact >= 0.8 * report.distill.val_title_r10_teacher,
        "compact {} vs teacher {}",
        report.distill.val_title_r10_compact,
        report.distill.val_title_r10_teacher
    );
    assert!(report.distill.final_losses.values().all(|l| l.is_finite()));
    // int8 vectors: 128 codes and a 4-byte scale per item, against the f32 teacher's 384 floats.
    assert_eq!(report.index_bytes_per_item, 132.0);

    let limits = Limits::default();
    let from_folder = Bundle::read_folder(&bundle_folder(&out), &limits).unwrap();
    let from_file = Bundle::read_single_file(&single_file(&out), &limits).unwrap();
    assert_eq!(from_folder.contents, from_file.contents);
    assert_eq!(report.total_bytes, from_folder.manifest.parts_bytes());

    let engine = Engine::from_bundle(from_file).unwrap();
    let hits = engine.search("a red dress", 5, None).unwrap();
    assert_eq!(hits.len(), 5);
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));

    let figures = evaluate_bundle(&engine, &catalog, Split::Test).unwrap();
    assert!(figures.items > 0 && figures.items < engine.products().len());
    for r in figures.tir_full_gallery.iter().chain(&figures.tir_random100).chain(&figures.ocir_weighted) {
        assert!((0.0..=100.0).contains(r), "{r}");
    }
    // R@k grows with k.
    assert!(figures.tir_full_gallery.windows(2).all(|w| w[0] <= w[1]));
    assert!(figures.ann_recall_at_10 > 90.0, "{}", figures.ann_recall_at_10);
}
