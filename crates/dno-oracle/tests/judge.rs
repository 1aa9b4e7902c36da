//! LLM judge against the in-process fake OpenAI server, with fault injection.

mod common;
use common::*;

use dno_oracle::fake_server::{FakeConfig, Fault, Reply};
use dno_oracle::{
    annotate, select_pairs, Client, ClientConfig, Judge, JudgeConfig, JudgeMode, Oracle, PairSpec, RunOptions,
};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

fn all_faults() -> Vec<Fault> {
    vec![
        Fault::RateLimited { retry_after_secs: 0.0 },
        Fault::ServerError,
        Fault::Slow { ms: 600 },
        Fault::TruncatedJson,
        Fault::Garbage,
        Fault::WrongFormat,
        Fault::Disconnect,
    ]
}

fn faulty_client(base_url: &str) -> Arc<Client> {
    Arc::new(
        Client::new(ClientConfig {
            base_url: base_url.to_string(),
            model: "fake-judge".into(),
            api_key_env: "DNO_TEST_NO_SUCH_KEY".into(),
            timeout_secs: 0.25,
            max_concurrency: 32,
            max_retries: 12,
            backoff_base_secs: 0.001,
            backoff_max_secs: 0.01,
            max_consecutive_failures: 0,
            ..Default::default()
        })
        .unwrap(),
    )
}

