//! The int8 ANN index on random clustered unit vectors: recall against exact
//! search, the quantisation error, category filters, a deterministic build,
//! and the byte encoding (round trip; damaged bytes give errors, not panics).

use std::sync::OnceLock;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vitrine_core::index::synthetic::Clusters;
use vitrine_core::index::{exact_search_f32, recall, AnnIndex, BuildParams, IndexError, SearchParams};

const DIM: usize = 256;
const ITEMS: usize = 3000;
const K: usize = 10;

/// Categories: 0 and 1 follow the clusters (even, odd), 2 is every 50th item
/// whatever its cluster (rare and scattered), 3 has four items.
fn category_of(item: usize, cluster: usize) -> u16 {
    match item {
        _ if item % 750 == 1 => 3,
        _ if item % 50 == 0 => 2,
        _ => (cluster % 2) as u16,
    }
}

struct Fixture {
    clusters: Clusters,
    vectors: Vec<f32>,
    index: AnnIndex,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let clusters = Clusters::new(DIM, 40, 1.0, 1);
        let (vectors, labels) = clusters.sample(ITEMS, 2);
        let categories = labels.iter().enumerate().map(|(item, &cluster)| category_of(item, cluster)).collect();
        let index = AnnIndex::build(DIM, &vectors, categories, &BuildParams::default()).unwrap();
        Fixture { clusters, vectors, index }
    })
}

fn queries(count: usize) -> Vec<Vec<f32>> {
    let (values, _) = fixture().clusters.sample(count, 3);
    values.chunks_exact(DIM).map(<[f32]>::to_vec).collect()
}

#[test]
fn recall_at_10_against_exact_search() {
    let Fixture { vectors, index, .. } = fixture();
    let params = SearchParams::default();
    let (mut against_f32, mut against_int8) = (0.0, 0.0);
    let queries = queries(200);
    for query in &queries {
        let found = index.search(query, K, None, &params).unwrap();
        assert_eq!(found.len(), K);
        assert!(found.windows(2).all(|w| w[0].score >= w[1].score), "best first");
        against_f32 += recall(&found, &exact_search_f32(DIM, vectors, query, K));
        against_int8 += recall(&found, &index.exact_search(query, K, None).unwrap());
    }
    let (against_f32, against_int8) = (against_f32 / queries.len() as f64, against_int8 / queries.len() as f64);
    assert!(against_f32 >= 0.95, "recall@10 against exact f32: {against_f32}");
    assert!(against_int8 >= 0.97, "recall@10 against exact int8: {against_int8}");
    // A narrow beam with no re-rank beyond k finds less: the parameters act.
    let narrow = SearchParams { ef: 10, rerank: 10, ..params };
    let narrow_recall: f64 =
        queries.iter().map(|q| recall(&index.search(q, K, None, &narrow).unwrap(), &index.exact_search(q, K, None).unwrap())).sum::<f64>()
            / queries.len() as f64;
    assert!(narrow_recall < against_int8, "ef 10: {narrow_recall}, ef 100: {against_int8}");
}

#[test]
fn scores_are_within_the_quantisation_bound() {
    let Fixture { vectors, index, .. } = fixture();
    for query in queries(5) {
        let l1: f32 = query.iter().map(|x| x.abs()).sum();
        for hit in index.exact_search(&query, ITEMS, None).unwrap() {
            let item = hit.item as usize;
            let exact: f32 = vectors[item * DIM..(item + 1) * DIM].iter().zip(&query).map(|(x, q)| x * q).sum();
            // Each component is off by at most half a step (scale / 2).
            let bound = l1 * index.vectors().scale(item) * 0.5 + 1e-5;
            assert!((hit.score - exact).abs() <= bound, "item {item}: {} vs {exact}, bound {bound}", hit.score);
        }
    }
}

