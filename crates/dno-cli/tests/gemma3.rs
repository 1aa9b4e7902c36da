//! Gemma 3 270M (Q4_K_M GGUF, SentencePiece vocabulary, no chat template in the file) through
//! the CLI: `dno prompts render` and `dno train --loss dpo` with `--chat-template
//! pipelines/chat_templates/gemma.jinja`, one optimiser step on 2 pairs with a finite loss, and
//! the trained model saved with that template. The GGUF comes from scripts/fetch_gemma3.sh;
//! without it the test prints `SKIPPED: ...` to stderr, and fails under `CI=true`.

mod common;
use common::*;
use dno_data::{DatasetWriter, MetricRow, PairRow, PromptRow, Provenance};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn gemma() -> Option<PathBuf> {
    let models = std::env::var("DNO_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/dno/models"));
    let p = std::env::var("DNO_GEMMA3_GGUF").map(PathBuf::from).unwrap_or_else(|_| models.join("gemma-3-270m-q4_k_m.gguf"));
    if p.is_file() {
        return Some(p);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{} absent (scripts/fetch_gemma3.sh); CI must run the Gemma 3 CLI test", p.display());
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: Gemma 3 CLI test: {} absent (run scripts/fetch_gemma3.sh)", p.display());
    None
}

fn pair(i: usize, prompt: &str, chosen: &str, rejected: &str) -> PairRow {
    PairRow {
        prompt_id: format!("p{i}"),
        prompt: prompt.into(),
        system: None,
        history: None,
        chosen: chosen.into(),
        rejected: rejected.into(),
        chosen_id: format!("c{i}"),
        rejected_id: format!("r{i}"),
        target: 1.0,
        chosen_winrate: 1.0,
        rejected_winrate: 0.0,
        weight: 1.0,
        chosen_score: None,
        rejected_score: None,
        chosen_source: "policy".into(),
        rejected_source: "policy".into(),
        chosen_finish_reason: Some("stop".into()),
        rejected_finish_reason: Some("stop".into()),
        strategy: "max-min".into(),
        iteration: "iter-1".into(),
    }
}

#[test]
fn gemma3_dpo_step_through_the_cli() {
    let Some(model) = gemma() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    let template = repo().join("pipelines/chat_templates/gemma.jinja");
    let prov = Provenance::new("test", &serde_json::json!({})).unwrap();

    // Without --chat-template the base model's GGUF has nothing to render prompts with.
    let prompts = p.join("prompts.parquet");
    let mut w = DatasetWriter::<PromptRow>::create(&prompts, &prov, false).unwrap();
    w.write_all(vec![PromptRow { prompt_id: "p0".into(), prompt: "What is the capital of France?".into(), system: None, history: None, reference: None, answer: None, constraints: None }]).unwrap();
    w.finish().unwrap();
    let e = fails(&["prompts", "render", "--model", s(&model), "--prompts", s(&prompts)], p);
    assert!(e.contains("chat template"), "{e}");
    let out = ok(&["prompts", "render", "--model", s(&model), "--prompts", s(&prompts), "--chat-template", s(&template)], p);
    let line: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(line["text"], "<bos><start_of_turn>user\nWhat is the capital of France?<end_of_turn>\n<start_of_turn>model\n");
    assert_eq!(line["ids"][0], 2);

    let pairs = p.join("pairs.parquet");
    let mut w = DatasetWriter::<PairRow>::create(&pairs, &prov, false).unwrap();
    w.write_all(vec![
        pair(0, "What is the capital of France?", "The capital of France is Paris.", "I like turtles."),
        pair(1, "Name a primary colour.", "Red is a primary colour.", "Seven."),
    ])
    .unwrap();
    w.finish().unwrap();
    let train = p.join("train");
    ok(
        &["train", "--model", s(&model), "--chat-template", s(&template), "--pairs", s(&pairs), "--out", s(&train),
          "--loss", "dpo", "--lr", "1e-5", "--batch-size", "2", "--epochs", "1", "--lora-rank", "4"],
        p,
    );
    let (_, m) = dno_data::read_validated::<MetricRow>(&[train.join("metrics.parquet")]).unwrap();
    assert_eq!(m.len(), 1, "one optimiser step");
    println!("gemma3 DPO step: loss {} (ln 2 = {}), grad_norm {}, {} tokens", m[0].loss, std::f64::consts::LN_2, m[0].grad_norm, m[0].tokens);
    assert!(m[0].loss.is_finite() && m[0].grad_norm.is_finite() && m[0].grad_norm > 0.0, "{:?}", m[0].loss);
    // The first DPO step starts at the reference: loss ln 2.
    assert!((m[0].loss - std::f64::consts::LN_2).abs() < 1e-3, "loss {}", m[0].loss);
    // The saved model carries the template it was trained with.
    let tc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(train.join("model/tokenizer_config.json")).unwrap()).unwrap();
    assert_eq!(tc["chat_template"].as_str().unwrap(), std::fs::read_to_string(&template).unwrap());
}
