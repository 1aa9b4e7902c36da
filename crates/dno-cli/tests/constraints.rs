//! The constraint oracle through the CLI: `dno prompts import --constraints-field`, the column
//! copied by `dno sample` (burn and openai engines), `dno annotate --oracle verifier --verify
//! constraints` (fractions, raw checks, one-line errors naming the prompt), `dno eval`'s strict and
//! loose accuracy, and `dno report` over several runs with the accuracy panel.

mod common;
use common::*;
use dno_data::{read_metadata, read_validated, EvalRow, PreferenceRow, PromptRow, SampleRow};
use dno_oracle::fake_server::{FakeConfig, FakeServer, Reply};
use std::path::Path;
use std::sync::Arc;

const LOWER_NO_COMMAS: &str = r#"[{"kind":"lowercase"},{"kind":"no_commas"}]"#;

/// `dno prompts import` of JSONL `lines` (every line has `reference`, maybe null) into p.parquet.
fn import(dir: &Path, lines: &str) -> Vec<PromptRow> {
    write(&dir.join("p.jsonl"), lines);
    ok(&["prompts", "import", "p.jsonl", "--out", "p.parquet", "--constraints-field", "constraints", "--reference-field", "reference"], dir);
    read_validated::<PromptRow>(&[dir.join("p.parquet")]).unwrap().1
}

fn sample(pid: &str, idx: i32, response: &str, constraints: Option<&str>) -> SampleRow {
    SampleRow {
        prompt_id: pid.into(),
        sample_id: format!("{pid}-s{idx}"),
        prompt: format!("question {pid}"),
        system: None,
        history: None,
        answer: None,
        constraints: constraints.map(String::from),
        response: response.into(),
        source: "policy".into(),
        policy: "test".into(),
        sample_index: idx,
        seed: 0,
        response_tokens: 0,
        finish_reason: "stop".into(),
        logprob: None,
        repetitive: false,
    }
}

#[test]
fn import_keeps_constraints_and_rejects_bad_ones_naming_the_prompt() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    // A JSON array and a string holding one are both accepted; a missing field is null.
    let rows = import(
        p,
        &format!(
            "{}\n{}\n{}\n",
            serde_json::json!({"id": "a", "prompt": "x", "constraints": [{"kind": "lowercase"}], "reference": null}),
            serde_json::json!({"id": "b", "prompt": "y", "constraints": LOWER_NO_COMMAS, "reference": null}),
            serde_json::json!({"id": "c", "prompt": "z", "constraints": null, "reference": null}),
        ),
    );
    assert_eq!(rows[0].constraints.as_deref(), Some(r#"[{"kind":"lowercase"}]"#));
    assert_eq!(rows[1].constraints.as_deref(), Some(LOWER_NO_COMMAS));
    assert_eq!(rows[2].constraints, None);

    write(&p.join("bad.jsonl"), "{\"id\":\"ok\",\"prompt\":\"x\",\"constraints\":[{\"kind\":\"json\"}]}\n{\"id\":\"q7\",\"prompt\":\"x\",\"constraints\":[{\"kind\":\"shout\"}]}\n");
    let e = fails(&["prompts", "import", "bad.jsonl", "--out", "bad.parquet", "--constraints-field", "constraints"], p);
    assert!(e.contains("line 2") && e.contains("prompt 'q7'") && e.contains("unknown constraint kind 'shout'"), "{e}");
    assert!(!p.join("bad.parquet").exists());
    write(&p.join("bad2.jsonl"), "{\"id\":\"q1\",\"prompt\":\"x\",\"constraints\":[{\"kind\":\"word_count\",\"min\":5,\"max\":2}]}\n");
    let e = fails(&["prompts", "import", "bad2.jsonl", "--out", "bad2.parquet", "--constraints-field", "constraints"], p);
    assert!(e.contains("prompt 'q1'") && e.contains("min 5 is greater than max 2"), "{e}");
}

#[test]
fn burn_sample_copies_constraints() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    ok(&["demo", "init", "--out", "run", "--iterations", "1", "--prompts-per-iteration", "4", "--sft-prompts", "4", "--eval-prompts", "4", "--hidden", "16"], p);
    import(
        p,
        &format!(
            "{}\n{}\n",
            serde_json::json!({"id": "a", "prompt": "1+2", "constraints": LOWER_NO_COMMAS, "reference": "3"}),
            serde_json::json!({"id": "b", "prompt": "3+4", "constraints": null, "reference": null}),
        ),
    );
    ok(&["sample", "--model", "run/model", "--prompts", "p.parquet", "--out", "s.parquet", "-k", "2", "--max-new-tokens", "3", "--include-reference"], p);
    let rows = read_validated::<SampleRow>(&[p.join("s.parquet")]).unwrap().1;
    assert_eq!(rows.len(), 5, "two policy samples per prompt and prompt a's reference");
    assert_eq!(rows.iter().filter(|r| r.is_reference()).count(), 1);
    for r in &rows {
        let want = if r.prompt_id == "a" { Some(LOWER_NO_COMMAS) } else { None };
        assert_eq!(r.constraints.as_deref(), want, "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sample_copies_constraints() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().to_path_buf();
    import(
        &p,
        &format!("{}\n", serde_json::json!({"id": "a", "prompt": "hello", "constraints": LOWER_NO_COMMAS, "reference": "gold"})),
    );
    let cfg = FakeConfig { override_fn: Some(Arc::new(|_: &serde_json::Value| Some(Reply::Text("an answer".into())))), ..FakeConfig::default() };
    let server = FakeServer::start(cfg).await.unwrap();
    let url = server.base_url.clone();
    let pp = p.clone();
    let o = tokio::task::spawn_blocking(move || {
        dno(&["sample", "--engine", "openai", "--base-url", &url, "--api-model", "fake", "--prompts", "p.parquet", "--out", "s.parquet", "-k", "2"], &pp)
    })
    .await
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows = read_validated::<SampleRow>(&[p.join("s.parquet")]).unwrap().1;
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.constraints.as_deref() == Some(LOWER_NO_COMMAS)), "{rows:?}");
}

