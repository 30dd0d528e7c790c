//! The search engine over a tiny bundle built here: a random two-head BERT
//! text encoder (int8, as the builder ships it), random compact heads whose
//! TGIR combiner leaves the reference unchanged (its output layer is zero, so
//! a product's own vector is its query), and 48 random products in four
//! categories; written as a single file and read back as the browser would.

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vitrine_core::bundle::{category_ids, Bundle, BundleContents, Limits, Product};
use vitrine_core::engine::{Engine, EngineError, Hit, MAX_OUTFIT_ITEMS, MAX_QUERY_BYTES};
use vitrine_core::model::compact::{CompactConfig, CompactHeads, OptionalHead};
use vitrine_core::model::quant::quantize_safetensors;
use vitrine_core::model::{LoadOptions, TextEncoder};

const VOCAB: [&str; 16] =
    ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "black", "dress", "red", "##s", "shoe", "wool", "boot", "bag", "blue", "long"];
const HIDDEN: usize = 8;
const INTERMEDIATE: usize = 16;
const POSITIONS: usize = 24;
const DIM: usize = 6;
const CATEGORIES: [&str; 4] = ["Bags", "Dresses", "Shoes", "Tops"];
const PER_CATEGORY: usize = 12;
const ITEMS: usize = CATEGORIES.len() * PER_CATEGORY;
const MAX_QUERY_TOKENS: usize = 16;

