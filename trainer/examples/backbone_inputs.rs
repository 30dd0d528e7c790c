//! Which input statistics and framing the frozen EfficientNet-Lite0 reads
//! right: its own ImageNet classifier on labelled catalog photos. Each H&M
//! product type with an ImageNet counterpart (sandals → "sandal", bags →
//! "backpack"/"purse"/"mailbag", …) is a label; a photo counts as recognised
//! when one of its type's classes is in the classifier's top 5. The same photos
//! go through each transform: the paper's fashion statistics or ImageNet's,
//! the paper's 256-resize + centre 224 crop or the whole photo framed on its
//! border colour.
//!
//! Then what a frozen encoder is for here: linear probes of the pooled
//! features (softmax regression, trained on train-split photos, scored on
//! test-split photos) for the product type (SCR) and the colour.
//!
//! ```sh
//! cargo run --release -p vitrine-trainer --example backbone_inputs -- ../shared/data/hm models/efficientnet-lite0/model.safetensors [photos per type] [probe train photos] [probe test photos]
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use tch::{nn, Device, Kind, Tensor};
use vitrine_core::catalog::{self, attr, Catalog, ImportOptions, Split};
use vitrine_trainer::image::{Framing, ImageTransform, IMAGENET_MEAN, IMAGENET_STD};
use vitrine_trainer::model::efficientnet::{load_safetensors, Config, EfficientNet};

/// The paper's fashion statistics (for a ResNet trained from them).
const FASHION_MEAN: [f32; 3] = [0.468, 0.445, 0.407];
const FASHION_STD: [f32; 3] = [0.122, 0.121, 0.144];

/// H&M product type → ImageNet-1k classes that name it.
const TYPE_CLASSES: &[(&str, &[i64])] = &[
    ("Bag", &[414, 748, 636]),
    ("Boots", &[514]),
    ("Sneakers", &[770]),
    ("Sandals", &[774]),
    ("Heeled sandals", &[774]),
    ("Necklace", &[679, 488]),
    ("Sunglasses", &[836, 837]),
    ("Bra", &[459, 445]),
    ("Bikini top", &[445, 459]),
    ("Swimwear bottom", &[445, 842, 639]),
    ("Swimsuit", &[639, 638, 445]),
    ("Socks", &[806]),
    ("Skirt", &[655, 689, 601]),
    ("Dress", &[578, 655, 689]),
    ("Sweater", &[841, 474, 610]),
    ("Hoodie", &[841, 474, 610]),
    ("Cardigan", &[474, 841]),
    ("T-shirt", &[610, 841]),
    ("Coat", &[869, 568, 617]),
    ("Scarf", &[824]),
    ("Umbrella", &[879]),
    ("Tie", &[906, 457]),
    ("Hat/brim", &[515, 808]),
    ("Gloves", &[658]),
    ("Pyjama set", &[697]),
    ("Wallet", &[893, 748]),
];

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (catalog_dir, weights) = match &args[..] {
        [c, w, ..] => (PathBuf::from(c), PathBuf::from(w)),
        _ => anyhow::bail!("usage: backbone_inputs <catalog> <efficientnet-lite0 safetensors> [photos per type]"),
    };
    let count = |i: usize, default: usize| args.get(i).map(|n| n.parse::<usize>()).transpose().map(|n| n.unwrap_or(default));
    let (per_type, probe_train, probe_test) = (count(2, 30)?, count(3, 3000)?, count(4, 1000)?);
    let catalog = catalog::open(&catalog_dir, ImportOptions::default())?;
    let vs = nn::VarStore::new(Device::Cpu);
    let net = EfficientNet::new(&vs.root(), &Config::lite0());
    load_safetensors(&vs, &weights, "")?;

    let mut photos: Vec<(PathBuf, &str, &[i64])> = Vec::new();
    for (kind, classes) in TYPE_CLASSES {
        let of_type = catalog.items.iter().filter(|item| item.subcategory == *kind);
        photos.extend(of_type.filter_map(|item| catalog.image_path(item.images.first()?)).take(per_type).map(|p| (p, *kind, *classes)));
    }
    let transforms = vec![
        ("fashion statistics, centre crop", FASHION_MEAN, FASHION_STD, Framing::Crop { resize: 256 }),
        ("fashion statistics, whole photo", FASHION_MEAN, FASHION_STD, Framing::Whole),
        ("ImageNet statistics, centre crop", IMAGENET_MEAN, IMAGENET_STD, Framing::Crop { resize: 256 }),
        ("ImageNet statistics, whole photo", IMAGENET_MEAN, IMAGENET_STD, Framing::Whole),
    ];
    println!("{} photos of {} product types, top-5 hit of the type's ImageNet classes", photos.len(), TYPE_CLASSES.len());
    println!("| input | top-1 hit % | top-5 hit % | types with a top-5 hit in most photos |");
    println!("|---|---|---|---|");
    for &(name, mean, std, framing) in &transforms {
        let transform = ImageTransform { side: 224, framing, mean, std };
        let (mut top1, mut top5) = (0usize, 0usize);
        let mut per_kind: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for chunk in photos.chunks(32) {
            let images = chunk.iter().map(|(p, ..)| transform.eval(p)).collect::<Result<Vec<_>, _>>()?;
            let logits = tch::no_grad(|| net.forward_logits(&Tensor::stack(&images, 0), false));
            let (_, best) = logits.to_kind(Kind::Float).topk(5, -1, true, true);
            for (row, (_, kind, classes)) in chunk.iter().enumerate() {
                let ranked = Vec::<i64>::try_from(&best.get(row as i64))?;
                let hit1 = classes.contains(&ranked[0]);
                let hit5 = ranked.iter().any(|c| classes.contains(c));
                top1 += usize::from(hit1);
                top5 += usize::from(hit5);
                let entry = per_kind.entry(kind).or_default();
                entry.0 += usize::from(hit5);
                entry.1 += 1;
            }
        }
        let majority = per_kind.values().filter(|(hits, n)| hits * 2 > *n).count();
        let pct = |k: usize| 100.0 * k as f64 / photos.len() as f64;
        println!("| {name} | {:.1} | {:.1} | {majority} of {} |", pct(top1), pct(top5), per_kind.len());
    }

    let train = probe_items(&catalog, Split::Train, probe_train);
    let test = probe_items(&catalog, Split::Test, probe_test);
    println!();
    println!("linear probes of the pooled features: {} train photos, {} test photos (accuracy %)", train.len(), test.len());
    println!("| input | product type | colour |");
    println!("|---|---|---|");
    for &(name, mean, std, framing) in &transforms {
        let transform = ImageTransform { side: 224, framing, mean, std };
        let pooled = |items: &[(PathBuf, String, String)]| -> anyhow::Result<Tensor> {
            let mut rows = Vec::new();
            for chunk in items.chunks(32) {
                let images = chunk.iter().map(|(p, ..)| transform.eval(p)).collect::<Result<Vec<_>, _>>()?;
                rows.push(tch::no_grad(|| {
                    net.forward_features(&Tensor::stack(&images, 0), false).mean_dim(&[-2i64, -1][..], false, Kind::Float)
                }));
            }
            Ok(Tensor::cat(&rows, 0))
        };
        let (train_x, test_x) = (pooled(&train)?, pooled(&test)?);
        let type_acc = probe(&train_x, &test_x, &train, &test, |(_, kind, _)| kind);
        let colour_acc = probe(&train_x, &test_x, &train, &test, |(_, _, colour)| colour);
        println!("| {name} | {type_acc:.1} | {colour_acc:.1} |");
    }
    Ok(())
}

