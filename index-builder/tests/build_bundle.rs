//! Building a bundle from a generated catalog and a briefly fine-tuned model:
//! the folder and the single file read back the same, the browser engine
//! loads it, the compact space keeps the teacher's retrieval, and the bundle
//! evaluates with the teacher's protocols.

use std::path::Path;

use tch::Device;
use vitrine_core::bundle::{Bundle, Limits};
use vitrine_core::catalog::{BadRowPolicy, Split};
use vitrine_core::engine::Engine;
use vitrine_core::index::BuildParams;
use vitrine_core::model::compact::{CompactHeads, OptionalHead};
use vitrine_core::model::quant::{LoadOptions, StoredBits};
use vitrine_core::model::text_encoder::TextEncoder;
use vitrine_core::tasks::Labels;
use vitrine_index_builder::build::{
    build_catalog, bundle_folder, single_file, BuildInputs, BuildReport, EmbeddingSource, StageTimes, Teacher,
};
use vitrine_index_builder::distill::DistillOptions;
use vitrine_index_builder::evaluate::evaluate_bundle;
use vitrine_index_builder::student::StudentOptions;
use vitrine_trainer::catalog_inputs::{CatalogInputs, ItemTexts};
use vitrine_trainer::schedule::Downstream;
use vitrine_trainer::teacher::load_finetuned;

mod common;

/// A briefly fine-tuned model on a generated catalog (with `baskets`), built into a bundle in `<dir>/out`.
fn build(
    dir: &Path,
    baskets: usize,
    distill: &DistillOptions,
    student: Option<&StudentOptions>,
    bits: StoredBits,
) -> (common::Setup, BuildReport) {
    let setup = common::finetuned_on_generated(dir, 24, baskets);
    let common::Setup { catalog, paths, recipe, checkpoint } = &setup;
    let labels = Labels::from_catalog(catalog, BadRowPolicy::Skip).unwrap();
    let finetuned = load_finetuned(checkpoint, 32, Device::Cpu).unwrap();
    let inputs =
        CatalogInputs::new(catalog, ItemTexts::Plain, &finetuned.tokenizer, recipe, &paths.image_encoder, &dir.join("cache"), Device::Cpu)
            .unwrap();
    let teacher = Teacher { finetuned: &finetuned, catalog, labels: &labels, inputs: &inputs, device: Device::Cpu };
    let out = dir.join("out");
    let params = BuildParams::default();
    let inputs = BuildInputs {
        checkpoint,
        max_query_tokens: 32,
        distill,
        student,
        text_encoder_bits: bits,
        index: &params,
        search_ef: None,
        out: &out,
    };
    let report = build_catalog(&teacher, EmbeddingSource::Embed(&dir.join("embeddings")), &inputs, StageTimes::default()).unwrap();
    (setup, report)
}

