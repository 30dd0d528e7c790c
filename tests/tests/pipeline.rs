//! From a catalog to a checkpoint the next stages can load: a generated
//! catalog is imported (core), the image tokenizer and the model are trained
//! (trainer), and the checkpoint is read back into a fresh model whose text
//! embeddings equal those of the model that wrote it.

use std::path::Path;

use tch::{nn, Device, Kind, Tensor};
use vitrine_core::catalog::{self, ImportOptions};
use vitrine_core::synth::{generate, SynthSpec};
use vitrine_core::text::Tokenizer;
use vitrine_trainer::checkpoint;
use vitrine_trainer::model::bert::BertConfig;
use vitrine_trainer::model::fashionvil::{FashionVil, FashionVilConfig};
use vitrine_trainer::pretrain::{pretrain, train_vqvae, ModelPaths};
use vitrine_trainer::recipe::Recipe;
use vitrine_trainer::schedule::Task;

const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../models");

fn embed(model: &FashionVil, tokenizer: &Tokenizer, text: &str) -> Tensor {
    let ids: Vec<i64> = tokenizer.encode(text).unwrap().ids.iter().map(|&t| i64::from(t)).collect();
    let ids = Tensor::from_slice(&ids).unsqueeze(0);
    let mask = ids.ones_like();
    tch::no_grad(|| model.text_embedding(&ids, &mask, false))
}

#[test]
fn a_catalog_trains_into_a_checkpoint_that_reloads() {
    let models = Path::new(MODELS);
    assert!(models.join("all-MiniLM-L6-v2/model.safetensors").is_file(), "run `cargo xtask setup` first");
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("generated");
    generate(&source, &SynthSpec { groups: 12, baskets: 4, ..Default::default() }).unwrap();
    let catalog = catalog::open(&source, ImportOptions::default()).unwrap();

    let mut recipe = Recipe::load("cpu").unwrap();
    // Every pretext task (the cpu recipe pretrains with ITC alone).
    recipe.tasks = Task::paper_probabilities();
    recipe.steps = 4;
    recipe.batch_size = 4;
    recipe.max_text_tokens = 24;
    recipe.warmup_steps = 1;
    recipe.decay_steps = vec![];
    recipe.checkpoint_every = 4;
    recipe.vqvae.steps = 2;
    recipe.vqvae.batch_size = 2;
    recipe.vqvae.channels = Some(vec![8, 8, 16, 16, 16]);
    recipe.pac.min_df = 2;
    let vqvae = dir.path().join("vqvae");
    train_vqvae(&catalog, &recipe, &vqvae).unwrap();
    let paths = ModelPaths {
        bert: models.join("all-MiniLM-L6-v2"),
        image_encoder: models.join("efficientnet-lite0/model.safetensors"),
        vqvae: Some(vqvae),
        feature_cache: None,
    };
    let run = dir.path().join("run");
    let summary = pretrain(&catalog, &recipe, &paths, &run, false).unwrap();
    assert_eq!(summary.steps, 4);

    // The checkpoint carries everything a reader needs: verified files, the
    // model config and the tokenizer.
    let checkpoint_dir = checkpoint::latest(&run).unwrap().expect("a checkpoint");
    checkpoint::verify(&checkpoint_dir).unwrap();
    let config = checkpoint::read_config(&checkpoint_dir).unwrap();
    let bert: BertConfig = serde_json::from_value(config.clone()).unwrap();
    let fashionvil: FashionVilConfig = serde_json::from_value(config["fashionvil"].clone()).unwrap();
    assert_eq!(config["pac_vocabulary"].as_array().unwrap().len() as i64, fashionvil.pac_attributes);
    let tokenizer = Tokenizer::from_file(&checkpoint_dir.join("tokenizer.json"), 24).unwrap();

    let vs = nn::VarStore::new(Device::Cpu);
    let reloaded = FashionVil::new(&vs.root(), &bert, fashionvil.clone(), false);
    checkpoint::load_model(&checkpoint_dir, &vs).unwrap();
    // The pretrained text tower (before training) gives other embeddings: the
    // reload really carries the trained weights.
    let fresh_vs = nn::VarStore::new(Device::Cpu);
    let fresh = FashionVil::new(&fresh_vs.root(), &bert, fashionvil, false);
    fresh.bert.text().load_safetensors(&paths.bert.join("model.safetensors")).unwrap();
    let text = "black leather ankle boots";
    let trained = embed(&reloaded, &tokenizer, text);
    let untrained = embed(&fresh, &tokenizer, text);
    assert_eq!(trained.size(), [1, bert.hidden_size as i64]);
    let scale = f64::try_from(reloaded.embedding_scale.to_kind(Kind::Double)).unwrap();
    assert!((trained.norm().double_value(&[]) - scale).abs() < 1e-4);
    assert!((&trained - &untrained).abs().max().double_value(&[]) > 1e-4, "training changed the text tower");
    // Loading twice gives the same embedding.
    let again_vs = nn::VarStore::new(Device::Cpu);
    let again = FashionVil::new(&again_vs.root(), &bert, reloaded.config.clone(), false);
    checkpoint::load_model(&checkpoint_dir, &again_vs).unwrap();
    assert!(embed(&again, &tokenizer, text).equal(&trained));
}
