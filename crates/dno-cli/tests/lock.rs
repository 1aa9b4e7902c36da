//! One writer per output: a second process on an output being written stops at once, naming the
//! writer's pid; a SIGKILLed writer leaves nothing that blocks the rerun.

mod common;

use common::{dno_cmd as dno, run_ok, s, write_samples};
use dno_data::SampleRow;
use dno_oracle::fake_server::{FakeConfig, FakeServer};
use std::process::Stdio;
use std::time::{Duration, Instant};

fn samples(n: usize, k: usize) -> Vec<SampleRow> {
    let mut rows = Vec::new();
    for p in 0..n {
        for j in 0..k {
            rows.push(SampleRow {
                prompt_id: format!("p{p}"),
                sample_id: format!("p{p}-s{j}"),
                prompt: format!("question {p}"),
                system: None,
                history: None,
                constraints: None,
                answer: None,
                response: format!("answer {j} <<q={j}>>"),
                source: "policy".into(),
                policy: "test".into(),
                sample_index: j as i32,
                seed: 0,
                response_tokens: 0,
                finish_reason: "stop".into(),
                logprob: None,
                repetitive: false,
            });
        }
    }
    rows
}

#[test]
fn second_annotate_on_the_same_output_is_refused_and_a_killed_one_does_not_block() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // A slow judge: 6 prompts x 3 pairs x 2 orders = 36 calls of 150 ms, one at a time.
    let server = rt.block_on(FakeServer::start(FakeConfig { latency_ms: 150, ..FakeConfig::default() })).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("samples.parquet");
    write_samples(&input, samples(6, 3));
    let out = dir.path().join("prefs.parquet");
    let lock = dir.path().join("prefs.parquet.lock");
    let args = ["annotate", "--samples", s(&input), "--out", s(&out), "--oracle", "judge", "--base-url", &server.base_url, "--concurrency", "1"];

    let mut first = dno().args(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let t0 = Instant::now();
    while !std::fs::read_to_string(&lock).is_ok_and(|t| t.contains(&format!("pid {}", first.id()))) || server.requests() == 0 {
        assert!(t0.elapsed() < Duration::from_secs(60), "the first run never started");
        assert!(first.try_wait().unwrap().is_none(), "the first run ended too soon");
        std::thread::sleep(Duration::from_millis(10));
    }
    let second = dno().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success());
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains(&format!("is being written by pid {} (lock {}", first.id(), lock.display())), "{err}");
    assert!(first.try_wait().unwrap().is_none(), "the first run was still writing");

    first.kill().unwrap(); // SIGKILL: no destructor runs, the lock file stays behind
    first.wait().unwrap();
    assert!(lock.exists(), "a SIGKILLed writer leaves its lock file");
    assert!(!out.exists());
    // ... which does not block the rerun, and the rerun removes it.
    run_ok(&args);
    assert!(out.exists());
    assert!(!lock.exists());
}

#[test]
fn every_stage_refuses_an_output_being_written() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let me = std::process::id();
    let x = s(&d.join("missing.parquet")).to_string();
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("s.parquet", vec!["sample", "--model", &x, "--prompts", &x]),
        ("a.parquet", vec!["annotate", "--samples", &x, "--oracle", "verifier"]),
        ("p.parquet", vec!["pair", "--preferences", &x, "--samples", &x]),
        ("train", vec!["train", "--model", &x, "--pairs", &x]),
        ("e.parquet", vec!["eval", "--candidate", &x, "--baseline", &x, "--oracle", "verifier"]),
    ];
    for (out, args) in cases {
        let out = d.join(out);
        let held = dno_data::lock_output(&out).unwrap();
        let o = dno().args(&args).args(["--out", s(&out)]).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?}");
        assert!(err.contains(&format!("is being written by pid {me}")), "{args:?}: {err}");
        drop(held);
        // Without a writer the same command gets past the lock (and fails on the missing input).
        let o = dno().args(&args).args(["--out", s(&out)]).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && !err.contains("is being written"), "{args:?}: {err}");
    }
}
