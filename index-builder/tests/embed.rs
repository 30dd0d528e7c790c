//! Embedding a generated catalog: two shards merged equal one whole run, a
//! second run reuses the finished chunks, and a folder made by another model
//! is refused.

use std::path::Path;

use tch::Device;
use vitrine_index_builder::embed::{embed_shard, merge, shard_items, Shard};
use vitrine_trainer::catalog_inputs::{CatalogInputs, ItemTexts};
use vitrine_trainer::finetune::{finetune, Start};
use vitrine_trainer::teacher::load_finetuned;

mod common;

#[test]
fn shards_merge_into_the_whole_and_resume_reuses_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let common::Setup { catalog, paths, mut recipe, checkpoint } = common::finetuned_on_generated(dir.path(), 16, 20);
    let model = load_finetuned(&checkpoint, 32, Device::Cpu).unwrap();

    let embed = |shard: Shard, out: &Path| {
        let inputs = CatalogInputs::for_items(
            &catalog,
            shard_items(&catalog, shard),
            ItemTexts::Plain,
            &model.tokenizer,
            &recipe,
            &paths.image_encoder,
            &dir.path().join("cache"),
            Device::Cpu,
        )
        .unwrap();
        embed_shard(&model, &checkpoint, &catalog, &inputs, shard, out, Device::Cpu)
    };
    let whole = dir.path().join("whole");
    let first = embed(Shard::WHOLE, &whole).unwrap();
    assert_eq!(first.items, catalog.items.iter().filter(|it| !it.images.is_empty()).count());
    assert_eq!(first.reused_chunks, 0);
    let again = embed(Shard::WHOLE, &whole).unwrap();
    assert_eq!(again.reused_chunks, again.chunks, "a finished run is not recomputed");

    let sharded = dir.path().join("sharded");
    let half: Shard = "1/2".parse().unwrap();
    embed(half, &sharded).unwrap();
    let message = merge(&sharded, 2, &catalog).err().expect("shard 0 is missing").to_string();
    assert!(message.contains("shard 0 of 2") && message.contains("--shard 0/2"), "{message}");
    embed("0/2".parse().unwrap(), &sharded).unwrap();

    let whole = merge(&whole, 1, &catalog).unwrap();
    let joined = merge(&sharded, 2, &catalog).unwrap();
    assert_eq!(whole.items, joined.items);
    assert!(whole.items.windows(2).all(|w| w[0] < w[1]), "catalog order");
    assert!(whole.image.allclose(&joined.image, 1e-5, 1e-5, false));
    assert!(whole.text.allclose(&joined.text, 1e-5, 1e-5, false));

    // The shard folder remembers its model: another checkpoint (other seed, so
    // other weights; training is deterministic) is refused.
    recipe.seed += 1;
    let other = finetune(&catalog, &recipe, &paths, Start::Towers, &dir.path().join("other"), false).unwrap();
    let other_model = load_finetuned(&other.checkpoint, 32, Device::Cpu).unwrap();
    let inputs = CatalogInputs::for_items(
        &catalog,
        shard_items(&catalog, half),
        ItemTexts::Plain,
        &other_model.tokenizer,
        &recipe,
        &paths.image_encoder,
        &dir.path().join("cache"),
        Device::Cpu,
    )
    .unwrap();
    let message = embed_shard(&other_model, &other.checkpoint, &catalog, &inputs, half, &sharded, Device::Cpu).err().unwrap().to_string();
    assert!(message.contains("another model"), "{message}");

    assert!("2/2".parse::<Shard>().is_err() && "x".parse::<Shard>().is_err());
}