/// An uncased WordPiece tokenizer.json over [`VOCAB`].
fn tokenizer_json() -> Vec<u8> {
    let vocab: Vec<String> = VOCAB.iter().enumerate().map(|(i, t)| format!("\"{t}\": {i}")).collect();
    format!(
        r###"{{
  "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
  "normalizer": {{"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true}},
  "pre_tokenizer": {{"type": "BertPreTokenizer"}},
  "post_processor": {{"type": "TemplateProcessing",
    "single": [{{"SpecialToken": {{"id": "[CLS]", "type_id": 0}}}}, {{"Sequence": {{"id": "A", "type_id": 0}}}}, {{"SpecialToken": {{"id": "[SEP]", "type_id": 0}}}}],
    "pair": [{{"Sequence": {{"id": "A", "type_id": 0}}}}, {{"Sequence": {{"id": "B", "type_id": 1}}}}],
    "special_tokens": {{"[CLS]": {{"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]}}, "[SEP]": {{"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}}}}},
  "decoder": {{"type": "WordPiece", "prefix": "##", "cleanup": true}},
  "model": {{"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100, "vocab": {{ {} }}}}
}}"###,
        vocab.join(", ")
    )
    .into_bytes()
}

fn encoder_config() -> serde_json::Value {
    serde_json::json!({
        "vocab_size": VOCAB.len(), "hidden_size": HIDDEN, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": INTERMEDIATE, "hidden_act": "gelu", "max_position_embeddings": POSITIONS, "type_vocab_size": 2,
        "layer_norm_eps": 1e-12, "max_visual_positions": 4, "model_type": "bert"
    })
}

fn compact_config() -> CompactConfig {
    CompactConfig { teacher_dim: HIDDEN, dim: DIM, categories: CATEGORIES.len(), image_weight: 0.6, heads: OptionalHead::all() }
}

/// Named random tensors, written as one safetensors file.
struct Tensors {
    rng: ChaCha8Rng,
    out: Vec<(String, Tensor)>,
}

impl Tensors {
    fn new(seed: u64) -> Self {
        Tensors { rng: ChaCha8Rng::seed_from_u64(seed), out: Vec::new() }
    }

    fn add(&mut self, name: &str, shape: &[usize], std: f32, mean: f32) {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n).map(|_| mean + std * self.rng.gen_range(-1.0f32..1.0)).collect();
        self.out.push((name.to_string(), Tensor::from_vec(values, shape, &Device::Cpu).unwrap()));
    }

    fn linear(&mut self, name: &str, in_dim: usize, out_dim: usize) {
        self.add(&format!("{name}.weight"), &[out_dim, in_dim], 1.0 / (in_dim as f32).sqrt(), 0.0);
        self.add(&format!("{name}.bias"), &[out_dim], 0.1, 0.0);
    }

    fn layer_norm(&mut self, name: &str) {
        self.add(&format!("{name}.weight"), &[HIDDEN], 0.1, 1.0);
        self.add(&format!("{name}.bias"), &[HIDDEN], 0.1, 0.0);
    }

    fn serialize(self) -> Vec<u8> {
        safetensors::serialize(self.out.iter().map(|(n, t)| (n.as_str(), t)), None).unwrap()
    }
}

/// The trainer's text tower (`bert.*` and the learnt embedding scale), int8.
fn text_encoder() -> Vec<u8> {
    let mut t = Tensors::new(1);
    t.add("bert.embeddings.word_embeddings.weight", &[VOCAB.len(), HIDDEN], 1.0, 0.0);
    t.add("bert.embeddings.position_embeddings.weight", &[POSITIONS, HIDDEN], 0.5, 0.0);
    t.add("bert.embeddings.token_type_embeddings.weight", &[2, HIDDEN], 0.5, 0.0);
    t.layer_norm("bert.embeddings.LayerNorm");
    let p = "bert.encoder.layer.0";
    for part in ["query", "key", "value"] {
        t.linear(&format!("{p}.attention.self.{part}"), HIDDEN, HIDDEN);
    }
    t.linear(&format!("{p}.attention.output.dense"), HIDDEN, HIDDEN);
    t.layer_norm(&format!("{p}.attention.output.LayerNorm"));
    t.linear(&format!("{p}.intermediate.dense"), HIDDEN, INTERMEDIATE);
    t.linear(&format!("{p}.output.dense"), INTERMEDIATE, HIDDEN);
    t.layer_norm(&format!("{p}.output.LayerNorm"));
    t.out.push(("embedding_scale".to_string(), Tensor::new(4.0f32, &Device::Cpu).unwrap()));
    let (int8, report) = quantize_safetensors(&t.serialize(), "text encoder").unwrap();
    // Six linear layers and the word embeddings.
    assert_eq!(report.layers.len(), 7);
    int8
}

/// Random heads, but a TGIR combiner whose change is zero: its query is the
/// reference itself.
fn heads() -> Vec<u8> {
    let c = CATEGORIES.len();
    let mut t = Tensors::new(2);
    t.add("projection.weight", &[DIM, HIDDEN], 0.5, 0.0);
    t.linear("tgir.dense", 2 * DIM, DIM);
    t.add("tgir.output.weight", &[DIM, DIM], 0.0, 0.0);
    t.add("tgir.output.bias", &[DIM], 0.0, 0.0);
    t.add("ocir.category_embeddings.weight", &[c, DIM], 1.0, 0.0);
    t.linear("ocir.dense", 2 * DIM, DIM);
    t.linear("ocir.output", DIM, DIM);
    t.linear("category", DIM, c);
    t.serialize()
}

fn products() -> Vec<Product> {
    (0..ITEMS)
        .map(|i| Product {
            id: format!("p{i}"),
            title: format!("product {i}"),
            category: CATEGORIES[i % CATEGORIES.len()].to_string(),
            subcategory: String::new(),
            image: format!("images/p{i}.jpg"),
            group_id: String::new(),
        })
        .collect()
}

fn contents() -> BundleContents {
    let products = products();
    let (categories, ids) = category_ids(&products).unwrap();
    assert_eq!(categories, CATEGORIES);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let vectors: Vec<f32> = (0..ITEMS)
        .flat_map(|_| {
            let v: Vec<f32> = (0..DIM).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.into_iter().map(move |x| x / norm)
        })
        .collect();
    let index = vitrine_core::index::AnnIndex::build(DIM, &vectors, ids, &Default::default()).unwrap();
    let model_config = serde_json::json!({
        "text_encoder": encoder_config(), "compact": compact_config(), "max_query_tokens": MAX_QUERY_TOKENS
    });
    BundleContents { model_config, categories, text_encoder: text_encoder(), heads: heads(), tokenizer: tokenizer_json(), index, products }
}

/// The bundle as written to a file and read back.
fn bundle(contents: &BundleContents) -> Bundle {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.vitrine");
    contents.write_single_file(&path).unwrap();
    Bundle::from_single_file(&std::fs::read(&path).unwrap(), &Limits::default()).unwrap()
}

fn engine() -> Engine {
    Engine::from_bundle(bundle(&contents())).unwrap()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn normalize(v: &[f32]) -> Vec<f32> {
    let norm = dot(v, v).sqrt();
    v.iter().map(|x| x / norm).collect()
}

fn items(hits: &[Hit]) -> Vec<u32> {
    hits.iter().map(|h| h.item).collect()
}

fn category_of(engine: &Engine, item: u32) -> u16 {
    engine.index().categories()[item as usize]
}

fn query_error(result: Result<impl std::fmt::Debug, EngineError>) -> String {
    match result {
        Err(e @ EngineError::Query(_)) => e.to_string(),
        other => panic!("expected a query error, got {other:?}"),
    }
}

#[test]
fn the_query_vector_is_the_projected_text_embedding() {
    let engine = engine();
    let contents = contents();
    let encoder = TextEncoder::from_bytes(
        encoder_config().to_string().as_bytes(),
        &contents.text_encoder,
        &contents.tokenizer,
        LoadOptions::default(),
        MAX_QUERY_TOKENS,
    )
    .unwrap();
    assert!(encoder.is_int8());
    let heads = CompactHeads::from_bytes(&compact_config(), &contents.heads, "heads").unwrap();
    for text in ["a black dress", "red wool boots"] {
        let teacher = Tensor::from_vec(encoder.embed(text).unwrap(), (1, HIDDEN), &Device::Cpu).unwrap();
        let expected: Vec<f32> = heads.project(&teacher).unwrap().squeeze(0).unwrap().to_vec1().unwrap();
        let got = engine.embed_query(text).unwrap();
        assert_eq!(got.len(), DIM);
        assert!((dot(&got, &got) - 1.0).abs() < 1e-5);
        assert!(got.iter().zip(&expected).all(|(g, e)| (g - e).abs() < 1e-6), "{got:?} vs {expected:?}");
    }
    let (a, b) = (engine.embed_query("a black dress").unwrap(), engine.embed_query("red wool boots").unwrap());
    assert!(dot(&a, &b) < 0.999, "two texts, one vector");
    // The engine remembers the last query's vector: repeating and alternating
    // texts must still give each text its own vector.
    for (text, expected) in [("red wool boots", &b), ("red wool boots", &b), ("a black dress", &a), ("red wool boots", &b)] {
        assert_eq!(&engine.embed_query(text).unwrap(), expected, "{text}");
    }
}

#[test]
fn search_returns_k_distinct_items_best_first() {
    let engine = engine();
    for text in ["a black dress", "blue bag", "long red shoes"] {
        let hits = engine.search(text, 5, None).unwrap();
        assert_eq!(hits.len(), 5);
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score), "{hits:?}");
        let mut distinct = items(&hits);
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 5);
        // 48 items under a beam of 100: the graph finds the exact best.
        let query = engine.embed_query(text).unwrap();
        assert_eq!(items(&hits), items(&engine.index().exact_search(&query, 5, None).unwrap()));
        for hit in &hits {
            let stored = engine.index().item_vector(hit.item).unwrap();
            assert!((hit.score - dot(&query, &stored)).abs() < 1e-4);
        }
    }
    // No more hits than items, however many are asked for.
    assert_eq!(engine.search("a dress", usize::MAX, None).unwrap().len(), ITEMS);
    assert!(engine.search("a dress", 0, None).unwrap().is_empty());
}

