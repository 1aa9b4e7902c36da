//! (1) Known win-rates are recovered, and the bootstrap CI covers the truth at close to the
//! nominal 95% rate, both with one comparison per prompt and with several correlated
//! comparisons per prompt (prompt clustering, as with `--all-samples`).

mod common;
use common::*;
use dno_eval::{summarize, Comparison, EvalOptions};

#[test]
fn known_win_rates_are_recovered() {
    for (k, &q) in [0.3, 0.5, 0.7].iter().enumerate() {
        let mut g = Gen::new(100 + k as u64);
        let n = 4000;
        let comps = hard_judgements(&mut g, n, q);
        let s = summarize(&comps, &EvalOptions::default()).unwrap();
        // Per-judgement variance: E[p²] − q² with 10% ties at ½.
        let w = (q - 0.05) / 0.9;
        let var = 0.1 * 0.25 + 0.9 * w - q * q;
        let se_true = (var / n as f64).sqrt();
        println!(
            "q={q}: win_rate={:.4} se={:.4} (true {:.4}) ci=[{:.4}, {:.4}] W/T/L={}/{}/{}",
            s.win_rate, s.win_rate_se, se_true, s.ci_low, s.ci_high, s.wins, s.ties, s.losses
        );
        assert_eq!(s.n, n);
        assert_eq!(s.n_prompts, n);
        assert_eq!(s.wins + s.ties + s.losses, n);
        assert!(
            (s.win_rate - q).abs() < 3.0 * se_true,
            "q={q}: win_rate {}",
            s.win_rate
        );
        assert!(
            (s.win_rate_se / se_true - 1.0).abs() < 0.1,
            "q={q}: se {} vs {se_true}",
            s.win_rate_se
        );
        // Bootstrap interval ≈ ±1.96 SE around the estimate.
        let half = 0.5 * (s.ci_high - s.ci_low);
        assert!(
            (half / (1.96 * s.win_rate_se) - 1.0).abs() < 0.1,
            "q={q}: CI half-width {half}"
        );
        assert!(s.ci_low < s.win_rate && s.win_rate < s.ci_high);
        // Counts match the planted tie/win fractions.
        assert!((s.ties as f64 / n as f64 - 0.1).abs() < 0.02);
        assert!((s.wins as f64 / n as f64 - 0.9 * w).abs() < 0.03);
    }
}

fn coverage(reps: usize, q: f64, make: impl Fn(&mut Gen) -> Vec<Comparison>, seed0: u64) -> f64 {
    let mut covered = 0;
    for r in 0..reps {
        let mut g = Gen::new(seed0 + r as u64);
        let comps = make(&mut g);
        let opts = EvalOptions {
            seed: 7_000 + r as u64,
            ..EvalOptions::default()
        };
        let s = summarize(&comps, &opts).unwrap();
        if s.ci_low <= q && q <= s.ci_high {
            covered += 1;
        }
    }
    covered as f64 / reps as f64
}

#[test]
fn bootstrap_ci_coverage_is_nominal() {
    let reps = 200;
    let mut all = 0.0;
    for (k, &q) in [0.3, 0.5, 0.7].iter().enumerate() {
        let cov = coverage(
            reps,
            q,
            |g| hard_judgements(g, 150, q),
            1_000 * (k as u64 + 1),
        );
        println!("coverage q={q}, 150 prompts, {reps} replications: {cov:.3}");
        assert!((0.90..=0.99).contains(&cov), "q={q}: coverage {cov}");
        all += cov / 3.0;
    }
    println!("mean coverage over q: {all:.3}");
}

/// 4 comparisons per prompt sharing a prompt effect: per-prompt win prob q ± 0.25.
fn clustered(g: &mut Gen, n_prompts: usize, q: f64, unique_ids: bool) -> Vec<Comparison> {
    let mut out = Vec::new();
    for i in 0..n_prompts {
        let pg = if g.bernoulli(0.5) { q - 0.25 } else { q + 0.25 };
        for j in 0..4 {
            let id = if unique_ids {
                format!("p{i}-{j}")
            } else {
                format!("p{i}")
            };
            let p = if g.bernoulli(pg) { 1.0 } else { 0.0 };
            out.push(comp(&id, p, 300, 300 + g.range(0, 200)));
        }
    }
    out
}

#[test]
fn clustered_ci_coverage_is_nominal_and_naive_undercovers() {
    let reps = 300;
    let q = 0.5;
    let cov = coverage(reps, q, |g| clustered(g, 100, q, false), 50_000);
    // Same data, but every comparison treated as its own prompt (ignores the clustering).
    let naive = coverage(reps, q, |g| clustered(g, 100, q, true), 50_000);
    println!("clustered coverage {cov:.3}, naive (unclustered) coverage {naive:.3}");
    assert!((0.90..=0.99).contains(&cov), "clustered coverage {cov}");
    assert!(
        naive < cov - 0.03,
        "naive {naive} should under-cover relative to clustered {cov}"
    );

    // Clustered SE is larger than the naive one on the same data.
    let mut g = Gen::new(9);
    let data = clustered(&mut g, 400, q, false);
    let s = summarize(&data, &EvalOptions::default()).unwrap();
    let unclustered: Vec<Comparison> = data
        .iter()
        .enumerate()
        .map(|(i, c)| Comparison {
            prompt_id: format!("u{i}"),
            ..c.clone()
        })
        .collect();
    let s_naive = summarize(&unclustered, &EvalOptions::default()).unwrap();
    println!(
        "SE clustered {:.4} vs naive {:.4}",
        s.win_rate_se, s_naive.win_rate_se
    );
    assert_eq!(s.n_prompts, 400);
    assert_eq!(s.n, 1600);
    assert!(
        (s.win_rate - s_naive.win_rate).abs() < 1e-12,
        "equal cluster sizes ⇒ same point estimate"
    );
    assert!(s.win_rate_se > 1.2 * s_naive.win_rate_se);
}

#[test]
fn bootstrap_is_reproducible_and_seed_dependent() {
    let mut g = Gen::new(3);
    let comps = hard_judgements(&mut g, 300, 0.6);
    let a = summarize(
        &comps,
        &EvalOptions {
            seed: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let b = summarize(
        &comps,
        &EvalOptions {
            seed: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let c = summarize(
        &comps,
        &EvalOptions {
            seed: 2,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(a, b);
    assert!(a.ci_low != c.ci_low || a.ci_high != c.ci_high);
    // A 99% interval is wider than a 90% one.
    let wide = summarize(
        &comps,
        &EvalOptions {
            ci_level: 0.99,
            ..Default::default()
        },
    )
    .unwrap();
    let narrow = summarize(
        &comps,
        &EvalOptions {
            ci_level: 0.90,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(wide.ci_high - wide.ci_low > narrow.ci_high - narrow.ci_low);
}