/// Up to `limit` items of `split` with a photo, spread over the split: (photo, type, colour).
fn probe_items(catalog: &Catalog, split: Split, limit: usize) -> Vec<(PathBuf, String, String)> {
    let all: Vec<(PathBuf, String, String)> = catalog
        .items_in(split)
        .filter_map(|(_, item)| {
            let photo = catalog.image_path(item.images.first()?)?;
            Some((photo, item.subcategory.clone(), item.attribute(attr::COLOUR)?.to_string()))
        })
        .collect();
    let stride = all.len().div_ceil(limit.max(1)).max(1);
    all.into_iter().step_by(stride).collect()
}

/// Test accuracy (%) of a softmax regression on standardised features; test
/// labels unseen in training count as wrong.
fn probe<L: Fn(&(PathBuf, String, String)) -> &String>(
    train_x: &Tensor,
    test_x: &Tensor,
    train: &[(PathBuf, String, String)],
    test: &[(PathBuf, String, String)],
    label: L,
) -> f64 {
    let classes: BTreeMap<&String, i64> = {
        let mut names: Vec<&String> = train.iter().map(&label).collect();
        names.sort();
        names.dedup();
        names.into_iter().enumerate().map(|(i, n)| (n, i as i64)).collect()
    };
    let targets = Tensor::from_slice(&train.iter().map(|x| classes[label(x)]).collect::<Vec<_>>());
    let (mean, std) = (train_x.mean_dim(0, true, Kind::Float), train_x.std_dim(0, true, true) + 1e-6);
    let (train_x, test_x) = ((train_x - &mean) / &std, (test_x - &mean) / &std);
    let vs = nn::VarStore::new(Device::Cpu);
    let linear = nn::linear(vs.root(), train_x.size()[1], classes.len() as i64, Default::default());
    let mut opt = nn::OptimizerConfig::build(nn::AdamW { wd: 1e-2, ..Default::default() }, &vs, 3e-3).expect("an optimiser over one layer");
    for _ in 0..300 {
        let loss = nn::Module::forward(&linear, &train_x).cross_entropy_for_logits(&targets);
        opt.backward_step(&loss);
    }
    let predicted = Vec::<i64>::try_from(&tch::no_grad(|| nn::Module::forward(&linear, &test_x)).argmax(-1, false)).expect("i64 classes");
    let right = test.iter().zip(predicted).filter(|(x, p)| classes.get(label(x)) == Some(p)).count();
    100.0 * right as f64 / test.len() as f64
}
