//! Verifier oracle modes.

use dno_oracle::verifier::{last_number, normalize};
use dno_oracle::{annotate, Candidate, Item, Oracle, PairSpec, RunOptions, Verifier, VerifyMode};
use std::sync::Arc;

fn v(mode: &str) -> Verifier {
    Verifier::new(mode.parse::<VerifyMode>().unwrap())
}

#[test]
fn exact_and_normalized() {
    let e = v("exact");
    assert!(e.is_correct("  Paris\n", "Paris").unwrap());
    assert!(!e.is_correct("paris", "Paris").unwrap());
    let n = v("normalized");
    assert!(n.is_correct("  The answer:  PARIS!! ", "the answer paris").unwrap());
    assert!(!n.is_correct("Lyon", "Paris").unwrap());
    assert_eq!(normalize("Hello,   World!\n"), "hello world");
}

#[test]
fn last_number_mode() {
    let l = v("last-number");
    assert!(l.is_correct("First 3 apples, then 4 more: the total is 7.", "7").unwrap());
    assert!(l.is_correct("So we get 1,234.50 dollars", "#### 1234.5").unwrap());
    assert!(l.is_correct("x = -2", "-2.0").unwrap());
    assert!(!l.is_correct("The total is 7, no wait, 8", "7").unwrap());
    assert!(!l.is_correct("no digits here", "7").unwrap());
    let err = l.is_correct("7", "seven").unwrap_err().to_string();
    assert!(err.contains("contains no number"), "{err}");
    assert_eq!(last_number("values 2 and .5"), Some(0.5));
    assert_eq!(last_number("3e2 meters"), Some(300.0));
    assert_eq!(last_number("none"), None);
}

#[test]
fn regex_mode() {
    let r = v(r"regex:\\boxed\{([^}]*)\}");
    assert!(r.is_correct(r"so \boxed{41} ... actually \boxed{42}", "42").unwrap());
    assert!(!r.is_correct(r"\boxed{42} then \boxed{41}", "42").unwrap());
    assert!(!r.is_correct("no box", "42").unwrap());
    let named = v(r"regex:(?i)answer:\s*(?P<answer>[a-z]+)");
    assert!(named.is_correct("Reasoning... Answer: Paris.", "paris").unwrap());
    let err = "regex:([".parse::<VerifyMode>().unwrap_err().to_string();
    assert!(err.contains("does not compile"), "{err}");
    assert!("fuzzy".parse::<VerifyMode>().is_err());
}

fn item(answer: Option<&str>, texts: &[&str]) -> Item {
    Item {
        prompt_id: "q1".into(),
        prompt: "What is 6*7?".into(),
        answer: answer.map(str::to_string),
        constraints: None,
        candidates: texts
            .iter()
            .enumerate()
            .map(|(i, t)| Candidate { sample_id: format!("s{i}"), text: t.to_string(), is_reference: false })
            .collect(),
    }
}

#[test]
fn preferences_and_correctness() {
    let l = v("last-number");
    let it = item(Some("42"), &["it is 42", "it is 41", "42!", "no idea"]);
    assert_eq!(l.correctness(&it).unwrap(), vec![true, false, true, false]);
    let pairs = dno_oracle::select_pairs(&it, &PairSpec::All, 0);
    let js = l.judge_item(&it, &pairs).unwrap();
    let p: Vec<f64> = js.iter().map(|j| j.p_a).collect();
    // (0,1) (0,2) (0,3) (1,2) (1,3) (2,3)
    assert_eq!(p, vec![1.0, 0.5, 1.0, 0.0, 0.5, 1.0]);
    assert_eq!(js[0].score_a, Some(1.0));
    assert_eq!(js[0].score_b, Some(0.0));
    assert_eq!(js[0].judge, "verifier:last-number");
}

