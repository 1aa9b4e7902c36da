//! `dno eval` end to end, through the built binary: verifier (known accuracy and win-rate),
//! `--all-samples`, the summary metadata read by `dno report`, reference baselines, the LLM judge
//! against dno-oracle's fake server (both orders), and input errors.

mod common;

use common::{dno_cmd as dno, run_ok, s, write_samples};
use dno_data::{read_metadata, read_validated, EvalRow, PromptRow, SampleRow};
use dno_oracle::fake_server::{FakeConfig, FakeServer};
use std::path::{Path, PathBuf};




fn row(p: &PromptRow, policy: &str, idx: i32, response: &str) -> SampleRow {
    let reference = idx < 0;
    SampleRow {
        prompt_id: p.prompt_id.clone(),
        sample_id: if reference { format!("{}-ref", p.prompt_id) } else { format!("{policy}-{}-{idx}", p.prompt_id) },
        prompt: p.prompt.clone(),
        system: p.system.clone(),
        history: p.history.clone(),
        answer: p.answer.clone(),
        constraints: p.constraints.clone(),
        response: response.into(),
        source: if reference { "reference" } else { "policy" }.into(),
        policy: policy.into(),
        sample_index: idx,
        seed: 1,
        response_tokens: 0,
        finish_reason: if reference { "reference" } else { "stop" }.into(),
        logprob: None,
        repetitive: false,
    }
}


/// prompts.parquet through `dno prompts import`, read back.
fn import_prompts(dir: &Path, lines: &[serde_json::Value]) -> (PathBuf, Vec<PromptRow>) {
    let jsonl = dir.join("prompts.jsonl");
    std::fs::write(&jsonl, lines.iter().map(|l| l.to_string() + "\n").collect::<String>()).unwrap();
    let out = dir.join("prompts.parquet");
    run_ok(&["prompts", "import", s(&jsonl), "--out", s(&out), "--answer-field", "answer", "--reference-field", "reference"]);
    let rows = read_validated::<PromptRow>(&[out.clone()]).unwrap().1;
    (out, rows)
}

