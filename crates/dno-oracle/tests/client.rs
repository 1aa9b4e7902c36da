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
