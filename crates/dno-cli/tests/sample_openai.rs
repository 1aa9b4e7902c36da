//! `dno sample --engine openai` against a local OpenAI-compatible server that injects faults
//! (429 with Retry-After, 500, timeouts, truncated or garbage JSON, dropped connections): every
//! sample must still arrive exactly once, with deterministic ids.

mod common;
use common::*;
use dno_oracle::fake_server::{FakeConfig, FakeServer, Fault, Reply};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_engine_survives_server_faults() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().to_path_buf();
    let lines: String = (0..20).map(|i| format!("{{\"id\":\"q{i}\",\"prompt\":\"question {i}\",\"reference\":\"gold {i}\"}}\n")).collect();
    write(&p.join("p.jsonl"), &lines);
    ok(&["prompts", "import", "p.jsonl", "--out", "p.parquet", "--reference-field", "reference"], &p);

    // About 30% of requests get a fault (the override decides, so it also picks the faults).
    let faults = [
        Fault::RateLimited { retry_after_secs: 0.05 },
        Fault::ServerError,
        Fault::Slow { ms: 3000 },
        Fault::TruncatedJson,
        Fault::Garbage,
        Fault::Disconnect,
    ];
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let injected = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (c, inj) = (counter.clone(), injected.clone());
    let cfg = FakeConfig {
        override_fn: Some(Arc::new(move |body: &serde_json::Value| {
            let n = c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
            if h % 10 < 3 {
                inj.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                return Some(Reply::Fault(faults[(h / 10 % faults.len() as u64) as usize].clone()));
            }
            let user = body["messages"].as_array()?.last()?["content"].as_str()?.to_string();
            Some(Reply::Text(format!("an answer to {user}")))
        })),
        ..FakeConfig::default()
    };
    let server = FakeServer::start(cfg).await.unwrap();
    let url = server.base_url.clone();
    let run = |out: &'static str| {
        let (p, url) = (p.clone(), url.clone());
        tokio::task::spawn_blocking(move || {
            dno(
                &["sample", "--engine", "openai", "--base-url", &url, "--api-model", "fake", "--prompts", "p.parquet", "--out", out, "-k", "3",
                  "--timeout", "1", "--max-retries", "20", "--concurrency", "8", "--include-reference"],
                &p,
            )
        })
    };
    let o = run("s.parquet").await.unwrap();
    assert!(o.status.success(), "sample failed: {}", String::from_utf8_lossy(&o.stderr));
    let (_, rows) = dno_data::read_validated::<dno_data::SampleRow>(&[p.join("s.parquet")]).unwrap();
    assert_eq!(rows.len(), 20 * 4);
    for r in rows.iter().filter(|r| r.source == "policy") {
        assert_eq!(r.response, format!("an answer to {}", r.prompt), "{r:?}");
    }
    assert!(injected.load(std::sync::atomic::Ordering::SeqCst) >= 10, "too few faults were injected");
    // Same command, same sample ids.
    let o = run("t.parquet").await.unwrap();
    assert!(o.status.success());
    let (_, again) = dno_data::read_validated::<dno_data::SampleRow>(&[p.join("t.parquet")]).unwrap();
    let ids = |v: &[dno_data::SampleRow]| v.iter().map(|r| r.sample_id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&rows), ids(&again));
}