#[test]
fn a_bundle_may_set_the_search_beam() {
    // The bundle's beam is read; even the narrowest (the index widens it to k) answers k.
    let mut contents = contents();
    contents.model_config["search_ef"] = 1.into();
    let narrow = Engine::from_bundle(bundle(&contents)).unwrap();
    assert_eq!(narrow.config().search_ef, Some(1));
    let wide = engine();
    assert_eq!(wide.config().search_ef, None);
    for text in ["black leather boots", "a red summer dress"] {
        assert_eq!(narrow.search(text, 3, None).unwrap().len(), 3);
        assert_eq!(wide.search(text, 3, None).unwrap().len(), 3);
    }
}

#[test]
fn a_category_filter_keeps_to_its_category() {
    let engine = engine();
    for category in 0..CATEGORIES.len() as u16 {
        let hits = engine.search("black wool", 5, Some(category)).unwrap();
        assert_eq!(hits.len(), 5);
        assert!(hits.iter().all(|h| category_of(&engine, h.item) == category), "{hits:?}");
        let all = engine.search("black wool", 100, Some(category)).unwrap();
        assert_eq!(all.len(), PER_CATEGORY);
        assert!(all.iter().all(|h| category_of(&engine, h.item) == category));
    }
}

#[test]
fn modify_returns_the_references_neighbours_in_its_category_without_it() {
    let engine = engine();
    for item in [0u32, 5, 17, 46] {
        let category = category_of(&engine, item);
        let stored = engine.index().item_vector(item).unwrap();
        let reference = normalize(&stored);
        // The TGIR head of this bundle keeps the (renormalised) reference, whatever the text.
        let query = engine.tgir_query(&stored, "but red").unwrap();
        assert!(query.iter().zip(&reference).all(|(q, r)| (q - r).abs() < 1e-5), "{query:?} vs {reference:?}");
        let doubled: Vec<f32> = stored.iter().map(|x| 2.0 * x).collect();
        assert_eq!(engine.tgir_query(&doubled, "in wool").unwrap(), query);
        // So the reference is the best match for its own query…
        let with_it = engine.index().exact_search(&query, 4, Some(category)).unwrap();
        assert_eq!(with_it[0].item, item);
        // …and modify gives the rest.
        let hits = engine.modify(item, "but red", 3).unwrap();
        assert_eq!(items(&hits), items(&with_it[1..]));
        assert!(hits.iter().all(|h| category_of(&engine, h.item) == category));
        let all = engine.modify(item, "in wool", 100).unwrap();
        assert_eq!(all.len(), PER_CATEGORY - 1);
        assert!(all.iter().all(|h| h.item != item && category_of(&engine, h.item) == category));
    }
}