/// Every selected pair must appear exactly once, in deterministic order, with the right p_a.
fn check_complete(items: &[dno_oracle::Item], spec: &PairSpec, out: &dno_oracle::RunOutput, score_mode: bool) {
    assert!(out.failures.is_empty(), "unexpected failures: {:?}", out.failures);
    let mut expected_order = Vec::new();
    for it in items {
        for (a, b) in select_pairs(it, spec, 0) {
            expected_order.push((it.prompt_id.clone(), it.candidates[a].sample_id.clone(), it.candidates[b].sample_id.clone()));
        }
    }
    let got: Vec<_> = out.judgments.iter().map(|j| (j.prompt_id.clone(), j.sample_a.clone(), j.sample_b.clone())).collect();
    assert_eq!(got, expected_order, "judgments missing, duplicated or out of order");
    let unique: HashSet<_> = got.iter().collect();
    assert_eq!(unique.len(), got.len());
    let idx = by_prompt(items);
    for j in &out.judgments {
        let it = &idx[&j.prompt_id];
        let (mut qa, mut qb) = (q_of(it, &j.sample_a), q_of(it, &j.sample_b));
        if score_mode {
            qa = qa.clamp(0, 6);
            qb = qb.clamp(0, 6);
            assert_eq!(j.score_a, Some(qa as f64));
            assert_eq!(j.score_b, Some(qb as f64));
        } else {
            let e = expected_p(qa, qb);
            assert_eq!(j.p_ab, Some(e), "{j:?}");
            assert_eq!(j.p_ba, Some(e), "{j:?}");
        }
        assert_eq!(j.p_a, expected_p(qa, qb), "{j:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairwise_under_30pct_faults_every_judgment_correct_once() {
    let srv = server(FakeConfig { fault_rate: 0.3, faults: all_faults(), seed: 7, ..Default::default() }).await;
    let client = faulty_client(&srv.base_url);
    let judge = Judge::new(client.clone(), JudgeConfig { max_parse_attempts: 6, ..Default::default() }).unwrap();
    let items = items(24, 4);
    let opts = RunOptions { max_items_in_flight: 8, ..Default::default() };
    let out = annotate::run(&Oracle::Judge(Arc::new(judge)), items.clone(), None, &opts, |_| {}).await.unwrap();
    check_complete(&items, &PairSpec::All, &out, false);
    assert_eq!(out.judgments.len(), 24 * 10);
    let faults = srv.stats.faults.load(Ordering::Relaxed);
    let total = srv.requests();
    println!("requests {total}, faults {faults}, accounting {:?}", out.accounting);
    assert!(faults as f64 > 0.2 * total as f64, "fault injection not effective: {faults}/{total}");
    assert!(out.accounting.retries > 0 && out.accounting.parse_retries > 0);
    assert_eq!(out.accounting.calls, 24 * 10 * 2 + out.accounting.parse_retries);
    assert_eq!(out.accounting.failures, 0);
    assert!(out.accounting.prompt_tokens > 0 && out.accounting.completion_tokens > 0);
    assert!(out.judgments.iter().all(|j| j.raw.as_deref().is_some_and(|r| r.contains("[["))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn score_mode_under_30pct_faults_every_judgment_correct_once() {
    let srv = server(FakeConfig { fault_rate: 0.3, faults: all_faults(), seed: 11, ..Default::default() }).await;
    let client = faulty_client(&srv.base_url);
    let judge =
        Judge::new(client, JudgeConfig { mode: JudgeMode::Score, max_parse_attempts: 6, ..Default::default() }).unwrap();
    let items = items(40, 5);
    let out = annotate::run(&Oracle::Judge(Arc::new(judge)), items.clone(), None, &RunOptions::default(), |_| {})
        .await
        .unwrap();
    check_complete(&items, &PairSpec::All, &out, true);
    assert_eq!(out.judgments.len(), 40 * 15);
    assert_eq!(out.scores.len(), 40 * 6);
    for s in &out.scores {
        let it = items.iter().find(|i| i.prompt_id == s.prompt_id).unwrap();
        assert_eq!(s.score, q_of(it, &s.sample_id).clamp(0, 6) as f64);
    }
    // One call per prompt (plus retries of unparsable answers).
    assert_eq!(out.accounting.calls, 40 + out.accounting.parse_retries);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn score_mode_shuffles_candidates_deterministically() {
    let srv = server(FakeConfig::default()).await;
    let client = fast_client(&srv.base_url, 4);
    let mk = |seed| {
        Judge::new(client.clone(), JudgeConfig { mode: JudgeMode::Score, shuffle_seed: seed, ..Default::default() }).unwrap()
    };
    let (j0, j0b, j1) = (mk(0), mk(0), mk(1));
    let items = items(20, 5);
    let orders: Vec<Vec<usize>> = items.iter().map(|i| j0.score_order(i)).collect();
    assert_eq!(orders, items.iter().map(|i| j0b.score_order(i)).collect::<Vec<_>>());
    assert!(orders.iter().any(|o| *o != (0..6).collect::<Vec<_>>()), "never shuffled");
    assert!(orders.iter().collect::<HashSet<_>>().len() > 5, "same order for every prompt");
    assert_ne!(orders, items.iter().map(|i| j1.score_order(i)).collect::<Vec<_>>());
    // The rendered prompt shows candidates in that order.
    let it = &items[0];
    let text = j0.render_score(it, &orders[0]);
    let pos: Vec<usize> = orders[0].iter().map(|&c| text.find(&it.candidates[c].text).unwrap()).collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logprob_verdicts_give_continuous_preferences() {
    let srv = server(FakeConfig::default()).await;
    let client = fast_client(&srv.base_url, 8);
    let judge = Judge::new(client, JudgeConfig { logprobs: true, ..Default::default() }).unwrap();
    let items = items(6, 3);
    let out =
        annotate::run(&Oracle::Judge(Arc::new(judge)), items.clone(), None, &RunOptions::default(), |_| {}).await.unwrap();
    assert!(out.failures.is_empty());
    let idx = by_prompt(&items);
    let mut continuous = 0;
    for j in &out.judgments {
        let d = (q_of(&idx[&j.prompt_id], &j.sample_a) - q_of(&idx[&j.prompt_id], &j.sample_b)) as f64;
        let want = 1.0 / (1.0 + (-d).exp());
        assert!((j.p_a - want).abs() < 1e-9, "{j:?} want {want}");
        assert!((j.p_ab.unwrap() - want).abs() < 1e-9 && (j.p_ba.unwrap() - want).abs() < 1e-9);
        // The fake judge has no position bias.
        assert!((j.p_first.unwrap() - 0.5).abs() < 1e-9);
        if j.p_a != 0.0 && j.p_a != 0.5 && j.p_a != 1.0 {
            continuous += 1;
        }
    }
    assert!(continuous > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn position_bias_is_visible_in_p_first() {
    // A judge that always picks whichever response is shown first.
    let srv = server(FakeConfig {
        override_fn: Some(Arc::new(|_req: &serde_json::Value| Some(Reply::Text("First one. [[A]]".into())))),
        ..Default::default()
    })
    .await;
    let judge = Judge::new(fast_client(&srv.base_url, 4), JudgeConfig::default()).unwrap();
    let out = annotate::run(&Oracle::Judge(Arc::new(judge)), items(2, 2), None, &RunOptions::default(), |_| {})
        .await
        .unwrap();
    assert_eq!(out.judgments.len(), 6);
    for j in &out.judgments {
        assert_eq!((j.p_ab, j.p_ba, j.p_a, j.p_first), (Some(1.0), Some(0.0), 0.5, Some(1.0)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparsable_answers_become_failures_not_preferences() {
    let srv = server(FakeConfig { fault_rate: 1.0, faults: vec![Fault::WrongFormat], ..Default::default() }).await;
    let judge = Judge::new(fast_client(&srv.base_url, 4), JudgeConfig { max_parse_attempts: 3, ..Default::default() }).unwrap();
    let opts = RunOptions { pairs: PairSpec::VsReference, max_consecutive_failures: 0, ..Default::default() };
    let out = annotate::run(&Oracle::Judge(Arc::new(judge)), items(3, 2), None, &opts, |_| {}).await.unwrap();
    assert!(out.judgments.is_empty());
    assert_eq!(out.failures.len(), 3 * 2);
    assert!(out.failures.iter().all(|f| f.error.contains("no verdict") && f.error.contains("after 3 attempts")), "{:?}", out.failures);
    // 2 orders x 3 attempts per pair.
    assert_eq!(srv.requests(), 6 * 2 * 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_stops_after_consecutive_failures() {
    let srv = server(FakeConfig { fault_rate: 1.0, faults: vec![Fault::ServerError], ..Default::default() }).await;
    let client = Arc::new(
        Client::new(ClientConfig {
            base_url: srv.base_url.clone(),
            max_concurrency: 4,
            max_retries: 1,
            backoff_base_secs: 0.001,
            max_consecutive_failures: 5,
            api_key_env: "DNO_TEST_NO_SUCH_KEY".into(),
            ..Default::default()
        })
        .unwrap(),
    );
    let judge = Judge::new(client.clone(), JudgeConfig::default()).unwrap();
    // Driver-level stop disabled: the client's own stop must end the run.
    let opts = RunOptions { max_consecutive_failures: 0, ..Default::default() };
    let err = annotate::run(&Oracle::Judge(Arc::new(judge)), items(200, 3), None, &opts, |_| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("stopping: ") && err.contains("consecutive") && err.contains("HTTP 500"), "{err}");
    assert!(srv.requests() < 100, "kept hammering a dead server: {} requests; {:?}", srv.requests(), client.accounting());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let first = Arc::new(AtomicBool::new(true));
    let f = first.clone();
    let srv = server(FakeConfig {
        override_fn: Some(Arc::new(move |_r: &serde_json::Value| {
            f.swap(false, Ordering::SeqCst).then_some(Reply::Fault(Fault::RateLimited { retry_after_secs: 1.0 }))
        })),
        ..Default::default()
    })
    .await;
    let client = fast_client(&srv.base_url, 1);
    let judge = Judge::new(client.clone(), JudgeConfig::default()).unwrap();
    let it = &items(1, 1)[0];
    let t = Instant::now();
    let v = judge.judge_order(it, &it.candidates[0].text, &it.candidates[1].text).await.unwrap();
    let dt = t.elapsed().as_secs_f64();
    assert!(dt >= 0.95, "Retry-After: 1 not honoured ({dt:.3}s)");
    assert_eq!(v.p_first, expected_p(quality(0, 0), 5));
    let acc = client.accounting();
    assert_eq!((acc.calls, acc.http_attempts, acc.retries), (1, 2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_responses_time_out_and_are_retried() {
    let first = Arc::new(AtomicBool::new(true));
    let f = first.clone();
    let srv = server(FakeConfig {
        override_fn: Some(Arc::new(move |_r: &serde_json::Value| {
            f.swap(false, Ordering::SeqCst).then_some(Reply::Fault(Fault::Slow { ms: 3000 }))
        })),
        ..Default::default()
    })
    .await;
    let client = Arc::new(
        Client::new(ClientConfig {
            base_url: srv.base_url.clone(),
            timeout_secs: 0.3,
            backoff_base_secs: 0.001,
            api_key_env: "DNO_TEST_NO_SUCH_KEY".into(),
            ..Default::default()
        })
        .unwrap(),
    );
    let judge = Judge::new(client.clone(), JudgeConfig::default()).unwrap();
    let it = &items(1, 1)[0];
    let t = Instant::now();
    judge.judge_order(it, &it.candidates[0].text, &it.candidates[1].text).await.unwrap();
    assert!(t.elapsed().as_secs_f64() < 2.0);
    assert_eq!(client.accounting().retries, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pair_specs_and_dry_run_estimate() {
    let srv = server(FakeConfig::default()).await;
    let judge = Arc::new(Judge::new(fast_client(&srv.base_url, 8), JudgeConfig::default()).unwrap());
    let items = items(5, 4);
    let oracle = Oracle::Judge(judge);
    for (spec, per_item) in [(PairSpec::All, 10), (PairSpec::VsReference, 4), (PairSpec::Random(3), 3)] {
        let opts = RunOptions { pairs: spec.clone(), seed: 3, ..Default::default() };
        let e = annotate::estimate(&oracle, &items, None, &opts);
        assert_eq!((e.items, e.pairs, e.calls), (5, 5 * per_item, 5 * per_item * 2), "{spec}");
        assert!(e.prompt_tokens > 0);
        let before = srv.requests();
        let out = annotate::run(&oracle, items.clone(), None, &opts, |_| {}).await.unwrap();
        assert_eq!(out.judgments.len(), 5 * per_item);
        assert_eq!(srv.requests() - before, e.calls as u64, "estimate disagrees with the real run for {spec}");
    }
    // vs-reference puts the reference in position b.
    for (a, b) in select_pairs(&items[0], &PairSpec::VsReference, 0) {
        assert!(!items[0].candidates[a].is_reference && items[0].candidates[b].is_reference);
    }
    // random:N is deterministic per (seed, prompt) and varies with the seed.
    let r1 = select_pairs(&items[0], &PairSpec::Random(4), 1);
    assert_eq!(r1, select_pairs(&items[0], &PairSpec::Random(4), 1));
    assert!((0..20).any(|s| select_pairs(&items[0], &PairSpec::Random(4), s) != r1));
    assert_eq!(select_pairs(&items[0], &PairSpec::Random(100), 1).len(), 10);
    assert_eq!("random:7".parse::<PairSpec>().unwrap(), PairSpec::Random(7));
    assert!("random:0".parse::<PairSpec>().is_err() && "best".parse::<PairSpec>().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_streams_with_bounded_items_in_flight_and_keeps_order() {
    let srv = server(FakeConfig { fault_rate: 0.3, faults: vec![Fault::Slow { ms: 30 }], ..Default::default() }).await;
    let judge = Arc::new(Judge::new(fast_client(&srv.base_url, 16), JudgeConfig::default()).unwrap());
    let pulled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let p = pulled.clone();
    let stream = items(60, 2).into_iter().inspect(move |_| {
        p.fetch_add(1, Ordering::SeqCst);
    });
    let opts = RunOptions { max_items_in_flight: 4, ..Default::default() };
    let mut emitted = 0usize;
    let mut max_held = 0usize;
    let mut progress_calls = 0usize;
    annotate::run_with_sink(
        &Oracle::Judge(judge),
        stream,
        None,
        &opts,
        |pr| {
            progress_calls += 1;
            assert_eq!(pr.items_done, progress_calls);
        },
        |r| {
            assert_eq!(r.index, emitted, "out of order");
            assert_eq!(r.prompt_id, format!("prompt-{emitted}"));
            emitted += 1;
            max_held = max_held.max(pulled.load(Ordering::SeqCst) - (emitted - 1));
            Ok(())
        },
    )
    .await
    .unwrap();
    assert_eq!(emitted, 60);
    assert_eq!(progress_calls, 60);
    assert!(max_held <= 4, "held {max_held} items at once with max_items_in_flight=4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_template_file_is_used_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("t.txt");
    std::fs::write(&good, "MYTEMPLATE {prompt}\n1) {response_a}\n2) {response_b}\nSay [[A]] or [[B]].").unwrap();
    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, "no placeholders").unwrap();
    let seen = Arc::new(std::sync::Mutex::new(String::new()));
    let s = seen.clone();
    let srv = server(FakeConfig {
        override_fn: Some(Arc::new(move |r: &serde_json::Value| {
            *s.lock().unwrap() = r["messages"][0]["content"].as_str().unwrap_or("").to_string();
            None
        })),
        ..Default::default()
    })
    .await;
    let client = fast_client(&srv.base_url, 2);
    let err = Judge::new(client.clone(), JudgeConfig { template_path: Some(bad.clone()), ..Default::default() })
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("bad.txt") && err.contains("{response_a}"), "{err}");
    let j1 = Judge::new(client.clone(), JudgeConfig { template_path: Some(good), ..Default::default() }).unwrap();
    let j0 = Judge::new(client, JudgeConfig::default()).unwrap();
    assert_ne!(j0.fingerprint(), j1.fingerprint(), "template must be part of the cache fingerprint");
    let it = &items(1, 1)[0];
    j1.judge_order(it, &it.candidates[0].text, &it.candidates[1].text).await.unwrap();
    assert!(seen.lock().unwrap().starts_with("MYTEMPLATE Question number 0?"));
}
