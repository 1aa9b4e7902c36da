//! Command oracle (JSONL over stdin/stdout), see PROTOCOL.md.

use dno_oracle::command::{CommandConfig, CommandOracle, Program, Request};
use dno_oracle::{annotate, Cache, Candidate, Item, Oracle, RunOptions};
use std::sync::Arc;

/// Prefers the longer response; ties are ½. Also checks the request fields.
const PY_ORACLE: &str = r#"
import json, sys
while True:
    line = sys.stdin.readline()
    if not line:
        break
    r = json.loads(line)
    for f in ("prompt_id", "prompt", "sample_a", "response_a", "sample_b", "response_b", "answer"):
        assert f in r, f
    a, b = len(r["response_a"]), len(r["response_b"])
    print(json.dumps({"p_a": 1.0 if a > b else 0.0 if a < b else 0.5}), flush=True)
"#;

fn items(n: usize) -> Vec<Item> {
    (0..n)
        .map(|p| Item {
            prompt_id: format!("p{p}"),
            prompt: format!("prompt {p}"),
            answer: Some("42".into()),
            constraints: None,
            candidates: (0..4)
                .map(|c| Candidate {
                    sample_id: format!("p{p}s{c}"),
                    text: "x".repeat(1 + (p * 3 + c * 5) % 7),
                    is_reference: false,
                })
                .collect(),
        })
        .collect()
}

fn script(dir: &std::path::Path) -> String {
    let p = dir.join("oracle.py");
    std::fs::write(&p, PY_ORACLE).unwrap();
    format!("python3 {}", p.display())
}

async fn check_length_oracle(cfg: CommandConfig, dir: &std::path::Path) {
    let items = items(7);
    let cache_path = dir.join(format!("cache-persistent-{}.jsonl", cfg.persistent));
    let oracle = Oracle::Command(Arc::new(CommandOracle::new(cfg).unwrap()));
    let cache = Cache::open(cache_path).unwrap();
    let out = annotate::run(&oracle, items.clone(), Some(&cache), &RunOptions::default(), |_| {}).await.unwrap();
    assert!(out.failures.is_empty(), "{:?}", out.failures);
    assert_eq!(out.judgments.len(), 7 * 6);
    for j in &out.judgments {
        let it = items.iter().find(|i| i.prompt_id == j.prompt_id).unwrap();
        let len = |s: &str| it.candidates.iter().find(|c| c.sample_id == s).unwrap().text.len();
        let (a, b) = (len(&j.sample_a), len(&j.sample_b));
        assert_eq!(j.p_a, if a > b { 1.0 } else if a < b { 0.0 } else { 0.5 });
    }
    assert_eq!(out.accounting.calls, 42);
    // Rerun: everything from the cache.
    let again = annotate::run(&oracle, items, Some(&cache), &RunOptions::default(), |_| {}).await.unwrap();
    assert_eq!(again.accounting.calls, 0);
    assert_eq!(again.accounting.cache_hits, 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_oracle_one_process_per_batch() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = CommandConfig { batch_size: 5, ..CommandConfig::shell(script(dir.path())) };
    check_length_oracle(cfg, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_oracle_persistent_process() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = CommandConfig { batch_size: 5, persistent: true, ..CommandConfig::shell(script(dir.path())) };
    check_length_oracle(cfg, dir.path()).await;
}

fn req(i: usize) -> Request {
    Request {
        prompt_id: format!("p{i}"),
        prompt: "q".into(),
        sample_a: "a".into(),
        response_a: "ra".into(),
        sample_b: "b".into(),
        response_b: "rb".into(),
        answer: None,
    }
}

async fn batch_err(cmd: &str, persistent: bool) -> String {
    let o = CommandOracle::new(CommandConfig { persistent, batch_timeout_secs: 1.0, ..CommandConfig::shell(cmd) }).unwrap();
    o.run_batch(&[req(0), req(1), req(2)]).await.unwrap_err().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_output_is_a_clear_error() {
    // sh only: read each line, answer per the case.
    let ok = r#"while IFS= read -r l; do echo '{"p_a": 0.25}'; done"#;
    let o = CommandOracle::new(CommandConfig::shell(ok)).unwrap();
    assert_eq!(o.run_batch(&[req(0), req(1)]).await.unwrap(), vec![0.25, 0.25]);
    let argv = CommandOracle::new(CommandConfig {
        program: Program::Argv(vec!["sh".into(), "-c".into(), ok.into()]),
        ..CommandConfig::shell("unused")
    })
    .unwrap();
    assert_eq!(argv.run_batch(&[req(0)]).await.unwrap(), vec![0.25]);

    for persistent in [false, true] {
        let e = batch_err(r#"n=0; while IFS= read -r l; do n=$((n+1)); if [ $n = 2 ]; then echo 'oops'; else echo '{"p_a": 1}'; fi; done"#, persistent).await;
        assert!(e.contains("line 2") && e.contains("not JSON") && e.contains("p1"), "{e}");
        let e = batch_err(r#"while IFS= read -r l; do echo '{"p_a": 1.5}'; done"#, persistent).await;
        assert!(e.contains("line 1") && e.contains("outside [0, 1]"), "{e}");
        let e = batch_err(r#"while IFS= read -r l; do echo '{"score": 1}'; done"#, persistent).await;
        assert!(e.contains("no numeric field p_a"), "{e}");
    }
    let e = batch_err(r#"read -r l; echo '{"p_a": 1}'"#, false).await;
    assert!(e.contains("printed 1 answer line(s) for a batch of 3"), "{e}");
    let e = batch_err(r#"read -r l; echo '{"p_a": 1}'"#, true).await;
    assert!(e.contains("after answering 1 of 3"), "{e}");
    let e = batch_err(r#"cat > /dev/null; echo 'model not found' >&2; exit 3"#, false).await;
    assert!(e.contains("exit status: 3") && e.contains("model not found"), "{e}");
    let e = batch_err(r#"cat > /dev/null; exec sleep 5"#, false).await;
    assert!(e.contains("did not finish a batch of 3 within 1s"), "{e}");
    let e = batch_err(r#"exec sleep 5"#, true).await;
    assert!(e.contains("did not answer a batch of 3 within 1s"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_process_restarts_after_a_bad_batch() {
    // Crashes on the request whose prompt_id is p1; a fresh process serves the next batch.
    let cmd = r#"while IFS= read -r l; do case "$l" in *'"p1"'*) exit 1;; esac; echo '{"p_a": 0.5}'; done"#;
    let o = CommandOracle::new(CommandConfig { persistent: true, ..CommandConfig::shell(cmd) }).unwrap();
    assert!(o.run_batch(&[req(0), req(1)]).await.is_err());
    assert_eq!(o.run_batch(&[req(2), req(3)]).await.unwrap(), vec![0.5, 0.5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_turns_command_errors_into_failures_then_stops() {
    let o = Oracle::Command(Arc::new(CommandOracle::new(CommandConfig::shell("cat > /dev/null; exit 2")).unwrap()));
    let opts = RunOptions { max_consecutive_failures: 10, ..Default::default() };
    let err = annotate::run(&o, items(5), None, &opts, |_| {}).await.unwrap_err().to_string();
    assert!(err.contains("consecutive oracle failures") && err.contains("exit status: 2"), "{err}");
    let opts = RunOptions { max_consecutive_failures: 0, ..Default::default() };
    let out = annotate::run(&o, items(2), None, &opts, |_| {}).await.unwrap();
    assert_eq!(out.failures.len(), 12);
    assert!(out.judgments.is_empty());
}