#[test]
fn a_category_filter_still_returns_k_items_of_that_category() {
    let index = &fixture().index;
    let sizes: Vec<usize> = (0..4).map(|c| index.items_in_category(c).len()).collect();
    assert_eq!(sizes[3], 4);
    assert_eq!(sizes[2], ITEMS / 50);
    let through_graph = SearchParams { exact_category_below: 0, ..SearchParams::default() };
    let narrow = SearchParams { ef: 10, rerank: 10, exact_category_below: 0 };
    for params in [SearchParams::default(), through_graph, narrow] {
        let mut total_recall = 0.0;
        let queries = queries(30);
        for query in &queries {
            for category in 0..4u16 {
                let found = index.search(query, K, Some(category), &params).unwrap();
                assert_eq!(found.len(), K.min(sizes[usize::from(category)]), "category {category}, {params:?}");
                assert!(found.iter().all(|hit| index.categories()[hit.item as usize] == category));
                total_recall += recall(&found, &index.exact_search(query, K, Some(category)).unwrap());
            }
        }
        let mean = total_recall / (queries.len() * 4) as f64;
        assert!(mean >= 0.9, "filtered recall@10 {mean} with {params:?}");
    }
    let query = &queries(1)[0];
    assert!(index.search(query, K, Some(9), &SearchParams::default()).unwrap().is_empty(), "an unknown category has no items");
    assert_eq!(index.category_count(), 4);
}

#[test]
fn an_item_finds_itself_first() {
    let index = &fixture().index;
    for item in [0u32, 1234, ITEMS as u32 - 1] {
        let query = index.item_vector(item).unwrap();
        let found = index.search(&query, 5, None, &SearchParams::default()).unwrap();
        assert_eq!(found[0].item, item);
    }
    assert!(index.item_vector(ITEMS as u32).is_none());
}

#[test]
fn bad_queries_are_errors() {
    let index = &fixture().index;
    let params = SearchParams::default();
    assert!(matches!(index.search(&[0.5; 3], K, None, &params), Err(IndexError::QueryDim { got: 3, dim: DIM })));
    let mut nan = vec![0.0; DIM];
    nan[7] = f32::NAN;
    assert!(matches!(index.search(&nan, K, None, &params), Err(IndexError::QueryNotFinite)));
    assert!(index.search(&vec![0.0; DIM], 0, None, &params).unwrap().is_empty());
}

#[test]
fn small_and_empty_indexes() {
    let empty = AnnIndex::build(8, &[], Vec::new(), &BuildParams::default()).unwrap();
    assert!(empty.is_empty());
    assert!(empty.search(&[1.0; 8], K, None, &SearchParams::default()).unwrap().is_empty());
    assert_eq!(AnnIndex::from_bytes(&empty.to_bytes()).unwrap(), empty);

    let vectors = [1.0, 0.0, 0.0, 1.0, 0.6, 0.8];
    let three = AnnIndex::build(2, &vectors, vec![0, 1, 1], &BuildParams::default()).unwrap();
    let found = three.search(&[0.0, 1.0], K, None, &SearchParams::default()).unwrap();
    assert_eq!(found.iter().map(|h| h.item).collect::<Vec<_>>(), [1, 2, 0], "k past the item count gives every item");
    assert!(matches!(
        AnnIndex::build(2, &vectors, vec![0], &BuildParams::default()),
        Err(IndexError::CategoryCount { items: 3, categories: 1 })
    ));
}

#[test]
fn the_same_seed_builds_the_same_bytes() {
    let clusters = Clusters::new(32, 10, 1.0, 7);
    let (vectors, labels) = clusters.sample(600, 8);
    let categories: Vec<u16> = labels.iter().map(|&c| (c % 3) as u16).collect();
    let params = BuildParams { ef_construction: 40, ..BuildParams::default() };
    let build = |params: &BuildParams| AnnIndex::build(32, &vectors, categories.clone(), params).unwrap().to_bytes();
    let first = build(&params);
    assert_eq!(first, build(&params));
    assert_ne!(first, build(&BuildParams { seed: params.seed + 1, ..params }));
}

