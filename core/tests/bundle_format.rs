//! The bundle's two layouts, writer against reader: round trips, every
//! error with its message, and random damage to a single-file bundle (which
//! must give an error or a working bundle, never a panic or a hang).

use std::collections::HashMap;
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use vitrine_core::bundle::folder::MANIFEST_FILE;
use vitrine_core::bundle::single_file::SingleFileLayout;
use vitrine_core::bundle::{
    category_ids, sha256_hex, Bundle, BundleContents, BundleError, FetchedPart, Limits, Manifest, PartEntry, PartName, Product,
    FORMAT_VERSION,
};
use vitrine_core::index::synthetic::Clusters;
use vitrine_core::index::{AnnIndex, BuildParams, SearchParams};

const DIM: usize = 8;
const CATEGORIES: [&str; 3] = ["Bags", "Dresses", "Shoes"];

fn contents(items: usize) -> BundleContents {
    let (vectors, labels) = Clusters::new(DIM, 6, 0.8, 1).sample(items, 2);
    // Listed out of order: the category list comes out sorted.
    let names = ["Shoes", "Bags", "Dresses"];
    let products: Vec<Product> = labels
        .iter()
        .enumerate()
        .map(|(i, &c)| Product {
            id: format!("{i:07}"),
            title: format!("Product \"{i}\" — ünïcode, a\nnewline"),
            category: names[c % names.len()].to_string(),
            subcategory: format!("sub {}", i % 4),
            image: format!("https://cdn.example/{i}.jpg"),
            group_id: format!("g{}", i / 2),
        })
        .collect();
    let (categories, ids) = category_ids(&products).unwrap();
    let index = AnnIndex::build(DIM, &vectors, ids, &BuildParams { ef_construction: 20, ..BuildParams::default() }).unwrap();
    BundleContents {
        model_config: json!({"hidden_size": 32, "compact_dim": DIM}),
        categories,
        text_encoder: b"text encoder weights".repeat(7),
        heads: b"heads".to_vec(),
        tokenizer: br#"{"version": "1.0"}"#.to_vec(),
        index,
        products,
    }
}

fn limits() -> Limits {
    Limits::default()
}

fn read(bytes: &[u8]) -> Result<Bundle, BundleError> {
    Bundle::from_single_file(bytes, &limits())
}

fn err(result: Result<Bundle, BundleError>) -> BundleError {
    result.err().expect("an error")
}

/// A single-file bundle taken apart: header version, manifest, parts.
struct Unpacked {
    version: u32,
    manifest: Value,
    parts: Vec<Vec<u8>>,
}

fn unpack(bytes: &[u8]) -> Unpacked {
    let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
    let len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let manifest: Value = serde_json::from_slice(&bytes[16..16 + len]).unwrap();
    let mut at = 16 + len;
    let parts = manifest["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let n = p["bytes"].as_u64().unwrap() as usize;
            at += n;
            bytes[at - n..at].to_vec()
        })
        .collect();
    Unpacked { version, manifest, parts }
}

impl Unpacked {
    fn part_mut(&mut self, name: PartName) -> &mut Vec<u8> {
        let at = self.manifest["parts"].as_array().unwrap().iter().position(|p| p["name"] == name.as_str()).unwrap();
        &mut self.parts[at]
    }

    /// Lays the file out again, first giving every listed part the length,
    /// hash and file name of its (possibly changed) bytes.
    fn pack_resealed(&mut self) -> Vec<u8> {
        for (entry, bytes) in self.manifest["parts"].as_array_mut().unwrap().iter_mut().zip(&self.parts) {
            let name: PartName = serde_json::from_value(entry["name"].clone()).unwrap();
            *entry = serde_json::to_value(PartEntry::describe(name, bytes)).unwrap();
        }
        self.pack()
    }

    fn pack(&self) -> Vec<u8> {
        let manifest = serde_json::to_vec(&self.manifest).unwrap();
        let mut out = b"VITRINE\0".to_vec();
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(manifest.len() as u32).to_le_bytes());
        out.extend_from_slice(&manifest);
        self.parts.iter().for_each(|p| out.extend_from_slice(p));
        out
    }
}

