//! Fine-tuning and evaluation on a generated catalog: the multi-task fine-tune
//! from a pretraining checkpoint and a per-task one from the towers both give
//! checkpoints that the evaluation reads and scores with every protocol.

use std::path::Path;

use vitrine_core::catalog::attr;
use vitrine_core::catalog::{self, BadRowPolicy, Catalog, ImportOptions, Split};
use vitrine_core::synth::{generate, SynthSpec};
use vitrine_core::tasks::Labels;
use vitrine_trainer::catalog_inputs::{CatalogInputs, ItemTexts, SplitExamples};
use vitrine_trainer::eval::evaluate;
use vitrine_trainer::finetune::{finetune, Start};
use vitrine_trainer::pretrain::{pretrain, train_vqvae, ModelPaths};
use vitrine_trainer::recipe::Recipe;
use vitrine_trainer::schedule::{Downstream, Task};
use vitrine_trainer::teacher::load_finetuned;

const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../models");

fn tiny_recipe() -> Recipe {
    let mut recipe = Recipe::load("cpu").unwrap();
    // Every pretext task (the cpu recipe pretrains with ITC alone).
    recipe.tasks = Task::paper_probabilities();
    recipe.steps = 4;
    recipe.batch_size = 4;
    recipe.max_text_tokens = 32;
    recipe.warmup_steps = 1;
    recipe.decay_steps = vec![];
    recipe.checkpoint_every = 4;
    recipe.vqvae.steps = 2;
    recipe.vqvae.batch_size = 2;
    recipe.vqvae.channels = Some(vec![8, 8, 16, 16, 16]);
    recipe.pac.min_df = 2;
    recipe.finetune.steps = 8;
    recipe.finetune.batch_size = 4;
    recipe.finetune.warmup_steps = 1;
    recipe
}

fn setup(dir: &Path) -> (Catalog, ModelPaths) {
    let models = Path::new(MODELS);
    assert!(models.join("all-MiniLM-L6-v2/model.safetensors").is_file(), "run `cargo xtask setup` first");
    let source = dir.join("generated");
    generate(&source, &SynthSpec { groups: 24, baskets: 30, ..Default::default() }).unwrap();
    let catalog = catalog::open(&source, ImportOptions::default()).unwrap();
    let paths = ModelPaths {
        bert: models.join("all-MiniLM-L6-v2"),
        image_encoder: models.join("efficientnet-lite0/model.safetensors"),
        vqvae: Some(dir.join("vqvae")),
        feature_cache: Some(dir.join("cache")),
    };
    (catalog, paths)
}

#[test]
fn multi_task_fine_tune_is_evaluated_with_every_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let (catalog, paths) = setup(dir.path());
    let recipe = tiny_recipe();
    train_vqvae(&catalog, &recipe, paths.vqvae.as_ref().unwrap()).unwrap();
    let pretrained = pretrain(&catalog, &recipe, &paths, &dir.path().join("pretrain"), false).unwrap();

    // A pretraining checkpoint has no downstream heads: evaluation says so.
    let message = load_finetuned(&pretrained.checkpoint, 32, tch::Device::Cpu).err().expect("not fine-tuned").to_string();
    assert!(message.contains("not a fine-tuned checkpoint"), "{message}");

    let summary =
        finetune(&catalog, &recipe, &paths, Start::Pretrained(&pretrained.checkpoint), &dir.path().join("finetune"), false).unwrap();
    assert_eq!(summary.steps, 8);
    assert_eq!(summary.examples.len(), 4, "every downstream task has train examples: {:?}", summary.examples);

    let model = load_finetuned(&summary.checkpoint, 32, tch::Device::Cpu).unwrap();
    let labels = Labels::from_catalog(&catalog, BadRowPolicy::Skip).unwrap();
    assert_eq!(model.categories, labels.categories);
    let inputs = CatalogInputs::new(
        &catalog,
        ItemTexts::Plain,
        &model.tokenizer,
        &recipe,
        &paths.image_encoder,
        &dir.path().join("cache"),
        tch::Device::Cpu,
    )
    .unwrap();
    let report = evaluate(&model, &catalog, &labels, &inputs, Split::Test, tch::Device::Cpu).unwrap();

    // The TGIR softmax holds the reference's colour siblings: the reference
    // itself, never the target nor a sibling that looks like it.
    let train = SplitExamples::new(&catalog, &labels, &inputs, &model.tokenizer, Split::Train).unwrap();
    assert!(!train.tgir.is_empty());
    let item = |row: usize| &catalog.items[inputs.items[row]];
    let looks = |row: usize| (item(row).attribute(attr::COLOUR), item(row).attribute(attr::PRINT));
    for example in &train.tgir {
        assert!(example.siblings.contains(&example.reference), "the reference is a negative of its own query");
        for &sibling in &example.siblings {
            assert_eq!(item(sibling).group_id, item(example.reference).group_id);
            assert!(sibling != example.target && looks(sibling) != looks(example.target));
        }
    }

    assert_eq!(report.items, catalog.items_in(Split::Test).count());
    let percent = |x: f64| (0.0..=100.0).contains(&x);
    for x in [&report.xmr_random100, &report.xmr_full_gallery] {
        assert!(x.itr.iter().chain(&x.tir).all(|&v| percent(v)), "{x:?}");
        assert!(x.itr[0] <= x.itr[1] && x.itr[1] <= x.itr[2], "recall grows with k: {x:?}");
    }
    assert!(!report.tgir.is_empty() && report.tgir.values().all(|r| r.at[0].1 <= r.at[1].1));
    assert!(report.cr.items > 0 && percent(report.cr.accuracy) && percent(report.scr.macro_f1));
    assert!(!report.ocir.is_empty() && report.ocir_weighted[0] <= report.ocir_weighted[2]);
    assert!(report.meta_sum.is_finite() && report.meta_sum > 0.0);
    assert!(report.markdown("generated").contains("Meta-sum"));
}

