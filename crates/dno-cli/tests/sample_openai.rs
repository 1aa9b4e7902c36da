//! `dno sample --engine openai` against a local OpenAI-compatible server that injects faults
//! (429 with Retry-After, 500, timeouts, truncated or garbage JSON, dropped connections, null
//! content, wrong-shape bodies): every sample must still arrive exactly once, with deterministic
//! ids; --top-k / --min-p reach the server; several servers share the work, one of them dying.

mod common;
use common::*;
use dno_oracle::fake_server::{FakeConfig, FakeServer, Fault, Reply};
use std::sync::Arc;

/// The fake server's answer to a sampling request: `an answer to <the user message>`.
fn answer_to(body: &serde_json::Value) -> Option<Reply> {
    let user = body["messages"].as_array()?.last()?["content"].as_str()?.to_string();
    Some(Reply::Text(format!("an answer to {user}")))
}

fn import_prompts(p: &std::path::Path, n: usize) {
    let lines: String = (0..n).map(|i| format!("{{\"id\":\"q{i}\",\"prompt\":\"question {i}\"}}\n")).collect();
    write(&p.join("p.jsonl"), &lines);
    ok(&["prompts", "import", "p.jsonl", "--out", "p.parquet"], p);
}

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
        Fault::NullContent,
        Fault::WrongShape,
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
            answer_to(body)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_engine_sends_top_k_and_min_p_only_when_set() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().to_path_buf();
    import_prompts(&p, 2);
    let server = FakeServer::start(FakeConfig { override_fn: Some(Arc::new(answer_to)), ..FakeConfig::default() }).await.unwrap();
    let url = server.base_url.clone();
    let run = |out: &'static str, extra: &'static [&'static str]| {
        let (p, url) = (p.clone(), url.clone());
        tokio::task::spawn_blocking(move || {
            let mut args = vec!["sample", "--engine", "openai", "--base-url", &url, "--api-model", "fake", "--prompts", "p.parquet", "--out", out, "-k", "1"];
            args.extend_from_slice(extra);
            dno(&args, &p)
        })
    };
    let o = run("a.parquet", &["--top-k", "20", "--min-p", "0.05"]).await.unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let body = server.stats.last_body.lock().unwrap().clone().unwrap();
    assert_eq!(body["top_k"], 20, "{body}");
    assert!((body["min_p"].as_f64().unwrap() - 0.05).abs() < 1e-6, "{body}");
    // Off by default: not sent, the server's default applies.
    let o = run("b.parquet", &[]).await.unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let body = server.stats.last_body.lock().unwrap().clone().unwrap();
    assert!(body.get("top_k").is_none() && body.get("min_p").is_none(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_engine_round_robin_survives_a_dying_server() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().to_path_buf();
    import_prompts(&p, 20);
    let cfg = |die: Option<u64>| FakeConfig { override_fn: Some(Arc::new(answer_to)), latency_ms: 5, die_after_requests: die, ..FakeConfig::default() };
    let servers = [
        FakeServer::start(cfg(None)).await.unwrap(),
        FakeServer::start(cfg(Some(6))).await.unwrap(),
        FakeServer::start(cfg(None)).await.unwrap(),
    ];
    let urls = servers.iter().map(|s| s.base_url.clone()).collect::<Vec<_>>().join(",");
    let pp = p.clone();
    let o = tokio::task::spawn_blocking(move || {
        dno(
            &["sample", "--engine", "openai", "--base-url", &urls, "--api-model", "fake", "--prompts", "p.parquet", "--out", "s.parquet",
              "-k", "3", "--timeout", "2", "--max-retries", "4", "--concurrency", "4"],
            &pp,
        )
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "sample failed: {stderr}");
    let (_, rows) = dno_data::read_validated::<dno_data::SampleRow>(&[p.join("s.parquet")]).unwrap();
    assert_eq!(rows.len(), 60);
    let ids: std::collections::HashSet<_> = rows.iter().map(|r| r.sample_id.clone()).collect();
    assert_eq!(ids.len(), 60, "each sample exactly once");
    for r in &rows {
        assert_eq!(r.response, format!("an answer to {}", r.prompt), "{r:?}");
    }
    let served: Vec<u64> = servers.iter().map(|s| s.stats.ok.load(std::sync::atomic::Ordering::SeqCst)).collect();
    assert_eq!(served[1], 6, "the dying server answered until it died: {served:?}");
    assert!(served[0] >= 20 && served[2] >= 20, "the live servers shared the rest: {served:?}");
    assert!(stderr.contains("out of the rotation"), "{stderr}");
}
