//! Judge throughput against an instant in-process fake OpenAI server (client + server share the
//! machine, so this measures the toolkit's own overhead: HTTP, JSON, parsing, cache, driver).
//!
//! `cargo run --release -p dno-oracle --example bench_judge -- [--items N] [--concurrency C]`

use dno_oracle::fake_server::{FakeConfig, FakeServer};
use dno_oracle::{annotate, Cache, Candidate, Client, ClientConfig, Item, Judge, JudgeConfig, JudgeMode, Oracle, RunOptions};
use std::sync::Arc;

fn items(n: usize, k: usize) -> Vec<Item> {
    (0..n)
        .map(|p| {
            let mut c: Vec<Candidate> = (0..k)
                .map(|s| Candidate {
                    sample_id: format!("p{p}-s{s}"),
                    text: format!("Sample {s} for prompt {p}: a response of typical length. {} <<q={}>>", "word ".repeat(60), (p + 3 * s) % 7),
                    is_reference: false,
                })
                .collect();
            c.push(Candidate { sample_id: format!("p{p}-ref"), text: format!("Reference {p}. <<q=5>>"), is_reference: true });
            Item { prompt_id: format!("prompt-{p}"), prompt: format!("Explain topic number {p} briefly."), answer: None, constraints: None, candidates: c }
        })
        .collect()
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n_items = arg("--items", 400);
    let concurrency = arg("--concurrency", 64);
    let srv = FakeServer::start(FakeConfig::default()).await?;
    let client = Arc::new(Client::new(ClientConfig {
        base_url: srv.base_url.clone(),
        model: "fake".into(),
        api_key_env: "DNO_BENCH_NO_KEY".into(),
        max_concurrency: concurrency,
        timeout_secs: 30.0,
        ..Default::default()
    })?);
    let dir = tempfile::tempdir()?;
    let data = items(n_items, 4);
    let opts = RunOptions { max_items_in_flight: 256, keep_raw: true, ..Default::default() };

    println!("fake server at {}, {} items x 5 candidates (4 samples + reference), all pairs, concurrency {concurrency}", srv.base_url, n_items);
    println!("{:<28} {:>7} {:>10} {:>8} {:>12} {:>10}", "run", "calls", "judgments", "secs", "judgments/s", "calls/s");
    // Warm-up (connection pool).
    let warm = Oracle::Judge(Arc::new(Judge::new(client.clone(), JudgeConfig::default())?));
    annotate::run(&warm, items(8, 4), None, &opts, |_| {}).await?;

    let rows: Vec<(&str, JudgeMode, Option<&str>)> = vec![
        ("pairwise, no cache", JudgeMode::Pairwise, None),
        ("pairwise, cache (fresh)", JudgeMode::Pairwise, Some("pw.jsonl")),
        ("pairwise, cache (all hits)", JudgeMode::Pairwise, Some("pw.jsonl")),
        ("score, no cache", JudgeMode::Score, None),
    ];
    for (label, mode, cache_name) in rows {
        let oracle = Oracle::Judge(Arc::new(Judge::new(client.clone(), JudgeConfig { mode, ..Default::default() })?));
        let cache = cache_name.map(|n| Cache::open(dir.path().join(n))).transpose()?;
        let out = annotate::run(&oracle, data.clone(), cache.as_ref(), &opts, |_| {}).await?;
        anyhow::ensure!(out.failures.is_empty(), "benchmark run had failures: {:?}", &out.failures[..1]);
        let secs = out.accounting.wall_secs;
        println!(
            "{:<28} {:>7} {:>10} {:>8.3} {:>12.0} {:>10.0}",
            label,
            out.accounting.calls,
            out.judgments.len(),
            secs,
            out.judgments.len() as f64 / secs,
            out.accounting.calls as f64 / secs
        );
    }
    Ok(())
}
