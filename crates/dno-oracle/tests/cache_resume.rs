//! The answer cache as resume mechanism.

mod common;
use common::*;

use dno_oracle::fake_server::{FakeConfig, Fault, Reply};
use dno_oracle::{annotate, Cache, Judge, JudgeConfig, JudgeMode, Oracle, RunOptions};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn judge_oracle(base_url: &str, mode: JudgeMode) -> Oracle {
    Oracle::Judge(Arc::new(
        Judge::new(fast_client(base_url, 16), JudgeConfig { mode, max_parse_attempts: 2, ..Default::default() }).unwrap(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_run_makes_zero_calls_in_both_modes() {
    for mode in [JudgeMode::Pairwise, JudgeMode::Score] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out").join("judge-cache.jsonl");
        let srv = server(FakeConfig::default()).await;
        let items = items(12, 3);
        let opts = RunOptions::default();

        let cache = Cache::open(&path).unwrap();
        let first = annotate::run(&judge_oracle(&srv.base_url, mode), items.clone(), Some(&cache), &opts, |_| {})
            .await
            .unwrap();
        let paid = srv.requests();
        assert!(paid > 0);
        assert!(first.judgments.iter().all(|j| !j.cached));
        drop(cache);

        // A new process: fresh client and a cache reloaded from disk.
        let cache = Cache::open(&path).unwrap();
        let second = annotate::run(&judge_oracle(&srv.base_url, mode), items.clone(), Some(&cache), &opts, |_| {})
            .await
            .unwrap();
        assert_eq!(srv.requests(), paid, "{mode}: the rerun paid for cached answers");
        assert_eq!(second.accounting.calls, 0);
        assert_eq!(second.accounting.cache_hits, if mode == JudgeMode::Score { 12 } else { 12 * 6 * 2 });
        assert!(second.judgments.iter().all(|j| j.cached));
        assert_eq!(comparable(&first.judgments), comparable(&second.judgments));
        assert_eq!(first.judgments.iter().map(|j| j.raw.clone()).collect::<Vec<_>>(),
                   second.judgments.iter().map(|j| j.raw.clone()).collect::<Vec<_>>());

        // The estimate sees everything cached.
        let e = annotate::estimate(&judge_oracle(&srv.base_url, mode), &items, Some(&cache), &opts);
        assert_eq!(e.calls, 0);
        assert!(e.cached_calls > 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_not_cached_and_are_retried_on_rerun() {
    let broken = Arc::new(AtomicBool::new(true));
    let b = broken.clone();
    // Prompt 3 gets unparsable answers while `broken` is set.
    let srv = server(FakeConfig {
        override_fn: Some(Arc::new(move |r: &serde_json::Value| {
            let text = r["messages"][0]["content"].as_str().unwrap_or("");
            (b.load(Ordering::SeqCst) && text.contains("Question number 3?")).then_some(Reply::Fault(Fault::WrongFormat))
        })),
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.jsonl");
    let items = items(6, 1); // one sample + reference: one pair, two orders per prompt
    let opts = RunOptions::default();

    let cache = Cache::open(&path).unwrap();
    let first = annotate::run(&judge_oracle(&srv.base_url, JudgeMode::Pairwise), items.clone(), Some(&cache), &opts, |_| {})
        .await
        .unwrap();
    assert_eq!(first.judgments.len(), 5);
    assert_eq!(first.failures.len(), 1);
    assert_eq!(first.failures[0].prompt_id, "prompt-3");
    assert!(first.failures[0].error.contains("no verdict"));
    assert_eq!(cache.len(), 10, "only the 10 answered orders are cached");
    drop(cache);

    broken.store(false, Ordering::SeqCst);
    let before = srv.requests();
    let cache = Cache::open(&path).unwrap();
    let second = annotate::run(&judge_oracle(&srv.base_url, JudgeMode::Pairwise), items.clone(), Some(&cache), &opts, |_| {})
        .await
        .unwrap();
    assert!(second.failures.is_empty());
    assert_eq!(second.judgments.len(), 6);
    assert_eq!(srv.requests() - before, 2, "only prompt-3's two orders are asked again");
    assert_eq!(second.accounting.calls, 2);
    let j3 = second.judgments.iter().find(|j| j.prompt_id == "prompt-3").unwrap();
    assert!(!j3.cached);
    assert_eq!(j3.p_a, expected_p(quality(3, 0), 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_write_resumes_paying_only_the_lost_answer() {
    let srv = server(FakeConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.jsonl");
    let items = items(8, 2);
    let opts = RunOptions::default();
    {
        let cache = Cache::open(&path).unwrap();
        annotate::run(&judge_oracle(&srv.base_url, JudgeMode::Pairwise), items.clone(), Some(&cache), &opts, |_| {})
            .await
            .unwrap();
    }
    let paid = srv.requests();
    // Simulate SIGKILL during the last append: cut the file in the middle of its last line.
    let bytes = std::fs::read(&path).unwrap();
    let cut = bytes.len() - 25;
    // And a garbage line elsewhere (e.g. a disk hiccup) is skipped, not fatal.
    let mut torn = b"not json at all\n".to_vec();
    torn.extend_from_slice(&bytes[..cut]);
    std::fs::write(&path, &torn).unwrap();

    let cache = Cache::open(&path).unwrap();
    assert_eq!(cache.len(), 8 * 3 * 2 - 1);
    let out = annotate::run(&judge_oracle(&srv.base_url, JudgeMode::Pairwise), items.clone(), Some(&cache), &opts, |_| {})
        .await
        .unwrap();
    assert_eq!(srv.requests() - paid, 1, "only the torn entry is paid again");
    assert_eq!(out.judgments.len(), 8 * 3);
    assert!(out.failures.is_empty());
    drop(cache);
    assert_eq!(Cache::open(&path).unwrap().len(), 8 * 3 * 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_response_or_template_misses_the_cache() {
    let srv = server(FakeConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path().join("c.jsonl")).unwrap();
    let mut items = items(2, 1);
    let opts = RunOptions::default();
    let o = judge_oracle(&srv.base_url, JudgeMode::Pairwise);
    annotate::run(&o, items.clone(), Some(&cache), &opts, |_| {}).await.unwrap();
    let paid = srv.requests();
    items[1].candidates[0].text.push_str(" (edited)");
    annotate::run(&o, items.clone(), Some(&cache), &opts, |_| {}).await.unwrap();
    assert_eq!(srv.requests() - paid, 2, "the edited response must be judged again (both orders)");
    // A different judge config (logprobs on) has a different fingerprint: everything is new.
    let o2 = Oracle::Judge(Arc::new(
        Judge::new(fast_client(&srv.base_url, 4), JudgeConfig { logprobs: true, ..Default::default() }).unwrap(),
    ));
    let e = annotate::estimate(&o2, &items, Some(&cache), &opts);
    assert_eq!((e.calls, e.cached_calls), (4, 0));
}

const KILL_URL: &str = "DNO_ORACLE_SIGKILL_CHILD_URL";
const KILL_CACHE: &str = "DNO_ORACLE_SIGKILL_CHILD_CACHE";

/// Child half of `sigkill_then_rerun_pays_only_what_is_missing` (re-invoked by the parent test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn sigkill_child() {
    let (Ok(url), Ok(path)) = (std::env::var(KILL_URL), std::env::var(KILL_CACHE)) else { return };
    let cache = Cache::open_with(&path, 16).unwrap();
    let o = judge_oracle(&url, JudgeMode::Pairwise);
    annotate::run(&o, items(200, 3), Some(&cache), &RunOptions::default(), |_| {}).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_then_rerun_pays_only_what_is_missing() {
    let srv = server(FakeConfig { latency_ms: 2, ..Default::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.jsonl");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "sigkill_child", "--test-threads", "1"])
        .env(KILL_URL, &srv.base_url)
        .env(KILL_CACHE, &path)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    loop {
        let lines = std::fs::read(&path).map(|b| b.iter().filter(|&&c| c == b'\n').count()).unwrap_or(0);
        if lines >= 300 {
            break;
        }
        assert!(t.elapsed().as_secs() < 60, "child made no progress");
        assert!(child.try_wait().unwrap().is_none(), "child finished before it could be killed");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let total_calls = 200 * 6 * 2;
    let cache = Cache::open(&path).unwrap();
    let answered = cache.len();
    assert!((300..total_calls).contains(&answered), "answered {answered}");
    // Requests the child sent before it died may still sit in the server's socket buffers; on a
    // loaded machine the server counts them after the kill. Wait until the count settles.
    let mut before = srv.requests();
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let now = srv.requests();
        if now == before {
            break;
        }
        before = now;
    }
    let out = annotate::run(&judge_oracle(&srv.base_url, JudgeMode::Pairwise), items(200, 3), Some(&cache), &RunOptions::default(), |_| {})
        .await
        .unwrap();
    assert!(out.failures.is_empty());
    assert_eq!(out.judgments.len(), 200 * 6);
    assert_eq!(srv.requests() - before, (total_calls - answered) as u64, "rerun paid for answers already in the cache");
    assert_eq!(out.accounting.cache_hits as usize, answered);
}