#[test]
fn single_file_round_trip() {
    let contents = contents(120);
    let bytes = contents.to_single_file().unwrap();
    assert_eq!(&bytes[..8], b"VITRINE\0");
    let bundle = read(&bytes).unwrap();
    assert!(bundle.contents == contents, "read back different contents");
    let manifest = &bundle.manifest;
    assert_eq!((manifest.format.as_str(), manifest.format_version), ("vitrine-bundle", FORMAT_VERSION));
    assert_eq!((manifest.dims, manifest.items), (DIM, 120));
    assert_eq!(manifest.categories, CATEGORIES);
    assert!(manifest.created_by.starts_with("vitrine "));
    assert_eq!(manifest.parts.iter().map(|p| p.name).collect::<Vec<_>>(), PartName::ALL);
    assert_eq!(manifest.part(PartName::Heads).unwrap().bytes, 5);
    // The same contents give the same bytes (content-hashed parts stay cached).
    assert_eq!(contents.to_single_file().unwrap(), bytes);
    // The index searches as before.
    let query = bundle.contents.index.item_vector(3).unwrap();
    assert_eq!(bundle.contents.index.search(&query, 1, None, &SearchParams::default()).unwrap()[0].item, 3);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.vitrine");
    contents.write_single_file(&path).unwrap();
    assert!(Bundle::read_single_file(&path, &limits()).unwrap().contents == contents);
}

#[test]
fn folder_round_trip_with_content_hashed_names() {
    let contents = contents(90);
    let dir = tempfile::tempdir().unwrap();
    let manifest = contents.write_folder(dir.path()).unwrap();
    for part in &manifest.parts {
        assert!(part.file.starts_with(&format!("{}.{}.", part.name, &part.sha256[..16])), "{}", part.file);
        assert_eq!(std::fs::metadata(dir.path().join(&part.file)).unwrap().len(), part.bytes);
    }
    let bundle = Bundle::read_folder(dir.path(), &limits()).unwrap();
    assert!(bundle.contents == contents);
    assert_eq!(bundle.manifest, manifest);

    // As the browser does it: the manifest, then each listed file.
    let manifest = Manifest::parse(&std::fs::read(dir.path().join(MANIFEST_FILE)).unwrap(), &limits()).unwrap();
    let parts: HashMap<_, _> = manifest.parts.iter().map(|p| (p.name, std::fs::read(dir.path().join(&p.file)).unwrap())).collect();
    assert!(Bundle::from_parts(manifest.clone(), parts.clone()).unwrap().contents == contents);

    // With digests the fetcher computed (a browser's WebCrypto): a right one is
    // taken in place of hashing, a wrong one names its part as corrupt.
    let fetched = |wrong: Option<PartName>| -> HashMap<PartName, FetchedPart> {
        parts
            .iter()
            .map(|(&name, bytes)| {
                let sha256 = if Some(name) == wrong { sha256_hex(b"other bytes") } else { sha256_hex(bytes).to_uppercase() };
                (name, FetchedPart { bytes: bytes.clone(), sha256: Some(sha256) })
            })
            .collect()
    };
    assert!(Bundle::from_fetched_parts(manifest.clone(), fetched(None)).unwrap().contents == contents);
    match Bundle::from_fetched_parts(manifest, fetched(Some(PartName::Products))) {
        Err(BundleError::Corrupt { part: PartName::Products, actual, .. }) => assert_eq!(actual, sha256_hex(b"other bytes")),
        other => panic!("a wrong digest of the products part: {:?}", other.map(|_| ())),
    }

    // The single file holds the same manifest and parts.
    let single = contents.to_single_file().unwrap();
    assert_eq!(serde_json::to_value(&read(&single).unwrap().manifest).unwrap(), serde_json::to_value(&bundle.manifest).unwrap());

    // A new bundle in the same folder adds its changed parts beside the old.
    let mut changed = contents.clone();
    changed.heads = b"new heads".to_vec();
    let new_manifest = changed.write_folder(dir.path()).unwrap();
    assert_ne!(new_manifest.part(PartName::Heads), bundle.manifest.part(PartName::Heads));
    assert_eq!(new_manifest.part(PartName::Index), bundle.manifest.part(PartName::Index));
    assert!(dir.path().join(&bundle.manifest.part(PartName::Heads).unwrap().file).exists());
    assert_eq!(Bundle::read_folder(dir.path(), &limits()).unwrap().contents.heads, b"new heads");
}