#[tokio::test]
async fn driver_with_verifier_reports_scores_and_missing_answers() {
    let items = vec![item(Some("42"), &["42", "41"]), {
        let mut i = item(None, &["42", "41"]);
        i.prompt_id = "q2".into();
        i
    }];
    let out = annotate::run(&Oracle::Verifier(Arc::new(v("last-number"))), items, None, &RunOptions::default(), |_| {})
        .await
        .unwrap();
    assert_eq!(out.judgments.len(), 1);
    assert_eq!(out.judgments[0].p_a, 1.0);
    assert_eq!(out.scores.iter().map(|s| s.score).collect::<Vec<_>>(), vec![1.0, 0.0]);
    assert_eq!(out.failures.len(), 1);
    assert_eq!(out.failures[0].prompt_id, "q2");
    assert!(out.failures[0].error.contains("needs an answer"), "{}", out.failures[0].error);
    assert_eq!(out.accounting.calls, 0);
}

#[test]
fn run_blocking_works_without_an_outer_runtime() {
    let out = annotate::run_blocking(
        &Oracle::Verifier(Arc::new(v("exact"))),
        vec![item(Some("a"), &["a", "b", "a"])],
        None,
        &RunOptions::default(),
        |_| {},
    )
    .unwrap();
    assert_eq!(out.judgments.iter().map(|j| j.p_a).collect::<Vec<_>>(), vec![1.0, 0.5, 0.0]);
}

#[tokio::test]
async fn constraints_verifier_compares_fractions_and_keeps_checks_in_raw() {
    let c = v("constraints");
    assert_eq!(c.name(), "verifier:constraints");
    let mut it = item(None, &["all lower case here", "Lower, but Capital", "one Capital only", "ALL, CAPS"]);
    it.constraints = Some(r#"[{"kind":"lowercase"},{"kind":"no_commas"}]"#.into());
    let scores: Vec<f64> = c.scores(&it).unwrap().into_iter().map(|(s, _)| s).collect();
    assert_eq!(scores, vec![1.0, 0.0, 0.5, 0.0]);
    assert_eq!(c.correctness(&it).unwrap(), vec![true, false, false, false]);
    let pairs = dno_oracle::select_pairs(&it, &PairSpec::All, 0);
    let js = c.judge_item(&it, &pairs).unwrap();
    // (0,1) (0,2) (0,3) (1,2) (1,3) (2,3): fractions 1, 0, ½, 0.
    assert_eq!(js.iter().map(|j| j.p_a).collect::<Vec<_>>(), vec![1.0, 1.0, 1.0, 0.0, 0.5, 1.0]);
    assert_eq!((js[1].score_a, js[1].score_b), (Some(1.0), Some(0.5)));
    let raw: serde_json::Value = serde_json::from_str(js[1].raw.as_deref().unwrap()).unwrap();
    assert_eq!(raw["b"][0]["kind"], "lowercase");
    assert_eq!(raw["b"][0]["ok"], false);
    assert_eq!(raw["b"][0]["detail"], "1 upper-case letters");
    assert_eq!(raw["b"][1]["ok"], true);

    // Through the driver: missing and invalid constraints fail their prompt, naming it.
    let mut missing = item(None, &["a", "b"]);
    missing.prompt_id = "q-missing".into();
    let mut bad = item(None, &["a", "b"]);
    bad.prompt_id = "q-bad".into();
    bad.constraints = Some(r#"[{"kind":"shout"}]"#.into());
    let out = annotate::run(&Oracle::Verifier(Arc::new(c)), vec![it, missing, bad], None, &RunOptions::default(), |_| {})
        .await
        .unwrap();
    assert_eq!(out.judgments.len(), 6);
    assert_eq!(out.scores.iter().map(|s| s.score).collect::<Vec<_>>(), vec![1.0, 0.0, 0.5, 0.0]);
    assert_eq!(out.failures.len(), 2);
    assert_eq!(out.failures[0].prompt_id, "q-missing");
    assert!(out.failures[0].error.contains("needs constraints"), "{}", out.failures[0].error);
    assert!(out.failures[1].error.contains("prompt q-bad") && out.failures[1].error.contains("unknown constraint kind 'shout'"));
}