#[test]
fn complete_outfit_leaves_out_the_outfit_and_keeps_to_the_category() {
    let engine = engine();
    // Two dresses (category 1) and a bag (category 0); dresses wanted.
    let outfit = [1u32, 5, 8];
    assert_eq!(outfit.map(|i| category_of(&engine, i)), [1, 1, 0]);
    let all = engine.complete_outfit(&outfit, 1, 100).unwrap();
    assert_eq!(all.len(), PER_CATEGORY - 2);
    assert!(all.iter().all(|h| !outfit.contains(&h.item) && category_of(&engine, h.item) == 1), "{all:?}");
    let vectors: Vec<Vec<f32>> = outfit.iter().map(|&i| engine.index().item_vector(i).unwrap()).collect();
    let query = engine.ocir_query(&vectors, 1).unwrap();
    assert!((dot(&query, &query) - 1.0).abs() < 1e-5);
    // Each item counts by its direction alone.
    let mut scaled = vectors.clone();
    scaled[0].iter_mut().for_each(|x| *x *= 3.0);
    let rescaled = engine.ocir_query(&scaled, 1).unwrap();
    assert!(query.iter().zip(&rescaled).all(|(a, b)| (a - b).abs() < 1e-6), "{query:?} vs {rescaled:?}");
    let expected: Vec<u32> =
        items(&engine.index().exact_search(&query, PER_CATEGORY, Some(1)).unwrap()).into_iter().filter(|i| !outfit.contains(i)).collect();
    assert_eq!(items(&all), expected);
    let best = engine.complete_outfit(&outfit, 1, 3).unwrap();
    assert_eq!(items(&best), expected[..3]);
    // The wanted category changes the query.
    assert!(dot(&query, &engine.ocir_query(&vectors, 2).unwrap()) < 0.999);
}

#[test]
fn category_intent_is_a_sorted_distribution() {
    let engine = engine();
    let heads = CompactHeads::from_bytes(&compact_config(), &contents().heads, "heads").unwrap();
    for text in ["a black dress", "bags"] {
        let intent = engine.category_intent(text).unwrap();
        assert_eq!(intent.len(), CATEGORIES.len());
        assert!((intent.iter().map(|(_, p)| p).sum::<f32>() - 1.0).abs() < 1e-5);
        assert!(intent.windows(2).all(|w| w[0].1 >= w[1].1), "{intent:?}");
        let mut ids: Vec<u16> = intent.iter().map(|(c, _)| *c).collect();
        ids.sort_unstable();
        assert_eq!(ids, [0, 1, 2, 3]);
        // The softmax of the category head's logits.
        let query = Tensor::from_vec(engine.embed_query(text).unwrap(), (1, DIM), &Device::Cpu).unwrap();
        let logits: Vec<f32> = heads.category.logits(&query).unwrap().squeeze(0).unwrap().to_vec1().unwrap();
        let total: f32 = logits.iter().map(|l| l.exp()).sum();
        for (c, p) in intent {
            assert!((p - logits[usize::from(c)].exp() / total).abs() < 1e-5);
        }
    }
}