#[test]
fn the_encoding_round_trips_and_damage_never_panics() {
    let clusters = Clusters::new(16, 8, 1.0, 9);
    let (vectors, labels) = clusters.sample(400, 10);
    let categories: Vec<u16> = labels.iter().map(|&c| (c % 4) as u16).collect();
    let index = AnnIndex::build(16, &vectors, categories, &BuildParams { ef_construction: 40, ..BuildParams::default() }).unwrap();
    let bytes = index.to_bytes();
    let decoded = AnnIndex::from_bytes(&bytes).unwrap();
    assert!(decoded == index, "the decoded index differs");
    let query = &vectors[..16];
    assert_eq!(
        decoded.search(query, K, Some(1), &SearchParams::default()).unwrap(),
        index.search(query, K, Some(1), &SearchParams::default()).unwrap()
    );
    // About 1.3 bytes per int8 code... the graph must not dwarf the vectors.
    assert!(bytes.len() < 400 * 16 * 4, "{} bytes", bytes.len());

    // Bytes after the index are read as a refinement, which these are not.
    let mut extra = bytes.clone();
    extra.extend([0, 0]);
    assert!(matches!(AnnIndex::from_bytes(&extra), Err(IndexError::Invalid(_))));
    assert!(matches!(AnnIndex::from_bytes(&bytes[..bytes.len() - 1]), Err(IndexError::Decode(_))));

    // Random damage: every outcome is an error or an index that searches.
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let (mut rejected, mut accepted) = (0, 0);
    for round in 0..3000 {
        let mut damaged = bytes.clone();
        match round % 3 {
            0 => damaged.truncate(rng.gen_range(0..bytes.len())),
            1 => {
                for _ in 0..rng.gen_range(1..4) {
                    let at = rng.gen_range(0..damaged.len());
                    damaged[at] ^= 1 << rng.gen_range(0..8);
                }
            }
            _ => {
                let at = rng.gen_range(0..damaged.len());
                damaged[at] = rng.gen();
            }
        }
        match AnnIndex::from_bytes(&damaged) {
            Err(_) => rejected += 1,
            Ok(index) => {
                accepted += 1;
                if index.dim() == 16 {
                    for category in [None, Some(0), Some(3)] {
                        index.search(query, K, category, &SearchParams::default()).unwrap();
                    }
                }
            }
        }
    }
    assert!(rejected > 1000 && accepted > 0, "rejected {rejected}, accepted {accepted}");
}

#[test]
fn a_refined_index_scores_within_its_residual_step_and_round_trips() {
    // An odd dimension: the last byte of each refinement row is half padding.
    let dim = 15;
    let clusters = Clusters::new(dim, 6, 1.0, 12);
    let (vectors, labels) = clusters.sample(500, 13);
    let categories: Vec<u16> = labels.iter().map(|&c| (c % 2) as u16).collect();
    let params = BuildParams { ef_construction: 40, ..BuildParams::default() };
    let plain = AnnIndex::build(dim, &vectors, categories.clone(), &params).unwrap();
    let refined = AnnIndex::build(dim, &vectors, categories, &BuildParams { refine: true, ..params }).unwrap();
    let (plain_bytes, refined_bytes) = (plain.to_bytes(), refined.to_bytes());
    // Half a byte per dimension (8 per item) and a scale per item.
    assert!(refined_bytes.len() >= plain_bytes.len() + 500 * (8 + 4), "{} vs {}", refined_bytes.len(), plain_bytes.len());
    let decoded = AnnIndex::from_bytes(&refined_bytes).unwrap();
    assert!(decoded == refined, "the decoded refined index differs");

    let (mut plain_error, mut refined_error) = (0f32, 0f32);
    for query in vectors.chunks_exact(dim).take(20) {
        let l1: f32 = query.iter().map(|x| x.abs()).sum();
        let (plain_hits, refined_hits) = (plain.exact_search(query, 500, None).unwrap(), decoded.exact_search(query, 500, None).unwrap());
        for (p, r) in plain_hits.iter().zip(&refined_hits) {
            let exact = |item: u32| -> f32 { vectors[item as usize * dim..][..dim].iter().zip(query).map(|(x, q)| x * q).sum() };
            plain_error = plain_error.max((p.score - exact(p.item)).abs());
            let (packed, scales) = decoded.vectors().refinement().unwrap();
            assert_eq!(packed.len(), 500 * dim.div_ceil(2));
            // Each component is off by at most half a step of the residual's scale.
            let bound = l1 * scales[r.item as usize] * 0.5 + 1e-5;
            let error = (r.score - exact(r.item)).abs();
            assert!(error <= bound, "item {}: off by {error}, bound {bound}", r.item);
            refined_error = refined_error.max(error);
        }
        assert_eq!(decoded.search(query, K, None, &SearchParams::default()).unwrap()[0].item, refined_hits[0].item);
    }
    assert!(refined_error * 5.0 < plain_error, "refined error {refined_error}, int8 alone {plain_error}");

    // A zero nibble in the refinement is named.
    let mut damaged = refined_bytes.clone();
    let at = plain_bytes.len() + 2;
    damaged[at] &= 0xf0;
    match AnnIndex::from_bytes(&damaged) {
        Err(IndexError::Invalid(reason)) => assert!(reason.contains("nibble 0"), "{reason}"),
        other => panic!("a zero nibble: {:?}", other.map(|_| ())),
    }
}
