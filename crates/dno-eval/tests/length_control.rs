//! (2) Length-controlled win-rate: a planted length bias is removed, and without a length bias
//! LC ≈ raw. Also: the judge's position bias is measured by first_position_win_rate.

mod common;
use common::*;
use dno_eval::{summarize, Comparison, EvalOptions};

fn logit(p: f64) -> f64 {
    (p / (1.0 - p)).ln()
}
fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// Candidate and baseline of equal quality; the candidate is usually longer (Δlen ~ N(250, 300)
/// characters). The judge (both presentation orders, hard 0/1 each) prefers the candidate with
/// probability σ(logit(q) + β·sign(Δlen)), β = logit(0.8): with q = 0.5 the longer answer wins
/// 80% of the time — a step function of Δlen, not the tanh the LC model assumes.
fn length_biased(g: &mut Gen, n: usize, q: f64) -> Vec<Comparison> {
    let beta = logit(0.8);
    (0..n)
        .map(|i| {
            let base = g.range(300, 1500);
            let delta = 250.0 + 300.0 * g.normal();
            let cand = (base as f64 + delta).round().max(20.0) as usize;
            let sign = (cand as f64 - base as f64).signum();
            let p = sigmoid(logit(q) + beta * sign);
            let first = if g.bernoulli(p) { 1.0 } else { 0.0 };
            let second = if g.bernoulli(p) { 1.0 } else { 0.0 };
            comp_two_orders(&format!("p{i}"), first, second, cand, base)
        })
        .collect()
}

#[test]
fn planted_length_bias_is_removed() {
    let mut g = Gen::new(42);
    let comps = length_biased(&mut g, 2000, 0.5);
    let longer = comps
        .iter()
        .filter(|c| c.candidate_len > c.baseline_len)
        .count() as f64
        / comps.len() as f64;
    let s = summarize(&comps, &EvalOptions::default()).unwrap();
    println!(
        "planted bias (true 50%, longer wins 80%, candidate longer {:.1}%): raw {:.1}% [{:.1}, {:.1}], LC {:.1}%, slope {:?}, warning {:?}",
        100.0 * longer,
        100.0 * s.win_rate,
        100.0 * s.ci_low,
        100.0 * s.ci_high,
        100.0 * s.lc_win_rate,
        s.lc_length_coef,
        s.lc_warning
    );
    assert!(
        (s.win_rate - 0.5).abs() > 0.12,
        "raw win-rate should be inflated: {}",
        s.win_rate
    );
    assert!(s.ci_low > 0.5, "raw CI should exclude 50%");
    assert!(
        (s.lc_win_rate - 0.5).abs() < 0.05,
        "LC {} not within 5 points of 50%",
        s.lc_win_rate
    );
    assert!(
        s.lc_length_coef.unwrap() > 1.0,
        "length coefficient should be large and positive"
    );
    // |LC − raw| > 10 points, so the AlpacaEval-style warning fires.
    assert!(s
        .lc_warning
        .as_deref()
        .unwrap()
        .contains("differs from the raw win-rate"));
}

#[test]
fn planted_length_bias_with_real_quality_gap() {
    // Candidate truly better (60% at equal length) and also favoured for being longer.
    let mut g = Gen::new(43);
    let comps = length_biased(&mut g, 3000, 0.6);
    let s = summarize(&comps, &EvalOptions::default()).unwrap();
    println!(
        "true 60% + length bias: raw {:.1}%, LC {:.1}%",
        100.0 * s.win_rate,
        100.0 * s.lc_win_rate
    );
    assert!(s.win_rate > 0.70);
    assert!((s.lc_win_rate - 0.6).abs() < 0.05, "LC {}", s.lc_win_rate);
}