fn summary(path: &Path) -> dno_eval::EvalSummary {
    let md = read_metadata(path).unwrap();
    serde_json::from_str(md.get("dno.eval_summary").expect("summary metadata")).unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// Prompts p0..p5 with numeric answers and references; candidate lacks p4, baseline lacks p5.
fn math_setup(dir: &Path) -> (PathBuf, PathBuf, PathBuf, Vec<PromptRow>) {
    let answers = ["42", "7", "10", "3", "5", "1"];
    let lines: Vec<serde_json::Value> = answers
        .iter()
        .enumerate()
        .map(|(i, a)| serde_json::json!({"id": format!("p{i}"), "prompt": format!("Compute item {i}."), "answer": a, "reference": format!("The result is {a}.")}))
        .collect();
    let (prompts_file, prompts) = import_prompts(dir, &lines);
    let p = |i: usize| &prompts[i];
    // Candidate, first sample (index 0): right on p0, p1, p2, wrong on p3; index 1 always wrong
    // and written first, so "first" must mean the smallest sample_index, not file order.
    let mut cand = Vec::new();
    for i in [0, 1, 2, 3, 5] {
        cand.push(row(p(i), "iter1", 1, "I am not sure, maybe 99"));
    }
    cand.push(row(p(0), "iter1", 0, "6 times 7 is 42"));
    cand.push(row(p(1), "iter1", 0, "So: 7"));
    cand.push(row(p(2), "iter1", 0, "ten, i.e. 10"));
    cand.push(row(p(3), "iter1", 0, "4"));
    cand.push(row(p(5), "iter1", 0, "1"));
    for i in [0, 1, 2] {
        cand.push(row(p(i), "iter1", -1, &format!("Reference: {}", answers[i])));
    }
    // Baseline, first sample: wrong on p0, p1, p3, right on p2; index 1 always right (ignored).
    let mut base = Vec::new();
    for i in 0..5 {
        base.push(row(p(i), "base", 1, answers[i]));
    }
    base.push(row(p(0), "base", 0, "41"));
    base.push(row(p(1), "base", 0, "six"));
    base.push(row(p(2), "base", 0, "10"));
    base.push(row(p(3), "base", 0, "5"));
    base.push(row(p(4), "base", 0, "5"));
    let (c, b) = (dir.join("samples_iter1.parquet"), dir.join("baseline.parquet"));
    write_samples(&c, cand);
    write_samples(&b, base);
    (c, b, prompts_file, prompts)
}

#[test]
fn verifier_eval_known_accuracy_winrate_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let (cand, base, _, _) = math_setup(dir.path());
    let run = dir.path().join("run");
    let out1 = run.join("iter-1/eval.parquet");
    let o = run_ok(&[
        "eval", "--candidate", s(&cand), "--baseline", s(&base), "--out", s(&out1), "--oracle", "verifier", "--bootstrap-samples", "500",
        "--report",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("1 of 5 candidate prompts have no baseline"), "{err}");
    assert!(err.contains("1 baseline prompts have no candidate"), "{err}");
    assert!(err.contains("win-rate 75.0%"), "{err}");

    let rows = read_validated::<EvalRow>(&[out1.clone()]).unwrap().1;
    assert_eq!(rows.len(), 4);
    let p: Vec<(String, f64)> = rows.iter().map(|r| (r.prompt_id.clone(), r.p_candidate)).collect();
    assert_eq!(p, vec![("p0".into(), 1.0), ("p1".into(), 1.0), ("p2".into(), 0.5), ("p3".into(), 0.5)]);
    assert_eq!(rows[0].candidate_id, "iter1-p0-0");
    assert_eq!(rows[0].baseline_id, "base-p0-0");
    assert_eq!(rows[0].candidate_len, "6 times 7 is 42".chars().count() as i64);
    assert_eq!((rows[3].candidate_correct, rows[3].baseline_correct), (Some(false), Some(false)));
    assert_eq!(rows[0].judge, "verifier:last-number");

    let sm = summary(&out1);
    assert_eq!((sm.n, sm.n_prompts), (4, 4));
    assert!(close(sm.win_rate, 0.75));
    assert_eq!(sm.accuracy_candidate, Some(0.75));
    assert_eq!(sm.accuracy_baseline, Some(0.25));
    assert_eq!((sm.wins, sm.ties, sm.losses), (2, 2, 0));
    assert!(sm.ci_low <= 0.75 && sm.ci_high >= 0.75);
    let mean_len = rows.iter().map(|r| r.candidate_len as f64).sum::<f64>() / 4.0;
    assert!(close(sm.mean_len_candidate, mean_len));
    assert_eq!(sm.first_position_win_rate, None, "the verifier has no presentation order");
    let prov = dno_data::read_provenance(&out1).unwrap().unwrap();
    assert_eq!(prov.stage, "eval");
    assert_eq!(prov.inputs.len(), 2);
    // --report ran over the run directory.
    let md = std::fs::read_to_string(run.join("report/report.md")).unwrap();
    assert!(md.contains("| iter-1 | 75.0"), "{md}");

    // --all-samples: every policy sample against the same baseline response.
    let out2 = run.join("iter-2/eval.parquet");
    run_ok(&["eval", "--candidate", s(&cand), "--baseline", s(&base), "--out", s(&out2), "--oracle", "verifier", "--all-samples"]);
    let rows = read_validated::<EvalRow>(&[out2.clone()]).unwrap().1;
    assert_eq!(rows.len(), 8);
    let sm = summary(&out2);
    assert_eq!((sm.n, sm.n_prompts), (8, 4));
    // Per prompt: p0 (1+.5)/2, p1 (1+.5)/2, p2 (.5+0)/2, p3 (.5+.5)/2.
    assert!(close(sm.win_rate, (0.75 + 0.75 + 0.25 + 0.5) / 4.0), "{}", sm.win_rate);
    assert_eq!(sm.accuracy_candidate, Some(3.0 / 8.0));
    assert_eq!(sm.accuracy_baseline, Some(2.0 / 8.0));

    // `dno report` reads both summaries.
    let o = run_ok(&["report", s(&run)]);
    let md = String::from_utf8_lossy(&o.stdout);
    assert!(md.contains("| iter-1 | 75.0") && md.contains("| iter-2 | 56."), "{md}");
    assert!(run.join("report/winrate.svg").exists());
}

#[test]
fn reference_baselines() {
    let dir = tempfile::tempdir().unwrap();
    let (cand, _, prompts_file, _) = math_setup(dir.path());
    // The candidate file's reference rows (p0..p2): every reference is correct.
    let out = dir.path().join("eval_ref.parquet");
    let o = run_ok(&["eval", "--candidate", s(&cand), "--baseline-reference", "--out", s(&out), "--oracle", "verifier"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("2 of 5 candidate prompts have no baseline"));
    let rows = read_validated::<EvalRow>(&[out.clone()]).unwrap().1;
    let ids: Vec<&str> = rows.iter().map(|r| r.baseline_id.as_str()).collect();
    assert_eq!(ids, ["p0-ref", "p1-ref", "p2-ref"]);
    assert!(rows.iter().all(|r| r.p_candidate == 0.5 && r.baseline_correct == Some(true)));

    // The prompts file's reference column: all six prompts, p4 has no candidate.
    let out = dir.path().join("eval_prompts.parquet");
    run_ok(&["eval", "--candidate", s(&cand), "--baseline-reference", "--prompts", s(&prompts_file), "--out", s(&out), "--oracle", "verifier"]);
    let rows = read_validated::<EvalRow>(&[out.clone()]).unwrap().1;
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[0].baseline_id, "reference:p0");
    assert_eq!(rows[3].p_candidate, 0.0, "p3: wrong candidate vs correct reference");
    assert_eq!(summary(&out).accuracy_baseline, Some(1.0));
}

#[test]
fn judge_eval_both_orders_against_fake_server() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let server = rt.block_on(FakeServer::start(FakeConfig::default())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let prompts: Vec<PromptRow> = (0..4)
        .map(|i| PromptRow { prompt_id: format!("q{i}"), prompt: format!("Task {i}"), system: None, history: None, reference: None, answer: None, constraints: None })
        .collect();
    // Candidate better on q0..q2 (quality 5 vs 1), worse on q3 (0 vs 3).
    let cq = [5, 5, 5, 0];
    let bq = [1, 1, 1, 3];
    let cand: Vec<SampleRow> = prompts.iter().enumerate().map(|(i, p)| row(p, "new", 0, &format!("candidate answer {i} <<q={}>>", cq[i]))).collect();
    let base: Vec<SampleRow> = prompts.iter().enumerate().map(|(i, p)| row(p, "old", 0, &format!("base {i} <<q={}>>", bq[i]))).collect();
    let (c, b) = (dir.path().join("cand.parquet"), dir.path().join("base.parquet"));
    write_samples(&c, cand);
    write_samples(&b, base);
    let out = dir.path().join("eval.parquet");
    let args = ["eval", "--candidate", s(&c), "--baseline", s(&b), "--out", s(&out), "--oracle", "judge", "--base-url", &server.base_url];
    let dry = run_ok(&[&args[..], &["--dry-run"][..]].concat());
    assert!(String::from_utf8_lossy(&dry.stdout).contains("4 comparisons -> 8 calls"));
    assert!(!out.exists());
    run_ok(&args);
    assert_eq!(server.requests(), 8, "both orders of each comparison");
    let rows = read_validated::<EvalRow>(&[out.clone()]).unwrap().1;
    let firsts: Vec<(Option<f64>, Option<f64>)> = rows.iter().map(|r| (r.p_candidate_first, r.p_candidate_second)).collect();
    assert_eq!(firsts, vec![(Some(1.0), Some(1.0)), (Some(1.0), Some(1.0)), (Some(1.0), Some(1.0)), (Some(0.0), Some(0.0))]);
    assert!(rows.iter().all(|r| r.judge == "judge:default:pairwise" && r.candidate_correct.is_none()));
    let sm = summary(&out);
    assert!(close(sm.win_rate, 0.75));
    assert_eq!(sm.first_position_win_rate, Some(0.5));
    assert_eq!(sm.accuracy_candidate, None);
    assert!(dir.path().join("eval.parquet.cache.jsonl").exists());

    // A rerun is served by the cache.
    run_ok(&[&args[..], &["--force"][..]].concat());
    assert_eq!(server.requests(), 8);
}

#[test]
fn eval_input_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mk = |name: &str, ids: &[&str]| {
        let rows: Vec<SampleRow> = ids
            .iter()
            .map(|id| {
                let p = PromptRow { prompt_id: id.to_string(), prompt: "x".into(), system: None, history: None, reference: None, answer: Some("1".into()), constraints: None };
                row(&p, name, 0, "1")
            })
            .collect();
        let path = dir.path().join(format!("{name}.parquet"));
        write_samples(&path, rows);
        path
    };
    let (c, b) = (mk("cand", &["a", "b"]), mk("base", &["c"]));
    let out = dir.path().join("eval.parquet");
    let o = dno().args(["eval", "--candidate", s(&c), "--baseline", s(&b), "--out", s(&out), "--oracle", "verifier"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.lines().last().unwrap().contains("no prompt in common"), "{err}");
    assert!(!out.exists());
    // A preferences-like mistake: passing the baseline's eval output as samples.
    let o = dno().args(["eval", "--candidate", s(&c), "--out", s(&out), "--oracle", "verifier"]).output().unwrap();
    assert!(!o.status.success(), "--baseline or --baseline-reference is required");
}