#[test]
fn per_task_fine_tune_from_the_towers_trains_only_that_task() {
    let dir = tempfile::tempdir().unwrap();
    let (catalog, paths) = setup(dir.path());
    let mut recipe = tiny_recipe();
    recipe.finetune.tasks = [(Downstream::Cr, 1.0)].into();
    let summary = finetune(&catalog, &recipe, &paths, Start::Towers, &dir.path().join("cr"), false).unwrap();
    assert_eq!(summary.tasks.keys().copied().collect::<Vec<_>>(), [Downstream::Cr]);
    assert_eq!(summary.tasks[&Downstream::Cr].steps, 8);
    let model = load_finetuned(&summary.checkpoint, 32, tch::Device::Cpu).unwrap();
    assert!(model.model.downstream.is_some());
}

#[test]
fn a_catalog_without_colour_groups_or_baskets_learns_tgir_from_attributes_skips_ocir_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let (mut catalog, paths) = setup(dir.path());
    catalog.baskets.clear();
    for item in &mut catalog.items {
        item.group_id = item.id.clone();
    }
    let recipe = tiny_recipe();
    let summary = finetune(&catalog, &recipe, &paths, Start::Towers, &dir.path().join("shop"), false).unwrap();
    assert_eq!(summary.tasks.keys().copied().collect::<Vec<_>>(), [Downstream::Xmr, Downstream::Tgir, Downstream::Cr]);
    assert_eq!(summary.skipped.keys().copied().collect::<Vec<_>>(), [Downstream::Ocir]);
    assert!(summary.skipped[&Downstream::Ocir].contains("baskets"), "{:?}", summary.skipped);
    // The checkpoint says what it was trained on, for the stages after it.
    let trained = load_finetuned(&summary.checkpoint, 32, tch::Device::Cpu).unwrap().trained_tasks;
    assert_eq!(trained.into_iter().collect::<Vec<_>>(), [Downstream::Xmr, Downstream::Tgir, Downstream::Cr]);

    // Without attributes either, nothing can teach "like this, but…".
    for item in &mut catalog.items {
        item.attributes.clear();
    }
    let summary = finetune(&catalog, &recipe, &paths, Start::Towers, &dir.path().join("bare"), false).unwrap();
    assert_eq!(summary.tasks.keys().copied().collect::<Vec<_>>(), [Downstream::Xmr, Downstream::Cr]);
    assert_eq!(summary.skipped.keys().copied().collect::<Vec<_>>(), [Downstream::Tgir, Downstream::Ocir]);
    assert!(summary.skipped[&Downstream::Tgir].contains("differ in one attribute"), "{:?}", summary.skipped);

    // The evaluation reports what it can and no figure for what it cannot.
    let model = load_finetuned(&summary.checkpoint, 32, tch::Device::Cpu).unwrap();
    let labels = Labels::from_catalog(&catalog, BadRowPolicy::Skip).unwrap();
    let inputs = CatalogInputs::new(
        &catalog,
        ItemTexts::Plain,
        &model.tokenizer,
        &recipe,
        &paths.image_encoder,
        &dir.path().join("cache"),
        tch::Device::Cpu,
    )
    .unwrap();
    let report = evaluate(&model, &catalog, &labels, &inputs, Split::Test, tch::Device::Cpu).unwrap();
    assert!(report.tgir.is_empty() && report.ocir.is_empty(), "{:?} {:?}", report.tgir, report.ocir);
    assert!(report.meta_sum.is_finite());
}