#[test]
fn category_ids_follow_the_sorted_names() {
    let product = |category: &str| Product {
        id: "1".into(),
        title: "a title".into(),
        category: category.into(),
        subcategory: String::new(),
        image: String::new(),
        group_id: String::new(),
    };
    let (names, ids) = category_ids(&[product("Shoes"), product("Bags"), product("Shoes")]).unwrap();
    assert_eq!((names, ids), (vec!["Bags".to_string(), "Shoes".to_string()], vec![1, 0, 1]));
    let many: Vec<Product> = (0..65537).map(|i| product(&i.to_string())).collect();
    assert_eq!(
        category_ids(&many).err().unwrap().to_string(),
        "the bundle is inconsistent: 65537 categories, over the 65536 an index can tell apart"
    );
}

#[test]
fn an_empty_catalog_round_trips() {
    let empty = contents(0);
    assert!(empty.categories.is_empty());
    assert!(read(&empty.to_single_file().unwrap()).unwrap().contents == empty);
}

#[test]
fn truncated_files_name_what_is_cut() {
    let bytes = contents(40).to_single_file().unwrap();
    let unpacked = unpack(&bytes);
    let manifest_end = bytes.len() - unpacked.parts.iter().map(Vec::len).sum::<usize>();

    let error = err(read(&bytes[..bytes.len() - 10]));
    assert!(matches!(&error, BundleError::Truncated { what, .. } if what == "part `products`"), "{error}");
    assert!(error.to_string().starts_with("part `products` is truncated:"), "{error}");
    let error = err(read(&bytes[..manifest_end + 3]));
    assert!(matches!(&error, BundleError::Truncated { what, found: 3, .. } if what == "part `text_encoder`"), "{error}");
    let error = err(read(&bytes[..manifest_end - 1]));
    assert!(error.to_string().starts_with("the manifest is truncated"), "{error}");
    let error = err(read(&bytes[..12]));
    assert_eq!(error.to_string(), "the file header is truncated: 16 bytes expected, 12 present");
    let error = err(read(&bytes[..5]));
    assert!(error.to_string().starts_with("the file header is truncated"), "a prefix of the magic: {error}");

    let mut longer = bytes.clone();
    longer.extend_from_slice(b"junk");
    assert_eq!(err(read(&longer)).to_string(), "4 bytes follow the last part of the bundle");
}

#[test]
fn a_changed_byte_is_a_corrupt_part() {
    let bytes = contents(40).to_single_file().unwrap();
    let mut damaged = bytes.clone();
    let last = damaged.len() - 2;
    damaged[last] ^= 0x20;
    let error = err(read(&damaged));
    assert!(matches!(error, BundleError::Corrupt { part: PartName::Products, .. }), "{error}");
    assert!(error.to_string().starts_with("part `products` is corrupt: its sha256 is "), "{error}");

    let dir = tempfile::tempdir().unwrap();
    let manifest = contents(40).write_folder(dir.path()).unwrap();
    let index_file = dir.path().join(&manifest.part(PartName::Index).unwrap().file);
    let mut index = std::fs::read(&index_file).unwrap();
    index[20] ^= 1;
    std::fs::write(&index_file, index).unwrap();
    let error = err(Bundle::read_folder(dir.path(), &limits()));
    assert!(matches!(error, BundleError::Corrupt { part: PartName::Index, .. }), "{error}");
}

