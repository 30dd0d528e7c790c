//! The ANN index on random clustered unit vectors: build time, size, and per
//! `ef` the recall@10 against exact f32 and exact int8 search with the time
//! per query (one thread); also filtered searches and the brute-force
//! baselines. Prints Markdown; `bench/ann.sh` runs it into bench/results/ann.md.

use std::time::{Duration, Instant};

use clap::Parser;
use vitrine_core::index::synthetic::Clusters;
use vitrine_core::index::{exact_search_f32, recall, AnnIndex, BuildParams, Hit, SearchParams};

#[derive(Parser)]
struct Args {
    /// Catalog sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "11800,100000")]
    items: Vec<usize>,
    #[arg(long, default_value_t = 256)]
    dim: usize,
    /// Items per cluster (on average).
    #[arg(long, default_value_t = 100)]
    cluster_size: usize,
    /// Noise norm around a cluster's centre (1.0: cosine to the centre about 0.7).
    #[arg(long, default_value_t = 1.0)]
    spread: f32,
    #[arg(long, default_value_t = 300)]
    queries: usize,
    #[arg(long, value_delimiter = ',', default_value = "10,20,40,64,100,200")]
    ef: Vec<usize>,
    #[arg(long, default_value_t = 100)]
    ef_construction: usize,
    /// Also build with instant-distance's keep_pruned (more links) and on all threads.
    #[arg(long)]
    variants: bool,
}

/// Runs `search` once per query; returns the results and the per-query times.
fn timed(queries: &[Vec<f32>], mut search: impl FnMut(&[f32]) -> Vec<Hit>) -> (Vec<Vec<Hit>>, Vec<Duration>) {
    queries
        .iter()
        .map(|q| {
            let start = Instant::now();
            let hits = search(q);
            (hits, start.elapsed())
        })
        .unzip()
}

fn micros(mut times: Vec<Duration>) -> (f64, f64, f64) {
    times.sort_unstable();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let mean = times.iter().map(|&d| us(d)).sum::<f64>() / times.len() as f64;
    (mean, us(times[times.len() / 2]), us(times[(times.len() * 99 / 100).min(times.len() - 1)]))
}

fn mean_recall(found: &[Vec<Hit>], reference: &[Vec<Hit>]) -> f64 {
    found.iter().zip(reference).map(|(f, r)| recall(f, r)).sum::<f64>() / found.len() as f64
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    const K: usize = 10;
    for &n in &args.items {
        let clusters = Clusters::new(args.dim, (n / args.cluster_size).max(1), args.spread, 1);
        let (vectors, labels) = clusters.sample(n, 2);
        // Ten categories that follow the clusters (about 10% each) and one of
        // every 100th item whatever its cluster (1%, scattered).
        let categories: Vec<u16> = labels.iter().enumerate().map(|(i, &c)| if i % 100 == 0 { 10 } else { (c % 10) as u16 }).collect();
        let (query_values, _) = clusters.sample(args.queries, 3);
        let queries: Vec<Vec<f32>> = query_values.chunks_exact(args.dim).map(<[f32]>::to_vec).collect();

        println!(
            "## {n} items × {}-d ({} clusters, spread {}), {} queries, k = {K}\n",
            args.dim,
            n / args.cluster_size,
            args.spread,
            queries.len()
        );
        let mut builds = vec![("one thread (deterministic), keep_pruned off: the default", BuildParams::default())];
        if args.variants {
            builds.push(("all threads, keep_pruned off", BuildParams { parallel: true, ..BuildParams::default() }));
            builds.push(("one thread, keep_pruned on", BuildParams { keep_pruned: true, ..BuildParams::default() }));
        }
        let (exact_f32, f32_times) = timed(&queries, |q| exact_search_f32(args.dim, &vectors, q, K));
        let mut default_index = None;
        for (name, params) in builds {
            let params = BuildParams { ef_construction: args.ef_construction, ..params };
            let start = Instant::now();
            let index = AnnIndex::build(args.dim, &vectors, categories.clone(), &params)?;
            let build = start.elapsed();
            let bytes = index.to_bytes().len();
            let vector_bytes = n * (args.dim + 4);
            let links: usize = index.graph().layers().iter().map(|l| l.links()).sum();
            println!("### build: {name}, ef_construction {}\n", args.ef_construction);
            println!(
                "- build {:.1} s; index part {:.2} MB: vectors {:.2} MB (int8 + scale), graph and categories {:.2} MB ({} layers, {:.1} links per item)",
                build.as_secs_f64(),
                bytes as f64 / 1e6,
                vector_bytes as f64 / 1e6,
                (bytes - vector_bytes) as f64 / 1e6,
                index.graph().layers().len(),
                links as f64 / n as f64
            );
            let (exact_int8, int8_times) = timed(&queries, |q| index.exact_search(q, K, None).unwrap());
            println!("\n| ef | recall@10 vs exact f32 | recall@10 vs exact int8 | µs/query mean | p50 | p99 |\n|---|---|---|---|---|---|");
            for &ef in &args.ef {
                let params = SearchParams { ef, rerank: ef, ..SearchParams::default() };
                let (found, times) = timed(&queries, |q| index.search(q, K, None, &params).unwrap());
                let (mean, p50, p99) = micros(times);
                println!(
                    "| {ef} | {:.4} | {:.4} | {mean:.0} | {p50:.0} | {p99:.0} |",
                    mean_recall(&found, &exact_f32),
                    mean_recall(&found, &exact_int8)
                );
            }
            let (mean, _, _) = micros(int8_times);
            println!("| exact int8 (brute force) | {:.4} | 1 | {mean:.0} | | |", mean_recall(&exact_int8, &exact_f32));
            let (mean, _, _) = micros(f32_times.clone());
            println!("| exact f32 (brute force, a plain reference loop) | 1 | | {mean:.0} | | |\n");
            default_index.get_or_insert(index);
        }

        let index = default_index.expect("the default build runs first");
        let threshold = SearchParams::default().exact_category_below;
        println!("### category filter (ef 100; by default a category of at most {threshold} items is searched exactly)\n");
        println!("| category | items | path | recall@10 vs exact int8 in the category | µs/query mean | p99 |\n|---|---|---|---|---|---|");
        for (category, name) in [(0u16, "follows clusters"), (10, "every 100th item")] {
            let size = index.items_in_category(category).len();
            let exact: Vec<Vec<Hit>> = queries.iter().map(|q| index.exact_search(q, K, Some(category)).unwrap()).collect();
            let through_graph = SearchParams { exact_category_below: 0, ..SearchParams::default() };
            let exhaustive = SearchParams { exact_category_below: usize::MAX, ..SearchParams::default() };
            for (path, params) in [("graph, over-fetched", through_graph), ("exact over the category's items", exhaustive)] {
                let (found, times) = timed(&queries, |q| index.search(q, K, Some(category), &params).unwrap());
                assert!(found.iter().all(|hits| hits.len() == K));
                let (mean, _, p99) = micros(times);
                println!("| {category} ({name}) | {size} | {path} | {:.4} | {mean:.0} | {p99:.0} |", mean_recall(&found, &exact));
            }
        }
        println!();
    }
    Ok(())
}
