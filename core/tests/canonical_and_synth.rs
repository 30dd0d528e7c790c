//! The canonical folder's writer and reader agree, and the generated catalog is
//! deterministic and yields every task dataset.

use std::collections::{BTreeSet, HashMap};

use vitrine_core::catalog::{canonical, images, BadRowPolicy, ImportOptions, Split};
use vitrine_core::synth::{generate, SynthSpec};
use vitrine_core::tasks::{self, image_text_pairs, outfit_candidates, outfit_questions, tgir_triplets, Labels};

#[test]
fn generated_catalog_is_deterministic_and_complete() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let spec = SynthSpec::default();
    let first = generate(a.path(), &spec).unwrap();
    let second = generate(b.path(), &spec).unwrap();
    let json = |c: &vitrine_core::catalog::Catalog| serde_json::to_string(&(&c.items, &c.baskets)).unwrap();
    assert_eq!(json(&first), json(&second));
    assert_eq!(std::fs::read(a.path().join("images/g0000-00.jpg")).unwrap(), std::fs::read(b.path().join("images/g0000-00.jpg")).unwrap());

    let mut catalog = first;
    let check = images::verify(&mut catalog, BadRowPolicy::Strict, || {}).unwrap();
    assert_eq!((check.missing, check.corrupt), (0, 0));
    for split in Split::ALL {
        assert!(!image_text_pairs(&catalog, split).is_empty(), "{split} has image-text pairs");
    }
    let triplets = tgir_triplets(&catalog);
    assert!(Split::ALL.iter().all(|s| triplets.iter().any(|t| t.split == *s)));
    for t in &triplets {
        let (r, g) = (&catalog.items[t.reference], &catalog.items[t.target]);
        assert_eq!(r.group_id, g.group_id);
        assert_eq!(catalog.split_of(&r.id), catalog.split_of(&g.id));
        assert!(r.attributes != g.attributes && !t.modification.is_empty());
    }
    let questions = outfit_questions(&catalog);
    assert!(Split::ALL.iter().all(|s| questions.iter().any(|q| q.split == *s)));
    for q in &questions {
        assert!(!q.context.contains(&q.answer));
        assert!(outfit_candidates(&catalog, &q.category, q.split).contains(&q.answer));
    }
    let labels = Labels::from_catalog(&catalog, BadRowPolicy::Strict).unwrap();
    assert!(labels.categories.len() >= 4 && labels.subcategories.len() >= 8);
}

#[test]
fn canonical_round_trip_keeps_everything() {
    let (src, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let catalog = generate(src.path(), &SynthSpec { groups: 12, baskets: 10, ..Default::default() }).unwrap();
    canonical::write_dir(&catalog, out.path()).unwrap();
    let mut back = canonical::import_dir(out.path(), ImportOptions::default()).unwrap();
    assert_eq!(back.items.len(), catalog.items.len());
    assert_eq!(back.baskets.len(), catalog.baskets.len());
    assert_eq!(back.splits, catalog.splits);
    for (a, b) in catalog.items.iter().zip(&back.items) {
        assert_eq!((&a.id, &a.title, &a.attributes, a.price), (&b.id, &b.title, &b.attributes, b.price));
    }
    // Image paths were rewritten relative to the new folder and still resolve.
    let check = images::verify(&mut back, BadRowPolicy::Strict, || {}).unwrap();
    assert_eq!(check.checked, catalog.items.len());
}

#[test]
fn canonical_jsonl_bad_lines_name_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = r#"{"id":"a","group_id":"a","title":"Red dress","category":"Dress"}"#;
    let text = format!("{good}\n{{\"id\": \"b\", \"title\": oops}}\n\n{}\n", good.replace("\"a\"", "\"c\""));
    std::fs::write(dir.path().join(canonical::ITEMS_FILE), text).unwrap();
    let message = canonical::import_dir(dir.path(), ImportOptions::default()).unwrap_err().to_string();
    assert!(message.contains("items.jsonl:2"), "{message}");
    let catalog = canonical::import_dir(dir.path(), ImportOptions::skip()).unwrap();
    assert_eq!(catalog.items.iter().map(|it| it.id.as_str()).collect::<Vec<_>>(), ["a", "c"]);
    assert_eq!(catalog.items[1].source.line, 4);
}

#[test]
fn a_catalog_without_variant_groups_gets_triplets_from_single_attribute_differences() {
    let dir = tempfile::tempdir().unwrap();
    let mut catalog = generate(dir.path(), &SynthSpec::default()).unwrap();
    for item in &mut catalog.items {
        item.group_id = item.id.clone();
        // An attribute of the shop's own beside colour and print.
        let fit = if item.id.bytes().map(u32::from).sum::<u32>() % 2 == 0 { "Slim" } else { "Loose" };
        item.attributes.insert("fit".to_string(), fit.to_string());
    }
    assert!(!tasks::has_variant_groups(&catalog));
    let triplets = tgir_triplets(&catalog);
    assert!(Split::ALL.iter().all(|s| triplets.iter().any(|t| t.split == *s)), "every split has triplets");
    let mut per_reference: HashMap<usize, usize> = HashMap::new();
    let mut changed: BTreeSet<String> = BTreeSet::new();
    for t in &triplets {
        let (r, g) = (&catalog.items[t.reference], &catalog.items[t.target]);
        assert_ne!(t.reference, t.target);
        assert_eq!((&r.category, &r.subcategory), (&g.category, &g.subcategory), "{} → {}", r.id, g.id);
        assert_eq!(catalog.split_of(&r.id), Some(t.split));
        assert_eq!(catalog.split_of(&g.id), Some(t.split));
        let differing: Vec<&String> = r.attributes.keys().filter(|k| r.attributes.get(*k) != g.attributes.get(*k)).collect();
        assert_eq!(differing.len(), 1, "{} → {} differ in {differing:?}", r.id, g.id);
        assert!(!t.modification.is_empty());
        if differing[0] == "fit" {
            assert!(t.modification.contains(&g.attributes["fit"].to_lowercase()), "{:?} names the new fit", t.modification);
        }
        changed.insert(differing[0].clone());
        *per_reference.entry(t.reference).or_default() += 1;
    }
    assert!(per_reference.values().all(|&n| n <= tasks::ATTRIBUTE_TARGETS_PER_REFERENCE));
    assert_eq!(changed, BTreeSet::from(["colour".to_string(), "fit".to_string(), "print".to_string()]));
    // The draw is a function of the catalog: the same triplets every run.
    assert_eq!(tgir_triplets(&catalog), triplets);
}