#[test]
fn shorter_candidate_bias_is_corrected_upwards() {
    // Mirror image: the candidate is usually shorter and the judge favours length.
    let mut g = Gen::new(44);
    let comps: Vec<Comparison> = length_biased(&mut g, 2000, 0.5)
        .into_iter()
        .map(|c| Comparison {
            p_candidate: 1.0 - c.p_candidate,
            p_candidate_first: c.p_candidate_first.map(|p| 1.0 - p),
            p_candidate_second: c.p_candidate_second.map(|p| 1.0 - p),
            candidate_len: c.baseline_len,
            baseline_len: c.candidate_len,
            ..c
        })
        .collect();
    let s = summarize(&comps, &EvalOptions::default()).unwrap();
    println!(
        "mirrored: raw {:.1}%, LC {:.1}%",
        100.0 * s.win_rate,
        100.0 * s.lc_win_rate
    );
    assert!(s.win_rate < 0.38);
    assert!((s.lc_win_rate - 0.5).abs() < 0.05, "LC {}", s.lc_win_rate);
}

#[test]
fn no_length_bias_gives_lc_close_to_raw() {
    // Preferences independent of length (true 62%), lengths vary widely and the candidate is
    // longer on average.
    let mut g = Gen::new(45);
    let comps: Vec<Comparison> = (0..2000)
        .map(|i| {
            let base = g.range(200, 1200);
            let cand = (base as f64 + 200.0 + 400.0 * g.normal()).max(10.0) as usize;
            let p = if g.bernoulli(0.62) { 1.0 } else { 0.0 };
            comp(&format!("p{i}"), p, cand, base)
        })
        .collect();
    let s = summarize(&comps, &EvalOptions::default()).unwrap();
    println!(
        "no bias: raw {:.1}%, LC {:.1}%, slope {:?}",
        100.0 * s.win_rate,
        100.0 * s.lc_win_rate,
        s.lc_length_coef
    );
    assert!(
        (s.lc_win_rate - s.win_rate).abs() < 0.03,
        "LC {} vs raw {}",
        s.lc_win_rate,
        s.win_rate
    );
    assert!((s.win_rate - 0.62).abs() < 0.04);
    assert!(s.lc_warning.is_none());
    assert!(s.lc_length_coef.unwrap().abs() < 0.3);
}

#[test]
fn position_bias_is_measured() {
    // Equal quality; the judge picks the response shown first 70% of the time.
    let mut g = Gen::new(46);
    let comps: Vec<Comparison> = (0..3000)
        .map(|i| {
            let first = if g.bernoulli(0.7) { 1.0 } else { 0.0 }; // candidate shown first
            let second = if g.bernoulli(0.3) { 1.0 } else { 0.0 }; // candidate shown second
            comp_two_orders(&format!("p{i}"), first, second, 500, 400 + g.range(0, 200))
        })
        .collect();
    let s = summarize(&comps, &EvalOptions::default()).unwrap();
    let fp = s.first_position_win_rate.unwrap();
    println!(
        "position bias: first-position win-rate {:.1}%, win-rate {:.1}%",
        100.0 * fp,
        100.0 * s.win_rate
    );
    assert!((fp - 0.7).abs() < 0.02, "first-position win-rate {fp}");
    assert!(
        (s.win_rate - 0.5).abs() < 0.03,
        "averaging both orders cancels position bias"
    );
    // Without per-order data there is no position estimate.
    let plain: Vec<Comparison> = comps
        .iter()
        .map(|c| Comparison {
            p_candidate_first: None,
            p_candidate_second: None,
            ..c.clone()
        })
        .collect();
    assert_eq!(
        summarize(&plain, &EvalOptions::default())
            .unwrap()
            .first_position_win_rate,
        None
    );
}

#[test]
fn one_sided_length_differences_are_flagged_as_extrapolation() {
    // The candidate is always longer: LC (prediction at Δlen = 0) is an extrapolation.
    let mut g = Gen::new(47);
    let comps: Vec<Comparison> = (0..500)
        .map(|i| {
            let base = g.range(200, 800);
            let p = if g.bernoulli(0.6) { 1.0 } else { 0.0 };
            comp(&format!("p{i}"), p, base + g.range(50, 400), base)
        })
        .collect();
    let s = summarize(&comps, &EvalOptions::default()).unwrap();
    let w = s.lc_warning.as_deref().unwrap_or("");
    println!(
        "one-sided: raw {:.1}%, LC {:.1}%, warning {w:?}",
        100.0 * s.win_rate,
        100.0 * s.lc_win_rate
    );
    assert!(
        w.contains("longer than the baseline in 100%") && w.contains("extrapolation"),
        "{w}"
    );
    assert!(s.lc_win_rate.is_finite());
}
