//! (4) Edge cases: a single prompt, all ties, zero length variance, bad input, serde.

mod common;
use common::*;
use dno_eval::{summarize, Comparison, EvalOptions, EvalSummary};

fn all_finite(s: &EvalSummary) -> bool {
    [
        s.win_rate,
        s.win_rate_se,
        s.ci_low,
        s.ci_high,
        s.lc_win_rate,
        s.mean_len_candidate,
        s.mean_len_baseline,
    ]
    .iter()
    .all(|v| v.is_finite())
}

#[test]
fn single_comparison() {
    let s = summarize(&[comp("only", 1.0, 120, 80)], &EvalOptions::default()).unwrap();
    println!("{s:?}");
    assert!(all_finite(&s));
    assert_eq!((s.n, s.n_prompts), (1, 1));
    assert_eq!(s.win_rate, 1.0);
    assert_eq!(s.win_rate_se, 0.0);
    assert_eq!((s.ci_low, s.ci_high), (1.0, 1.0));
    assert_eq!(
        s.lc_win_rate, 1.0,
        "LC falls back to raw with one comparison"
    );
    assert!(s.lc_warning.as_deref().unwrap().contains("zero variance"));
    assert!(s.notes.iter().any(|n| n.contains("only one prompt")));
    assert_eq!((s.wins, s.ties, s.losses), (1, 0, 0));
}

#[test]
fn single_prompt_with_several_samples() {
    let comps = vec![
        comp("p", 1.0, 100, 90),
        comp("p", 0.0, 300, 90),
        comp("p", 0.5, 200, 90),
        comp("p", 1.0, 150, 90),
    ];
    let s = summarize(&comps, &EvalOptions::default()).unwrap();
    assert!(all_finite(&s));
    assert_eq!((s.n, s.n_prompts), (4, 1));
    assert!((s.win_rate - 0.625).abs() < 1e-12);
    assert_eq!(s.win_rate_se, 0.0);
    assert_eq!((s.ci_low, s.ci_high), (0.625, 0.625));
    // Length does vary here, so the LC is fitted (and finite).
    assert!(s.lc_length_coef.is_some());
    assert!((0.0..=1.0).contains(&s.lc_win_rate));
    assert!((s.mean_len_candidate - 187.5).abs() < 1e-12);
}

#[test]
fn all_ties() {
    let mut g = Gen::new(11);
    let comps: Vec<Comparison> = (0..200)
        .map(|i| {
            comp_two_orders(
                &format!("p{i}"),
                0.5,
                0.5,
                g.range(50, 900),
                g.range(50, 900),
            )
        })
        .collect();
    let s = summarize(&comps, &EvalOptions::default()).unwrap();
    assert!(all_finite(&s));
    assert_eq!(s.win_rate, 0.5);
    assert_eq!(s.win_rate_se, 0.0);
    assert_eq!((s.ci_low, s.ci_high), (0.5, 0.5));
    assert!((s.lc_win_rate - 0.5).abs() < 1e-9, "LC {}", s.lc_win_rate);
    assert!(s.lc_length_coef.unwrap().abs() < 1e-9);
    assert!(s.lc_warning.is_none());
    assert_eq!((s.wins, s.ties, s.losses), (0, 200, 0));
    assert_eq!(s.first_position_win_rate, Some(0.5));
}

#[test]
fn zero_length_variance_falls_back_to_raw() {
    let mut g = Gen::new(12);
    // Every comparison has the same length difference (+40 characters).
    let comps: Vec<Comparison> = (0..300)
        .map(|i| {
            let base = g.range(100, 800);
            comp(
                &format!("p{i}"),
                if g.bernoulli(0.7) { 1.0 } else { 0.0 },
                base + 40,
                base,
            )
        })
        .collect();
    let s = summarize(&comps, &EvalOptions::default()).unwrap();
    println!(
        "zero variance: raw {:.4}, LC {:.4}, warning {:?}",
        s.win_rate, s.lc_win_rate, s.lc_warning
    );
    assert!(all_finite(&s));
    assert_eq!(s.lc_win_rate, s.win_rate);
    assert_eq!(s.lc_length_coef, None);
    assert!(s.lc_warning.as_deref().unwrap().contains("zero variance"));
}

#[test]
fn all_wins_and_all_losses_stay_finite() {
    let mut g = Gen::new(13);
    for p in [0.0, 1.0] {
        let comps: Vec<Comparison> = (0..100)
            .map(|i| comp(&format!("p{i}"), p, g.range(10, 2000), g.range(10, 2000)))
            .collect();
        let s = summarize(&comps, &EvalOptions::default()).unwrap();
        assert!(all_finite(&s), "{s:?}");
        assert_eq!(s.win_rate, p);
        assert!(
            (s.lc_win_rate - p).abs() < 0.01,
            "p={p}: LC {}",
            s.lc_win_rate
        );
    }
}

