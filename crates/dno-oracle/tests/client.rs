//! The shared OpenAI-compatible client.

mod common;
use common::*;

use dno_oracle::client::{Message, Sampling};
use dno_oracle::fake_server::{FakeConfig, Fault};
use dno_oracle::{Client, ClientConfig};
use std::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_n_choices_completions_and_usage() {
    let srv = server(FakeConfig::default()).await;
    let c = fast_client(&srv.base_url, 4);
    let msgs = [Message::system("be brief"), Message::user("Compare <<q=3>> and <<q=1>>")];
    let r = c.chat(&msgs, &Sampling { n: Some(3), temperature: Some(0.7), max_tokens: Some(16), ..Default::default() }).await.unwrap();
    assert_eq!(r.choices.len(), 3);
    assert!(r.choices.iter().all(|ch| ch.text == "Verdict: [[A]]" && ch.finish_reason.as_deref() == Some("stop")));
    assert!(r.prompt_tokens > 0);
    let r = c.chat(&msgs, &Sampling { logprobs: true, top_logprobs: Some(2), ..Default::default() }).await.unwrap();
    let lp = r.choices[0].logprobs.as_ref().unwrap();
    assert_eq!(lp[3].token, "A");
    assert_eq!(lp[3].top.len(), 2);
    let r = c.complete("Once upon a time there was", &Sampling::default()).await.unwrap();
    assert_eq!(r.choices[0].text, "echo: Once upon a time the");
    let acc = c.accounting();
    assert_eq!((acc.calls, acc.http_attempts, acc.retries, acc.failures), (3, 3, 0, 0));
    assert!(acc.prompt_tokens > 0 && acc.completion_tokens > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_comes_from_the_named_env_var_and_is_not_in_debug() {
    let srv = server(FakeConfig::default()).await;
    std::env::set_var("DNO_ORACLE_TEST_KEY_1", "sk-test-secret");
    let c = Client::new(ClientConfig {
        base_url: srv.base_url.clone(),
        api_key_env: "DNO_ORACLE_TEST_KEY_1".into(),
        ..Default::default()
    })
    .unwrap();
    c.complete("hi", &Sampling::default()).await.unwrap();
    assert_eq!(srv.stats.last_authorization.lock().unwrap().as_deref(), Some("Bearer sk-test-secret"));
    assert!(!format!("{c:?}").contains("sk-test-secret"));
    // No key: no header, still works (local servers).
    let c = fast_client(&srv.base_url, 1);
    c.complete("hi", &Sampling::default()).await.unwrap();
    assert_eq!(*srv.stats.last_authorization.lock().unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_are_not_retried_and_name_the_key_variable() {
    let srv = server(FakeConfig { fault_rate: 1.0, faults: vec![Fault::Status(401)], ..Default::default() }).await;
    let c = fast_client(&srv.base_url, 1);
    let e = c.complete("hi", &Sampling::default()).await.unwrap_err().to_string();
    assert!(e.contains("HTTP 401") && e.contains("DNO_TEST_NO_SUCH_KEY"), "{e}");
    assert_eq!(srv.requests(), 1);
    let srv = server(FakeConfig { fault_rate: 1.0, faults: vec![Fault::Status(503)], ..Default::default() }).await;
    let c = Client::new(ClientConfig {
        base_url: srv.base_url.clone(),
        max_retries: 3,
        backoff_base_secs: 0.001,
        api_key_env: "DNO_TEST_NO_SUCH_KEY".into(),
        ..Default::default()
    })
    .unwrap();
    let e = c.complete("hi", &Sampling::default()).await.unwrap_err().to_string();
    assert!(e.contains("HTTP 503") && e.contains("gave up after 4 attempts"), "{e}");
    assert_eq!(c.accounting().retries, 3);
    // Connection refused is retried, then reported.
    let dead = Client::new(ClientConfig {
        base_url: "http://127.0.0.1:9/v1".into(),
        max_retries: 1,
        backoff_base_secs: 0.001,
        api_key_env: "DNO_TEST_NO_SUCH_KEY".into(),
        ..Default::default()
    })
    .unwrap();
    let e = dead.complete("hi", &Sampling::default()).await.unwrap_err().to_string();
    assert!(e.contains("connection error") && e.contains("gave up after 2 attempts"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpm_limit_spaces_requests() {
    let srv = server(FakeConfig::default()).await;
    // 120 rpm = 2/s, bucket starts full at 120: burst, then the limiter must hold back.
    let c = std::sync::Arc::new(
        Client::new(ClientConfig {
            base_url: srv.base_url.clone(),
            rpm: Some(60),
            max_concurrency: 8,
            api_key_env: "DNO_TEST_NO_SUCH_KEY".into(),
            ..Default::default()
        })
        .unwrap(),
    );
    let t = Instant::now();
    let mut hs = Vec::new();
    for _ in 0..62 {
        let c = c.clone();
        hs.push(tokio::spawn(async move { c.complete("x", &Sampling::default()).await.unwrap() }));
    }
    for h in hs {
        h.await.unwrap();
    }
    // 60 in the initial burst, then 1 per second.
    let dt = t.elapsed().as_secs_f64();
    assert!(dt > 1.5 && dt < 4.0, "{dt}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_content_and_wrong_shape_are_failed_attempts_not_empty_answers() {
    for fault in [Fault::NullContent, Fault::WrongShape] {
        // Every request fails this way: the call fails after all its retries, with the reason.
        let srv = server(FakeConfig { fault_rate: 1.0, faults: vec![fault.clone()], ..Default::default() }).await;
        let c = Client::new(ClientConfig {
            base_url: srv.base_url.clone(),
            max_retries: 2,
            backoff_base_secs: 0.001,
            api_key_env: "DNO_TEST_NO_SUCH_KEY".into(),
            ..Default::default()
        })
        .unwrap();
        let e = c.chat(&[Message::user("hi")], &Sampling::default()).await.unwrap_err().to_string();
        let why = if fault == Fault::NullContent { "null `content`" } else { "no `message`" };
        assert!(e.contains(why) && e.contains("gave up after 3 attempts"), "{fault:?}: {e}");
        assert_eq!((srv.requests(), c.accounting().retries, c.accounting().failures), (3, 2, 1));
        // Half of the requests fail this way: every call still gets its text.
        let srv = server(FakeConfig { fault_rate: 0.5, faults: vec![fault.clone()], ..Default::default() }).await;
        let c = fast_client(&srv.base_url, 4);
        for _ in 0..20 {
            let r = c.chat(&[Message::user("Compare <<q=1>> and <<q=2>>")], &Sampling::default()).await.unwrap();
            assert_eq!(r.choices[0].text, "Verdict: [[B]]");
        }
        assert!(c.accounting().retries > 0 && c.accounting().failures == 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_k_and_min_p_are_sent_only_when_set() {
    let srv = server(FakeConfig::default()).await;
    let c = fast_client(&srv.base_url, 1);
    let body = || srv.stats.last_body.lock().unwrap().clone().unwrap();
    c.chat(&[Message::user("hi")], &Sampling { top_k: Some(40), min_p: Some(0.1), ..Default::default() }).await.unwrap();
    assert_eq!((body()["top_k"].as_u64(), body()["min_p"].as_f64()), (Some(40), Some(0.1)));
    c.complete("hi", &Sampling { top_k: Some(5), ..Default::default() }).await.unwrap();
    assert_eq!(body()["top_k"], 5);
    c.chat(&[Message::user("hi")], &Sampling::default()).await.unwrap();
    assert!(body().get("top_k").is_none() && body().get("min_p").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_skips_a_dead_server() {
    let (a, b) = (server(FakeConfig::default()).await, server(FakeConfig::default()).await);
    let dead = server(FakeConfig::default()).await;
    dead.kill();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let urls = format!("{},{}/,{}", a.base_url, dead.base_url, b.base_url);
    let c = fast_client(&urls, 1);
    for _ in 0..30 {
        c.complete("hi", &Sampling::default()).await.unwrap();
    }
    let acc = c.accounting();
    assert_eq!((acc.calls, acc.failures), (30, 0));
    assert_eq!(a.requests() + b.requests(), 30, "each call answered once");
    assert!(a.requests() >= 10 && b.requests() >= 10, "{} / {}", a.requests(), b.requests());
    // The dead server was tried until it left the rotation, then no more (its probe is 30 s away).
    assert_eq!(acc.retries, dno_oracle::client::SERVER_DOWN_AFTER as u64, "{acc:?}");
}