#[test]
fn other_versions_say_what_to_do() {
    let bytes = contents(20).to_single_file().unwrap();
    let mut newer = bytes.clone();
    newer[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    assert_eq!(
        err(read(&newer)).to_string(),
        format!(
            "this bundle is format {}; this reader reads up to {FORMAT_VERSION}: rebuild the bundle or update vitrine",
            FORMAT_VERSION + 1
        )
    );
    // Format 1 (no 4-bit matrices, no index refinement) is still read.
    let mut older = bytes.clone();
    older[8..12].copy_from_slice(&1u32.to_le_bytes());
    assert!(read(&older).unwrap().contents == contents(20));
    newer[8..12].copy_from_slice(&0u32.to_le_bytes());
    assert!(matches!(err(read(&newer)), BundleError::UnknownVersion { found: 0 }));

    // A folder's manifest of a newer format, whatever else it changed.
    let dir = tempfile::tempdir().unwrap();
    contents(20).write_folder(dir.path()).unwrap();
    let future = json!({"format": "vitrine-bundle", "format_version": 7, "shards": [1, 2]});
    std::fs::write(dir.path().join(MANIFEST_FILE), future.to_string()).unwrap();
    assert_eq!(
        err(Bundle::read_folder(dir.path(), &limits())).to_string(),
        format!("this bundle is format 7; this reader reads up to {FORMAT_VERSION}: rebuild the bundle or update vitrine")
    );
}

#[test]
fn size_limits_apply_before_reading() {
    let contents = contents(60);
    let bytes = contents.to_single_file().unwrap();
    let small = Limits { max_total_bytes: 1000, ..limits() };
    let error = err(Bundle::from_single_file(&bytes, &small));
    assert_eq!(error.to_string(), format!("the bundle is {} bytes, over the limit of 1000 bytes", bytes.len()));
    let tiny_manifest = Limits { max_manifest_bytes: 100, ..limits() };
    assert!(err(Bundle::from_single_file(&bytes, &tiny_manifest)).to_string().starts_with("the manifest is "));

    // A header that claims a 4 GiB manifest is refused without allocating it.
    let mut huge = bytes[..16].to_vec();
    huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(err(read(&huge)), BundleError::TooLarge { size: 4294967295, .. }));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.vitrine");
    std::fs::write(&path, &bytes).unwrap();
    let error = err(Bundle::read_single_file(&path, &small));
    assert!(matches!(error, BundleError::TooLarge { .. }) && error.to_string().contains("big.vitrine"), "{error}");

    // A folder whose manifest lists more than the limit.
    contents.write_folder(dir.path()).unwrap();
    let folder_limit = Limits { max_total_bytes: 500, ..limits() };
    let error = err(Bundle::read_folder(dir.path(), &folder_limit));
    assert!(error.to_string().starts_with("the bundle (all parts) is 11"), "{error}");
    let error = err(Bundle::read_folder(dir.path(), &tiny_manifest));
    assert!(error.to_string().starts_with("the manifest ("), "{error}");
}

#[test]
fn other_files_are_not_bundles() {
    for (bytes, start) in [
        (&b"PK\x03\x04 a zip file"[..], "not a vitrine bundle: it starts with \"PK\\u{3}\\u{4} a z\""),
        (b"", "not a vitrine bundle: it starts with nothing"),
    ] {
        let error = err(read(bytes));
        assert!(matches!(error, BundleError::BadMagic { .. }) && error.to_string().starts_with(start), "{error}");
    }
    let mut unpacked = unpack(&contents(10).to_single_file().unwrap());
    unpacked.manifest["format"] = json!("zip");
    assert_eq!(err(read(&unpacked.pack())).to_string(), "not a vitrine bundle: the manifest's format is \"zip\", not \"vitrine-bundle\"");
    let error = err(Manifest::parse(b"{not json", &limits()).map(|_| unreachable!()));
    assert!(error.to_string().starts_with("the manifest is not valid: "), "{error}");
}

#[test]
fn manifest_mistakes_name_the_part() {
    let bytes = contents(30).to_single_file().unwrap();
    let edit = |change: &dyn Fn(&mut Value)| {
        let mut unpacked = unpack(&bytes);
        change(&mut unpacked.manifest);
        err(read(&unpacked.pack()))
    };
    let error = edit(&|m| {
        m["parts"].as_array_mut().unwrap().pop();
    });
    assert_eq!(error.to_string(), "the manifest lists no part `products`");
    let error = edit(&|m| {
        let first = m["parts"][0].clone();
        m["parts"].as_array_mut().unwrap().push(first);
    });
    assert_eq!(error.to_string(), "the manifest lists part `text_encoder` twice");
    let error = edit(&|m| m["parts"][3]["file"] = json!("../../etc/passwd"));
    assert!(error.to_string().starts_with("the manifest names part `index`'s file \"../../etc/passwd\"; it must be \"index."), "{error}");
    let error = edit(&|m| m["parts"][1]["sha256"] = json!("XYZ"));
    assert_eq!(error.to_string(), "the manifest gives part `heads` the sha256 \"XYZ\", not 64 lowercase hex digits");
    let error = edit(&|m| m["parts"][1]["name"] = json!("weights"));
    assert!(error.to_string().contains("unknown variant `weights`"), "{error}");

    // A folder without one of its part files.
    let dir = tempfile::tempdir().unwrap();
    let manifest = contents(30).write_folder(dir.path()).unwrap();
    std::fs::remove_file(dir.path().join(&manifest.part(PartName::Tokenizer).unwrap().file)).unwrap();
    let error = err(Bundle::read_folder(dir.path(), &limits()));
    assert!(error.to_string().starts_with("part `tokenizer` is missing: no file "), "{error}");
    let error = err(Bundle::read_folder(Path::new("/nonexistent/bundle"), &limits()));
    assert!(matches!(error, BundleError::Io { .. }) && error.to_string().contains("/nonexistent/bundle/manifest.json"), "{error}");
    let mut parts = HashMap::new();
    parts.insert(PartName::Index, Vec::new());
    assert!(matches!(Bundle::from_parts(manifest, parts), Err(BundleError::MissingPart { part: PartName::TextEncoder })));
}