#[test]
fn weights_prompts_equally() {
    // Prompt a: 3 wins; prompt b: 1 loss ⇒ prompt-mean win-rate ½ (not ¾).
    let comps = vec![
        comp("a", 1.0, 10, 10),
        comp("a", 1.0, 10, 10),
        comp("a", 1.0, 10, 10),
        comp("b", 0.0, 10, 10),
    ];
    let s = summarize(&comps, &EvalOptions::default()).unwrap();
    assert_eq!(s.win_rate, 0.5);
    assert_eq!(s.n_prompts, 2);
    // Sample std of {1, 0} is √½; SE = √½ / √2 = ½.
    assert!((s.win_rate_se - 0.5).abs() < 1e-12);
}

#[test]
fn accuracy_uses_only_verified_comparisons() {
    let mut comps = vec![
        comp("a", 1.0, 10, 10),
        comp("b", 1.0, 10, 10),
        comp("c", 1.0, 10, 10),
    ];
    assert_eq!(
        summarize(&comps, &EvalOptions::default())
            .unwrap()
            .accuracy_candidate,
        None
    );
    comps[0].candidate_correct = Some(true);
    comps[1].candidate_correct = Some(false);
    comps[2].baseline_correct = Some(true);
    let s = summarize(&comps, &EvalOptions::default()).unwrap();
    assert_eq!(s.accuracy_candidate, Some(0.5));
    assert_eq!(s.accuracy_baseline, Some(1.0));
}

#[test]
fn bad_input_gives_one_line_errors() {
    let opts = EvalOptions::default();
    let err = summarize(&[], &opts).unwrap_err().to_string();
    assert!(err.contains("no comparisons"), "{err}");

    let mut c = comp("q17", 1.2, 10, 10);
    let err = summarize(&[comp("ok", 0.5, 1, 1), c.clone()], &opts)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("q17") && err.contains("p_candidate") && err.contains("1.2"),
        "{err}"
    );
    assert!(!err.contains('\n'));

    c.p_candidate = f64::NAN;
    assert!(summarize(&[c.clone()], &opts).is_err());
    c.p_candidate = 0.5;
    c.p_candidate_second = Some(-0.1);
    let err = summarize(&[c], &opts).unwrap_err().to_string();
    assert!(err.contains("p_candidate_second"), "{err}");

    let good = [comp("a", 0.5, 1, 1)];
    for bad in [
        EvalOptions {
            bootstrap_samples: 0,
            ..Default::default()
        },
        EvalOptions {
            ci_level: 1.0,
            ..Default::default()
        },
        EvalOptions {
            ci_level: f64::NAN,
            ..Default::default()
        },
        EvalOptions {
            lc_l2: -1.0,
            ..Default::default()
        },
        EvalOptions {
            lc_warn_threshold: f64::INFINITY,
            ..Default::default()
        },
    ] {
        let err = summarize(&good, &bad).unwrap_err().to_string();
        assert!(err.starts_with("EvalOptions."), "{err}");
    }
}

#[test]
fn summary_round_trips_through_json() {
    let mut g = Gen::new(14);
    let comps = hard_judgements(&mut g, 50, 0.6);
    let s = summarize(&comps, &EvalOptions::default()).unwrap();
    let json = serde_json::to_string_pretty(&s).unwrap();
    let back: EvalSummary = serde_json::from_str(&json).unwrap();
    assert_eq!(s, back);
    // Older/minimal JSON without the optional extras still parses.
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let obj = v.as_object_mut().unwrap();
    obj.remove("notes");
    obj.remove("ci_level");
    obj.remove("lc_length_coef");
    let minimal: EvalSummary = serde_json::from_value(v).unwrap();
    assert_eq!(minimal.ci_level, 0.95);
    assert!(minimal.notes.is_empty());
    // Options deserialize from a partial object with defaults.
    let o: EvalOptions = serde_json::from_str(r#"{"seed": 5}"#).unwrap();
    assert_eq!(
        o,
        EvalOptions {
            seed: 5,
            ..Default::default()
        }
    );
}

#[test]
fn comparison_from_orders() {
    let c = Comparison::from_orders("x", Some(1.0), Some(0.0), 12, 10).unwrap();
    assert_eq!(c.p_candidate, 0.5);
    assert_eq!(
        (c.p_candidate_first, c.p_candidate_second),
        (Some(1.0), Some(0.0))
    );
    let c = Comparison::from_orders("x", None, Some(0.25), 12, 10).unwrap();
    assert_eq!(c.p_candidate, 0.25);
    let err = Comparison::from_orders("x9", None, None, 1, 1)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("x9") && err.contains("no judged order"),
        "{err}"
    );
    let err = Comparison::from_orders("x", Some(2.0), None, 1, 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("p_candidate_first"), "{err}");
}
