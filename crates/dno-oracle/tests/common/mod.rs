#![allow(dead_code)]
//! Shared helpers for the integration tests.

use dno_oracle::fake_server::{FakeConfig, FakeServer};
use dno_oracle::{Candidate, Client, ClientConfig, Item, Judgment};
use std::collections::HashMap;
use std::sync::Arc;

/// Quality of candidate `c` of prompt `p`: a deterministic spread over 0..=7 (7 clamps to 6 in
/// score mode), with repeats so ties happen.
pub fn quality(p: usize, c: usize) -> i64 {
    ((p * 7 + c * 3 + (p * c) % 5) % 8) as i64
}

/// `n` items with `k` samples plus one reference each.
pub fn items(n: usize, k: usize) -> Vec<Item> {
    (0..n)
        .map(|p| {
            let mut candidates: Vec<Candidate> = (0..k)
                .map(|c| Candidate {
                    sample_id: format!("p{p}-s{c}"),
                    text: format!("Sample {c} for prompt {p}. <<q={}>>", quality(p, c)),
                    is_reference: false,
                })
                .collect();
            candidates.push(Candidate {
                sample_id: format!("p{p}-ref"),
                text: format!("Reference answer for prompt {p}. <<q=5>>"),
                is_reference: true,
            });
            Item { prompt_id: format!("prompt-{p}"), prompt: format!("Question number {p}?"), answer: None, constraints: None, candidates }
        })
        .collect()
}

/// Quality of a candidate from its text marker.
pub fn q_of(item: &Item, sample_id: &str) -> i64 {
    let c = item.candidates.iter().find(|c| c.sample_id == sample_id).expect("known sample");
    dno_oracle::fake_server::qualities(&c.text)[0]
}

pub fn expected_p(qa: i64, qb: i64) -> f64 {
    if qa > qb {
        1.0
    } else if qa < qb {
        0.0
    } else {
        0.5
    }
}

pub fn fast_client(base_url: &str, concurrency: usize) -> Arc<Client> {
    Arc::new(
        Client::new(ClientConfig {
            base_url: base_url.to_string(),
            model: "fake-judge".into(),
            api_key_env: "DNO_TEST_NO_SUCH_KEY".into(),
            timeout_secs: 5.0,
            max_concurrency: concurrency,
            max_retries: 10,
            backoff_base_secs: 0.001,
            backoff_max_secs: 0.02,
            ..Default::default()
        })
        .expect("client"),
    )
}

pub async fn server(cfg: FakeConfig) -> FakeServer {
    FakeServer::start(cfg).await.expect("fake server starts")
}

/// Index items by prompt id.
pub fn by_prompt(items: &[Item]) -> HashMap<String, Item> {
    items.iter().map(|i| (i.prompt_id.clone(), i.clone())).collect()
}

/// Strips the fields that legitimately differ between a fresh and a cached run.
/// (prompt, a, b, p_a bits, p_ab bits, p_ba bits, score_a bits)
pub type Comparable = (String, String, String, u64, Option<u64>, Option<u64>, Option<u64>);

pub fn comparable(j: &[Judgment]) -> Vec<Comparable> {
    j.iter()
        .map(|j| {
            (
                j.prompt_id.clone(),
                j.sample_a.clone(),
                j.sample_b.clone(),
                j.p_a.to_bits(),
                j.p_ab.map(f64::to_bits),
                j.p_ba.map(f64::to_bits),
                j.score_a.map(f64::to_bits),
            )
        })
        .collect()
}