#[test]
fn parts_that_do_not_decode_or_agree_are_named() {
    let bytes = contents(30).to_single_file().unwrap();
    let resealed = |change: &dyn Fn(&mut Unpacked)| {
        let mut unpacked = unpack(&bytes);
        change(&mut unpacked);
        err(read(&unpacked.pack_resealed()))
    };
    let error = resealed(&|u| {
        let products = u.part_mut(PartName::Products);
        let second_line = products.iter().position(|&b| b == b'\n').unwrap() + 1;
        products.insert(second_line, b'{');
    });
    assert!(error.to_string().starts_with("part `products` is invalid: line 2: "), "{error}");
    let error = resealed(&|u| u.part_mut(PartName::Index).truncate(100));
    assert!(error.to_string().starts_with("part `index` is invalid: the index does not decode"), "{error}");
    let error = resealed(&|u| {
        let products = u.part_mut(PartName::Products);
        let last_line = products[..products.len() - 1].iter().rposition(|&b| b == b'\n').unwrap() + 1;
        products.truncate(last_line);
    });
    assert_eq!(error.to_string(), "the bundle is inconsistent: the index has 30 items but there are 29 products");
    let error = resealed(&|u| u.manifest["items"] = json!(31));
    assert!(error.to_string().starts_with("the bundle is inconsistent: the manifest says 31 items of 8 dimensions"), "{error}");
    let error = resealed(&|u| u.manifest["categories"] = json!(["Bags", "Shoes", "Dresses"]));
    assert!(error.to_string().contains("but the index files it under"), "{error}");
    let error = resealed(&|u| u.manifest["categories"] = json!(["Bags", "Dresses"]));
    assert!(error.to_string().contains("has category id 2, but there are 2 categories"), "{error}");

    // The writer refuses what the reader would.
    let mut wrong = contents(30);
    wrong.products[4].category = "Hats".into();
    let error = wrong.to_single_file().err().unwrap();
    assert_eq!(
        error.to_string(),
        format!("the bundle is inconsistent: item 4 (product \"0000004\") is in category \"Hats\", but the index files it under {:?}", {
            CATEGORIES[usize::from(wrong.index.categories()[4])]
        })
    );
    let mut twice = contents(30);
    twice.categories.push("Bags".into());
    assert_eq!(twice.to_single_file().err().unwrap().to_string(), "the bundle is inconsistent: category \"Bags\" is listed twice");
}