#[test]
fn bad_queries_and_ids_are_refused() {
    let engine = engine();
    assert!(query_error(engine.search("", 5, None)).contains("empty"));
    assert!(query_error(engine.search(" \t\n", 5, None)).contains("empty"));
    let long = "a ".repeat(MAX_QUERY_BYTES / 2 + 1);
    let err = query_error(engine.search(&long, 5, None));
    assert!(err.contains(&MAX_QUERY_BYTES.to_string()), "{err}");
    assert!(query_error(engine.modify(0, &long, 5)).contains("bytes"));
    // At the limit, a query is searched (and truncated to its tokens).
    assert_eq!(engine.search(&"a ".repeat(MAX_QUERY_BYTES / 2), 5, None).unwrap().len(), 5);

    assert!(query_error(engine.search("a dress", 5, Some(4))).contains("unknown category 4"));
    assert!(query_error(engine.modify(ITEMS as u32, "in red", 5)).contains("unknown item 48"));
    assert!(query_error(engine.complete_outfit(&[], 1, 5)).contains("no items"));
    let many: Vec<u32> = (0..=MAX_OUTFIT_ITEMS as u32).collect();
    assert!(query_error(engine.complete_outfit(&many, 1, 5)).contains("over the limit of 16"));
    assert!(query_error(engine.complete_outfit(&[3, 7, 3], 1, 5)).contains("item 3 is in the outfit twice"));
    assert!(query_error(engine.complete_outfit(&[3, 99], 1, 5)).contains("unknown item 99"));
    assert!(query_error(engine.complete_outfit(&[3], 9, 5)).contains("unknown category 9"));
    assert!(query_error(engine.tgir_query(&[1.0; DIM - 1], "red")).contains("5 dimensions"));
    let mut not_finite = vec![vec![0.0; DIM]];
    not_finite[0][2] = f32::NAN;
    assert!(query_error(engine.ocir_query(&not_finite, 0)).contains("not finite"));
}

#[test]
fn a_model_config_that_does_not_fit_names_its_field() {
    let contents = contents();
    let with = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut bundle = bundle(&contents);
        edit(&mut bundle.contents.model_config);
        match Engine::from_bundle(bundle) {
            Err(e @ EngineError::Config(_)) => e.to_string(),
            Err(other) => panic!("expected a config error, got {other}"),
            Ok(_) => panic!("a config that does not fit was accepted"),
        }
    };
    let err = with(&|c| c["compact"]["dim"] = (DIM + 1).into());
    assert!(err.contains("compact.dim is 7") && err.contains("6 dimensions"), "{err}");
    let err = with(&|c| c["compact"]["categories"] = 5.into());
    assert!(err.contains("compact.categories is 5"), "{err}");
    let err = with(&|c| c["compact"]["teacher_dim"] = 16.into());
    assert!(err.contains("compact.teacher_dim is 16") && err.contains("hidden size is 8"), "{err}");
    let err = with(&|c| c["compact"]["dim"] = 0.into());
    assert!(err.contains("compact.dim is 0"), "{err}");
    let err = with(&|c| c["max_query_tokens"] = 0.into());
    assert!(err.contains("max_query_tokens"), "{err}");
    let err = with(&|c| c["search_ef"] = 0.into());
    assert!(err.contains("search_ef is 0"), "{err}");
    let err = with(&|c| c["search_ef"] = 5000.into());
    assert!(err.contains("search_ef is 5000") && err.contains("1 to 4096"), "{err}");
    let err = with(&|c| {
        c.as_object_mut().unwrap().remove("compact");
    });
    assert!(err.contains("model_config") && err.contains("compact"), "{err}");
}
