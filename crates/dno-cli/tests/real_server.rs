//! Opt-in: `dno sample --engine openai` and `dno annotate --oracle judge` against a real
//! OpenAI-compatible server, e.g. llama-cpp-python's server on the SmolLM2 GGUF:
//!
//! ```sh
//! URL=$(bash scripts/serve_judge.sh)
//! DNO_REAL_SERVER_URL=$URL cargo test --release -p dno-cli --test real_server -- --nocapture
//! ```
//!
//! Without `DNO_REAL_SERVER_URL` the test prints a notice and returns (CI has no such server; the
//! fault-injecting fake server covers the error paths there).

mod common;
use common::*;
use dno_data::{DatasetReader, Dataset, PreferenceRow, SampleRow};

#[test]
fn sample_and_judge_on_a_real_server() {
    let Ok(url) = std::env::var("DNO_REAL_SERVER_URL") else {
        use std::io::Write;
        // The stderr handle itself: the test harness captures eprintln! of passing tests.
        let _ = writeln!(std::io::stderr(), "SKIPPED: real_server: DNO_REAL_SERVER_URL not set (opt-in test)");
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let p = d.path().to_path_buf();
    let lines: String = [
        "What is the capital of France?",
        "Give two tips for sleeping well.",
        "Write one sentence about the sea.",
        "What is 12 + 30?",
    ]
    .iter()
    .enumerate()
    .map(|(i, q)| format!("{{\"id\":\"q{i}\",\"prompt\":\"{q}\"}}\n"))
    .collect();
    write(&p.join("p.jsonl"), &lines);
    ok(&["prompts", "import", "p.jsonl", "--out", "p.parquet"], &p);

    ok(
        &["sample", "--engine", "openai", "--base-url", &url, "--api-model", "policy", "--prompts", "p.parquet", "--out", "s.parquet",
          "-k", "2", "--max-new-tokens", "48", "--temperature", "0.7", "--concurrency", "2"],
        &p,
    );
    let samples: Vec<SampleRow> = DatasetReader::open(Dataset::Samples, &[p.join("s.parquet")]).unwrap().read_all().unwrap();
    assert_eq!(samples.len(), 8);
    assert!(samples.iter().all(|s| !s.response.trim().is_empty()), "every sample has text");

    let template = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipelines/judges/pairwise-letter.txt");
    ok(
        &["annotate", "--samples", "s.parquet", "--out", "prefs.parquet", "--oracle", "judge", "--base-url", &url, "--api-model", "judge",
          "--template", template.to_str().unwrap(), "--judge-max-tokens", "1", "--logprobs", "--top-logprobs", "20", "--judge-temperature", "0",
          "--concurrency", "2", "--allow-failures"],
        &p,
    );
    let prefs: Vec<PreferenceRow> = DatasetReader::open(Dataset::Preferences, &[p.join("prefs.parquet")]).unwrap().read_all().unwrap();
    assert!(prefs.len() >= 3, "most of the 4 pairs are judged ({} rows)", prefs.len());
    for r in &prefs {
        assert!((0.0..=1.0).contains(&r.p_a));
        let (ab, ba) = (r.p_ab.expect("per-order result kept"), r.p_ba.expect("per-order result kept"));
        assert!((r.p_a - (ab + ba) / 2.0).abs() < 1e-9, "p_a is the mean of both orders");
    }
    eprintln!("real_server: {} samples, {} preferences: {:?}", samples.len(), prefs.len(), prefs.iter().map(|r| r.p_a).collect::<Vec<_>>());
}