/// Mutations of a valid bundle, deterministic for a seed; `VITRINE_MUTATIONS`
/// sets how many (a long run: `VITRINE_MUTATIONS=200000 cargo test --release
/// -p vitrine-core --test bundle_format random_damage`).
#[test]
fn random_damage_never_panics() {
    let rounds: usize = std::env::var("VITRINE_MUTATIONS").ok().and_then(|n| n.parse().ok()).unwrap_or(3000);
    let bytes = contents(50).to_single_file().unwrap();
    let clean = unpack(&bytes);
    let mut rng = ChaCha8Rng::seed_from_u64(0xb0d1e);
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    for round in 0..rounds {
        let damaged = match round % 6 {
            // Anywhere in the file: bit flips, random bytes, a cut, a splice.
            0 => {
                let mut d = bytes.clone();
                for _ in 0..rng.gen_range(1..5) {
                    let at = rng.gen_range(0..d.len());
                    d[at] ^= 1 << rng.gen_range(0..8);
                }
                d
            }
            1 => {
                let mut d = bytes.clone();
                let at = rng.gen_range(0..d.len());
                d[at] = rng.gen();
                d
            }
            2 => bytes[..rng.gen_range(0..bytes.len())].to_vec(),
            3 => {
                let mut d = bytes.clone();
                let at = rng.gen_range(0..d.len());
                let len = rng.gen_range(1..64).min(d.len() - at);
                if rng.gen() {
                    d.drain(at..at + len);
                } else {
                    let junk: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
                    d.splice(at..at, junk);
                }
                d
            }
            // Inside the index or the products, with the hashes made to
            // match, so that their decoders see the damage.
            4 => {
                let mut u = Unpacked { version: clean.version, manifest: clean.manifest.clone(), parts: clean.parts.clone() };
                let part = u.part_mut(if rng.gen() { PartName::Index } else { PartName::Products });
                for _ in 0..rng.gen_range(1..4) {
                    let at = rng.gen_range(0..part.len());
                    match rng.gen_range(0..3) {
                        0 => part[at] ^= 1 << rng.gen_range(0..8),
                        1 => part[at] = rng.gen(),
                        _ => part.truncate(at.max(1)),
                    }
                }
                u.pack_resealed()
            }
            // Inside the manifest JSON, its length field kept right.
            _ => {
                let mut manifest = serde_json::to_vec(&clean.manifest).unwrap();
                let at = rng.gen_range(0..manifest.len());
                let palette = b"{}[]\":,0123456789-e.x \\";
                manifest[at] = palette[rng.gen_range(0..palette.len())];
                let mut d = bytes[..12].to_vec();
                d.extend_from_slice(&(manifest.len() as u32).to_le_bytes());
                d.extend_from_slice(&manifest);
                clean.parts.iter().for_each(|p| d.extend_from_slice(p));
                d
            }
        };
        let outcome = match read(&damaged) {
            Ok(bundle) => {
                // Whatever was accepted must be usable.
                let index = &bundle.contents.index;
                let query = vec![0.5; index.dim()];
                index.search(&query, 5, None, &SearchParams::default()).unwrap();
                index.search(&query, 5, Some(1), &SearchParams::default()).unwrap();
                "read".to_string()
            }
            Err(error) => format!("{error:?}").split([' ', '(', '{']).next().unwrap().to_string(),
        };
        *outcomes.entry(outcome).or_default() += 1;
    }
    eprintln!("{rounds} mutations: {outcomes:?}");
    for kind in ["Corrupt", "Truncated", "InvalidPart", "Manifest"] {
        assert!(outcomes.get(kind).copied().unwrap_or(0) > rounds / 100, "few {kind} among {outcomes:?}");
    }
}

#[test]
fn a_single_file_layout_takes_the_callers_digests() {
    let contents = contents(30);
    let bytes = contents.to_single_file().unwrap();
    let layout = || SingleFileLayout::read(&bytes, &limits()).unwrap();
    let ranges: Vec<_> = layout().parts.iter().map(|(_, range)| range.clone()).collect();
    assert_eq!(ranges.last().unwrap().end, bytes.len());
    let digests: Vec<String> = ranges.iter().map(|range| sha256_hex(&bytes[range.clone()])).collect();
    assert!(layout().into_bundle(&bytes, Some(digests.clone())).unwrap().contents == contents);
    assert!(layout().into_bundle(&bytes, None).unwrap().contents == contents);
    let mut wrong = digests.clone();
    wrong[0] = sha256_hex(b"something else");
    let first = layout().parts[0].0;
    assert!(matches!(layout().into_bundle(&bytes, Some(wrong)), Err(BundleError::Corrupt { part, .. }) if part == first));
    assert!(matches!(layout().into_bundle(&bytes, Some(digests[1..].to_vec())), Err(BundleError::Inconsistent(_))));
    // Other bytes than the layout's file are refused, not sliced.
    assert!(matches!(layout().into_bundle(&bytes[..bytes.len() - 1], None), Err(BundleError::Inconsistent(_))));
    // The layout's own checks are the reader's: a cut file is truncated.
    assert!(matches!(SingleFileLayout::read(&bytes[..bytes.len() - 1], &limits()), Err(BundleError::Truncated { .. })));
}