#[test]
fn annotate_scores_fractions_and_names_bad_prompts() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let c = Some(LOWER_NO_COMMAS);
    write_samples(
        &p.join("s.parquet"),
        vec![sample("q1", 0, "all good here", c), sample("q1", 1, "One, Two", c), sample("q1", 2, "Capital only", c)],
    );
    ok(&["annotate", "--samples", "s.parquet", "--out", "prefs.parquet", "--oracle", "verifier", "--verify", "constraints"], p);
    let prefs = read_validated::<PreferenceRow>(&[p.join("prefs.parquet")]).unwrap().1;
    let got: Vec<(&str, &str, f64, Option<f64>, Option<f64>)> =
        prefs.iter().map(|r| (r.sample_a.as_str(), r.sample_b.as_str(), r.p_a, r.score_a, r.score_b)).collect();
    assert_eq!(
        got,
        vec![
            ("q1-s0", "q1-s1", 1.0, Some(1.0), Some(0.0)),
            ("q1-s0", "q1-s2", 1.0, Some(1.0), Some(0.5)),
            ("q1-s1", "q1-s2", 0.0, Some(0.0), Some(0.5)),
        ]
    );
    assert_eq!(prefs[0].judge, "verifier:constraints");
    let raw: serde_json::Value = serde_json::from_str(prefs[2].raw.as_deref().unwrap()).unwrap();
    assert_eq!(raw["a"][1]["kind"], "no_commas");
    assert_eq!(raw["a"][1]["detail"], "1 commas");
    assert_eq!(raw["b"][0]["ok"], false);

    // A prompt without constraints, or with a bad one: one error line naming it, no output.
    write_samples(&p.join("missing.parquet"), vec![sample("q1", 0, "a", c), sample("q2", 0, "b", None)]);
    let e = fails(&["annotate", "--samples", "missing.parquet", "--out", "m.parquet", "--oracle", "verifier", "--verify", "constraints"], p);
    assert!(e.contains("prompt 'q2'") && e.contains("'constraints' is null"), "{e}");
    write_samples(&p.join("bad.parquet"), vec![sample("q9", 0, "a", Some(r#"[{"kind":"word_count","mni":3}]"#))]);
    let e = fails(&["annotate", "--samples", "bad.parquet", "--out", "b.parquet", "--oracle", "verifier", "--verify", "constraints"], p);
    assert!(e.contains("prompt 'q9'") && e.contains("unknown field 'mni'"), "{e}");
    assert!(!p.join("m.parquet").exists() && !p.join("b.parquet").exists());
}

fn summary(path: &Path) -> dno_eval::EvalSummary {
    serde_json::from_str(read_metadata(path).unwrap().get("dno.eval_summary").unwrap()).unwrap()
}

#[test]
fn eval_reports_strict_and_loose_accuracy_and_report_draws_one_series_per_run() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let c = Some(LOWER_NO_COMMAS);
    let three = Some(r#"[{"kind":"lowercase"},{"kind":"no_commas"},{"kind":"word_count","max":3}]"#);
    // Baseline: q1 meets 1/2, q2 2/2, q3 0/3. Candidate: q1 2/2, q2 1/2, q3 3/3.
    write_samples(
        &p.join("base.parquet"),
        vec![sample("q1", 0, "Not lower", c), sample("q2", 0, "fine", c), sample("q3", 0, "Far, Too Many Words Here", three)],
    );
    write_samples(
        &p.join("cand.parquet"),
        vec![sample("q1", 0, "all lower", c), sample("q2", 0, "a, b", c), sample("q3", 0, "short one", three)],
    );
    let out = p.join("runs/dno-prct/iter-1/eval.parquet");
    let o = run_ok(&[
        "eval", "--candidate", s(&p.join("cand.parquet")), "--baseline", s(&p.join("base.parquet")), "--out", s(&out), "--oracle", "verifier",
        "--verify", "constraints", "--bootstrap-samples", "200",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("constraints: strict accuracy (all met) candidate 66.7%, baseline 33.3%; loose (mean fraction met) candidate 83.3%, baseline 50.0%"),
        "{err}"
    );
    let rows = read_validated::<EvalRow>(&[out.clone()]).unwrap().1;
    let met: Vec<(Option<f64>, Option<f64>)> = rows.iter().map(|r| (r.candidate_constraints, r.baseline_constraints)).collect();
    assert_eq!(met, vec![(Some(1.0), Some(0.5)), (Some(0.5), Some(1.0)), (Some(1.0), Some(0.0))]);
    assert_eq!(rows.iter().map(|r| r.p_candidate).collect::<Vec<_>>(), vec![1.0, 0.0, 1.0]);
    let sm = summary(&out);
    assert!((sm.constraints_strict_candidate.unwrap() - 2.0 / 3.0).abs() < 1e-12);
    assert!((sm.constraints_strict_baseline.unwrap() - 1.0 / 3.0).abs() < 1e-12);
    assert!((sm.constraints_loose_candidate.unwrap() - 2.5 / 3.0).abs() < 1e-12);
    assert!((sm.constraints_loose_baseline.unwrap() - 0.5).abs() < 1e-12);
    assert_eq!(sm.accuracy_candidate, None, "no answers: the verifier's answer accuracy stays empty");

    // A judge-free eval with another oracle still reports the constraint accuracy.
    let cmd_out = p.join("runs/dno-prct/iter-2/eval.parquet");
    run_ok(&[
        "eval", "--candidate", s(&p.join("cand.parquet")), "--baseline", s(&p.join("base.parquet")), "--out", s(&cmd_out), "--oracle", "command",
        "--command", "while read -r l; do echo '{\"p_a\": 0.5}'; done",
    ]);
    assert!(summary(&cmd_out).constraints_loose_candidate.is_some());
    // One iteration of a second run; `dno report` over both runs.
    let off = p.join("runs/offline-dpo/iter-1/eval.parquet");
    std::fs::create_dir_all(off.parent().unwrap()).unwrap();
    std::fs::copy(&out, &off).unwrap();
    let md = ok(&["report", "runs/dno-prct", "runs/offline-dpo", "--out", "runs/report"], p);
    assert!(md.contains("Strict cand %") && md.contains("| 66.7 | 33.3 | 83.3 | 50.0 |"), "{md}");
    assert!(md.contains("| dno-prct/iter-1 |") && md.contains("| offline-dpo/iter-1 |"), "{md}");
    let svg = std::fs::read_to_string(p.join("runs/report/winrate.svg")).unwrap();
    assert!(svg.contains("Constraints met (%)"), "accuracy panel missing");
    assert!(svg.contains("offline-dpo (one round)"), "offline DPO is its own marked series");
    assert!(!svg.contains("dno-prct/iter-2"), "x is the iteration number, not a joined label");

    // A bad constraint in the eval input: one error line naming the prompt.
    write_samples(&p.join("badc.parquet"), vec![sample("q1", 0, "x", Some("[{\"kind\":\"lowercase\",\"x\":1}]"))]);
    let e = fails(
        &["eval", "--candidate", "badc.parquet", "--baseline", "base.parquet", "--out", "e.parquet", "--oracle", "verifier", "--verify", "constraints"],
        p,
    );
    assert!(e.contains("prompt 'q1'") && e.contains("unknown field 'x'"), "{e}");
}