#[test]
fn a_generated_catalog_builds_into_a_bundle_the_engine_searches() {
    let dir = tempfile::tempdir().unwrap();
    // Wider than the train split has product and text vectors: the projection
    // still starts from `dim` principal directions.
    let options = DistillOptions { dim: 128, steps: 40, batch: 32, ..Default::default() };
    let (common::Setup { catalog, .. }, report) = build(dir.path(), 40, &options, None, StoredBits::Int8);
    let out = dir.path().join("out");

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

    assert_eq!(report_config(&from_file).heads, OptionalHead::all());
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

#[test]
fn a_student_text_encoder_in_four_bits_ships_fewer_layers_and_tokens_and_the_browser_engine_runs_it_as_trained() {
    let dir = tempfile::tempdir().unwrap();
    let options = DistillOptions { dim: 64, steps: 40, batch: 32, ..Default::default() };
    let student = StudentOptions { layers: 2, common_wordpieces: 500, steps: 60, batch: 32, ..Default::default() };
    let (common::Setup { catalog, checkpoint, .. }, report) = build(dir.path(), 40, &options, Some(&student), StoredBits::Int4);
    let out = dir.path().join("out");

    let stages: Vec<&str> = report.stages.0.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(stages, ["embed", "distil", "student", "index", "text encoder", "write"]);
    let figures = report.student.as_ref().expect("a student report");
    assert_eq!(figures.teacher_layers, [2, 5]);
    assert_eq!(figures.teacher_vocab_size, 30_522);
    assert!(figures.vocab_size < 30_522 / 4, "{} tokens kept", figures.vocab_size);
    assert!(figures.final_loss.is_finite());

    let bundle = Bundle::read_folder(&bundle_folder(&out), &Limits::default()).unwrap();
    let checkpoint_tokenizer = std::fs::metadata(checkpoint.join("tokenizer.json")).unwrap().len() as usize;
    assert!(bundle.contents.tokenizer.len() < checkpoint_tokenizer / 2);
    let heads = CompactHeads::from_bytes(&report_config(&bundle), &bundle.contents.heads, "heads").unwrap();
    let engine = Engine::from_bundle(bundle).unwrap();
    assert_eq!(engine.config().text_encoder["num_hidden_layers"], 2);
    assert_eq!(engine.search("a red dress", 5, None).unwrap().len(), 5);

    // The browser's engine (candle, int8 layers, the pruned tokenizer) runs the
    // student as the build trained it: its queries are as close to the
    // teacher's as the build measured on the same val titles.
    let options = LoadOptions { quantize_text_encoder: true, ..Default::default() };
    let teacher_encoder = TextEncoder::from_dir(&checkpoint, options, 32).unwrap();
    let titles: Vec<&str> = catalog.items_in(Split::Val).filter(|(_, it)| !it.images.is_empty()).map(|(_, it)| it.title.as_str()).collect();
    assert_eq!(titles.len(), figures.val_titles);
    let cosines: Vec<f32> = titles
        .iter()
        .map(|title| {
            let teacher = teacher_encoder.embed(title).unwrap();
            let teacher = candle_core::Tensor::from_vec(teacher, (1, 384), &candle_core::Device::Cpu).unwrap();
            let teacher: Vec<f32> = heads.project(&teacher).unwrap().squeeze(0).unwrap().to_vec1().unwrap();
            engine.embed_query(title).unwrap().iter().zip(&teacher).map(|(a, b)| a * b).sum()
        })
        .collect();
    let mean = cosines.iter().map(|&c| f64::from(c)).sum::<f64>() / cosines.len() as f64;
    assert!((mean - figures.val_cosine_mean).abs() < 0.01, "engine {mean} vs build {}", figures.val_cosine_mean);
}

#[test]
fn a_catalog_without_baskets_builds_a_bundle_without_an_outfit_head_that_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let options = DistillOptions { dim: 32, steps: 20, batch: 16, category_steps: 20, ..Default::default() };
    let (common::Setup { catalog, checkpoint, .. }, report) = build(dir.path(), 0, &options, None, StoredBits::Int8);
    let trained = load_finetuned(&checkpoint, 32, Device::Cpu).unwrap().trained_tasks;
    assert!(!trained.contains(&Downstream::Ocir) && trained.contains(&Downstream::Tgir), "{trained:?}");
    assert_eq!(report.distill.examples["ocir"], 0);

    let bundle = Bundle::read_folder(&bundle_folder(&dir.path().join("out")), &Limits::default()).unwrap();
    assert_eq!(report_config(&bundle).heads, [OptionalHead::Tgir]);
    let names: Vec<String> =
        safetensors::SafeTensors::deserialize(&bundle.contents.heads).unwrap().names().into_iter().map(str::to_string).collect();
    assert!(names.iter().any(|n| n.starts_with("tgir.")) && !names.iter().any(|n| n.starts_with("ocir.")), "{names:?}");

    let engine = Engine::from_bundle(bundle).unwrap();
    assert!(engine.has_head(OptionalHead::Tgir) && !engine.has_head(OptionalHead::Ocir));
    let err = engine.complete_outfit(&[0], 1, 5).unwrap_err().to_string();
    assert!(err.contains("complete the look") && err.contains("baskets"), "{err}");
    assert_eq!(engine.modify(0, "in red", 5).unwrap().len(), 5);
    let figures = evaluate_bundle(&engine, &catalog, Split::Test).unwrap();
    assert!(figures.ocir.is_empty() && !figures.tgir.is_empty());
}

fn report_config(bundle: &Bundle) -> vitrine_core::model::compact::CompactConfig {
    serde_json::from_value(bundle.contents.model_config["compact"].clone()).unwrap()
}
