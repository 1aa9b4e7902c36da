//! `dno-eval`: evaluation statistics for `dno eval` / `dno report`.
//!
//! * [`summarize`] turns judged comparisons (candidate vs. a fixed baseline) into an
//!   [`EvalSummary`]: win-rate (ties count ½), prompt-clustered standard error, a seeded
//!   percentile-bootstrap CI over prompts, a length-controlled win-rate (see [`lc`]), mean lengths,
//!   verifier accuracy, strict / loose constraint accuracy (all constraints met / mean fraction
//!   met), and the judge's first-position win-rate (position bias).
//! * [`render_report`] writes `report.md` (one table row per run and iteration) and `winrate.svg`
//!   (one series per run against iteration, π₁ at iteration 0: win-rate with CI whiskers and LC,
//!   accuracy when answers or constraints were checked, and mean lengths).
//! * [`stage`] is the `dno eval` stage over Parquet samples: it plans the comparisons (candidate
//!   vs. baseline sample or reference answer), has a `dno-oracle` oracle judge them, checks
//!   accuracy and writes the eval file with its summary.
//!
//! All rates are fractions in [0, 1] internally and in the serialised summary; the report
//! prints them as percentages.

use std::collections::HashMap;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

pub mod lc;
pub mod stage;
mod report;
pub mod stats;

pub use report::{render_markdown, render_report, render_svg, tick_decimals, ReportEntry, ReportFiles};

/// One judged comparison of a candidate response against the baseline response for a prompt.
/// A prompt may appear several times (e.g. `--all-samples`); statistics then cluster by prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub prompt_id: String,
    /// Probability that the candidate is preferred, in [0, 1]; the mean over both presentation
    /// orders when both were judged. A tie is 0.5.
    pub p_candidate: f64,
    /// P(candidate preferred) when the candidate was shown first, if that order was judged.
    pub p_candidate_first: Option<f64>,
    /// P(candidate preferred) when the candidate was shown second, if that order was judged.
    pub p_candidate_second: Option<f64>,
    /// Candidate response length in characters.
    pub candidate_len: usize,
    /// Baseline response length in characters.
    pub baseline_len: usize,
    /// Verifier verdict on the candidate, when the task has a checkable answer.
    pub candidate_correct: Option<bool>,
    /// Verifier verdict on the baseline.
    pub baseline_correct: Option<bool>,
    /// Fraction of the prompt's instruction-following constraints the candidate meets, in [0, 1],
    /// when the prompt has constraints.
    #[serde(default)]
    pub candidate_constraints: Option<f64>,
    /// Fraction of the constraints the baseline meets.
    #[serde(default)]
    pub baseline_constraints: Option<f64>,
}

impl Comparison {
    /// Build a comparison from the judge's per-order preferences (P(candidate preferred) with the
    /// candidate shown first / second); `p_candidate` is the mean of the orders present.
    /// Errors when neither order is given or a value is not a probability.
    pub fn from_orders(
        prompt_id: impl Into<String>,
        p_candidate_first: Option<f64>,
        p_candidate_second: Option<f64>,
        candidate_len: usize,
        baseline_len: usize,
    ) -> Result<Self> {
        let prompt_id = prompt_id.into();
        for (what, p) in [
            ("p_candidate_first", p_candidate_first),
            ("p_candidate_second", p_candidate_second),
        ] {
            if let Some(v) = p {
                if !(0.0..=1.0).contains(&v) {
                    bail!("prompt_id {prompt_id:?}: {what} = {v} is not a probability in [0, 1]");
                }
            }
        }
        let p_candidate = match (p_candidate_first, p_candidate_second) {
            (Some(a), Some(b)) => 0.5 * (a + b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => bail!("prompt_id {prompt_id:?}: no judged order (both p_candidate_first and p_candidate_second are missing)"),
        };
        Ok(Comparison {
            prompt_id,
            p_candidate,
            p_candidate_first,
            p_candidate_second,
            candidate_len,
            baseline_len,
            candidate_correct: None,
            baseline_correct: None,
            candidate_constraints: None,
            baseline_constraints: None,
        })
    }
}

/// Options for [`summarize`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EvalOptions {
    /// Bootstrap replicates for the CI (resampling prompts). Must be ≥ 1.
    pub bootstrap_samples: usize,
    /// Seed of the SplitMix64 generator used by the bootstrap.
    pub seed: u64,
    /// Two-sided confidence level of the CI, in (0, 1).
    pub ci_level: f64,
    /// L2 penalty of the length-control logistic fit (absolute; total sample weight = n_prompts).
    pub lc_l2: f64,
    /// Warn when |LC − raw| exceeds this (fraction; AlpacaEval uses 10 points).
    pub lc_warn_threshold: f64,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            bootstrap_samples: 2000,
            seed: dno_math::rng::DEFAULT_SEED,
            ci_level: 0.95,
            lc_l2: 1e-3,
            lc_warn_threshold: 0.10,
        }
    }
}

fn default_ci_level() -> f64 {
    0.95
}

/// Summary statistics of one evaluation (one iteration's candidate against the baseline).
/// Rates are fractions in [0, 1].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSummary {
    /// Number of comparisons.
    pub n: usize,
    /// Number of distinct prompts (the clustering unit for SE and bootstrap).
    pub n_prompts: usize,
    /// Mean over prompts of the per-prompt mean `p_candidate` (equals the plain mean when each
    /// prompt has the same number of comparisons).
    pub win_rate: f64,
    /// Sample std (ddof 1) of the per-prompt means / sqrt(n_prompts); 0 with a single prompt.
    pub win_rate_se: f64,
    /// Confidence level of [`ci_low`, `ci_high`].
    #[serde(default = "default_ci_level")]
    pub ci_level: f64,
    /// Percentile-bootstrap CI over prompts.
    pub ci_low: f64,
    pub ci_high: f64,
    /// Length-controlled win-rate σ(intercept) of the length GLM (see [`lc`]); equals
    /// `win_rate` when it cannot be fitted (see `lc_warning`).
    pub lc_win_rate: f64,
    /// Fitted slope on tanh(Δlen / std(Δlen)); `None` when the LC fell back to raw.
    #[serde(default)]
    pub lc_length_coef: Option<f64>,
    /// Set when the LC fell back to the raw win-rate or differs from it by > the threshold.
    pub lc_warning: Option<String>,
    /// Mean candidate / baseline length in characters (over comparisons).
    pub mean_len_candidate: f64,
    pub mean_len_baseline: f64,
    /// Fraction of comparisons with a verifier verdict where the response is correct.
    pub accuracy_candidate: Option<f64>,
    pub accuracy_baseline: Option<f64>,
    /// Constraints: strict accuracy, the fraction of comparisons with constraints where the
    /// response meets all of them (candidate / baseline).
    #[serde(default)]
    pub constraints_strict_candidate: Option<f64>,
    #[serde(default)]
    pub constraints_strict_baseline: Option<f64>,
    /// Constraints: loose accuracy, the mean fraction of constraints met.
    #[serde(default)]
    pub constraints_loose_candidate: Option<f64>,
    #[serde(default)]
    pub constraints_loose_baseline: Option<f64>,
    /// How often the response shown first wins, over all judged orders (0.5 = no position bias).
    pub first_position_win_rate: Option<f64>,
    /// Comparisons with p_candidate > 0.5, = 0.5, < 0.5.
    pub wins: usize,
    pub ties: usize,
    pub losses: usize,
    /// Other caveats (e.g. a single prompt makes SE/CI degenerate).
    #[serde(default)]
    pub notes: Vec<String>,
}

const TIE_TOL: f64 = 1e-9;
/// LC is flagged as an extrapolation when fewer than this share of comparisons have the
/// candidate at most as long (or at least as long) as the baseline.
const ONE_SIDED_FRACTION: f64 = 0.05;

fn check_prob(v: f64, what: &str, i: usize, id: &str) -> Result<()> {
    if !(0.0..=1.0).contains(&v) {
        bail!("comparison {i} (prompt_id {id:?}): {what} = {v} is not a probability in [0, 1]");
    }
    Ok(())
}

fn validate(comps: &[Comparison], opts: &EvalOptions) -> Result<()> {
    if comps.is_empty() {
        bail!("no comparisons to summarise");
    }
    if opts.bootstrap_samples == 0 {
        bail!("EvalOptions.bootstrap_samples must be at least 1");
    }
    if !(opts.ci_level > 0.0 && opts.ci_level < 1.0) {
        bail!(
            "EvalOptions.ci_level = {} must lie strictly between 0 and 1",
            opts.ci_level
        );
    }
    if !(opts.lc_l2.is_finite() && opts.lc_l2 >= 0.0) {
        bail!(
            "EvalOptions.lc_l2 = {} must be finite and non-negative",
            opts.lc_l2
        );
    }
    if !(opts.lc_warn_threshold.is_finite() && opts.lc_warn_threshold >= 0.0) {
        bail!(
            "EvalOptions.lc_warn_threshold = {} must be finite and non-negative",
            opts.lc_warn_threshold
        );
    }
    for (i, c) in comps.iter().enumerate() {
        check_prob(c.p_candidate, "p_candidate", i, &c.prompt_id)?;
        if let Some(p) = c.p_candidate_first {
            check_prob(p, "p_candidate_first", i, &c.prompt_id)?;
        }
        if let Some(p) = c.p_candidate_second {
            check_prob(p, "p_candidate_second", i, &c.prompt_id)?;
        }
        if let Some(p) = c.candidate_constraints {
            check_prob(p, "candidate_constraints", i, &c.prompt_id)?;
        }
        if let Some(p) = c.baseline_constraints {
            check_prob(p, "baseline_constraints", i, &c.prompt_id)?;
        }
    }
    Ok(())
}

fn mean_of_flags(flags: impl Iterator<Item = Option<bool>>) -> Option<f64> {
    let (mut k, mut n) = (0usize, 0usize);
    for f in flags.flatten() {
        n += 1;
        k += f as usize;
    }
    (n > 0).then(|| k as f64 / n as f64)
}

fn mean_of(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let v: Vec<f64> = values.flatten().collect();
    (!v.is_empty()).then(|| stats::mean(&v))
}

/// Summarise judged comparisons. Errors (one line) on empty input, probabilities outside
/// [0, 1] (naming the comparison and prompt), or invalid options; never panics.
pub fn summarize(comps: &[Comparison], opts: &EvalOptions) -> Result<EvalSummary> {
    validate(comps, opts)?;
    let n = comps.len();

    // Group comparisons by prompt, in order of first appearance.
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut group_of = Vec::with_capacity(n);
    let mut sums: Vec<f64> = Vec::new();
    let mut counts: Vec<usize> = Vec::new();
    for c in comps {
        let g = *index.entry(c.prompt_id.as_str()).or_insert_with(|| {
            sums.push(0.0);
            counts.push(0);
            sums.len() - 1
        });
        sums[g] += c.p_candidate;
        counts[g] += 1;
        group_of.push(g);
    }
    let n_prompts = sums.len();
    let prompt_means: Vec<f64> = sums
        .iter()
        .zip(&counts)
        .map(|(s, &k)| s / k as f64)
        .collect();

    let win_rate = stats::mean(&prompt_means);
    let win_rate_se = stats::sample_std(&prompt_means) / (n_prompts as f64).sqrt();
    let (ci_low, ci_high) = stats::bootstrap_mean_ci(
        &prompt_means,
        opts.bootstrap_samples,
        opts.ci_level,
        opts.seed,
    );

    let mut notes = Vec::new();
    if n_prompts == 1 {
        notes.push(
            "only one prompt: the standard error and the bootstrap CI are degenerate (zero width)"
                .to_string(),
        );
    }

    // Length-controlled win-rate.
    let weights: Vec<f64> = group_of.iter().map(|&g| 1.0 / counts[g] as f64).collect();
    let (lc_win_rate, lc_length_coef, lc_warning) =
        length_controlled(comps, &weights, win_rate, opts);

    let (mut wins, mut ties, mut losses) = (0, 0, 0);
    for c in comps {
        if (c.p_candidate - 0.5).abs() <= TIE_TOL {
            ties += 1;
        } else if c.p_candidate > 0.5 {
            wins += 1;
        } else {
            losses += 1;
        }
    }

    // Position bias: P(first-shown response wins). Candidate-first order: p_candidate_first;
    // candidate-second order: the baseline was first, so 1 − p_candidate_second.
    let mut first_wins = Vec::new();
    for c in comps {
        if let Some(p) = c.p_candidate_first {
            first_wins.push(p);
        }
        if let Some(p) = c.p_candidate_second {
            first_wins.push(1.0 - p);
        }
    }
    let first_position_win_rate = (!first_wins.is_empty()).then(|| stats::mean(&first_wins));

    Ok(EvalSummary {
        n,
        n_prompts,
        win_rate,
        win_rate_se,
        ci_level: opts.ci_level,
        ci_low,
        ci_high,
        lc_win_rate,
        lc_length_coef,
        lc_warning,
        mean_len_candidate: comps.iter().map(|c| c.candidate_len as f64).sum::<f64>() / n as f64,
        mean_len_baseline: comps.iter().map(|c| c.baseline_len as f64).sum::<f64>() / n as f64,
        accuracy_candidate: mean_of_flags(comps.iter().map(|c| c.candidate_correct)),
        accuracy_baseline: mean_of_flags(comps.iter().map(|c| c.baseline_correct)),
        constraints_strict_candidate: mean_of_flags(comps.iter().map(|c| c.candidate_constraints.map(|f| f >= 1.0))),
        constraints_strict_baseline: mean_of_flags(comps.iter().map(|c| c.baseline_constraints.map(|f| f >= 1.0))),
        constraints_loose_candidate: mean_of(comps.iter().map(|c| c.candidate_constraints)),
        constraints_loose_baseline: mean_of(comps.iter().map(|c| c.baseline_constraints)),
        first_position_win_rate,
        wins,
        ties,
        losses,
        notes,
    })
}

/// Returns (lc, slope, warning). See the [`lc`] module for the model.
fn length_controlled(
    comps: &[Comparison],
    weights: &[f64],
    raw: f64,
    opts: &EvalOptions,
) -> (f64, Option<f64>, Option<String>) {
    let deltas: Vec<f64> = comps
        .iter()
        .map(|c| c.candidate_len as f64 - c.baseline_len as f64)
        .collect();
    let sd = stats::sample_std(&deltas);
    if !(sd.is_finite() && sd > 1e-12) {
        return (
            raw,
            None,
            Some(
                "length difference (candidate − baseline) has zero variance, so length cannot be \
                 controlled: LC win-rate set to the raw win-rate"
                    .to_string(),
            ),
        );
    }
    // LC predicts at Δlen = 0; if nearly all comparisons lie on one side of 0 that is an
    // extrapolation and the intercept is poorly determined.
    let n = deltas.len() as f64;
    let longer = deltas.iter().filter(|&&d| d > 0.0).count() as f64 / n;
    let shorter = deltas.iter().filter(|&&d| d < 0.0).count() as f64 / n;
    let one_sided = (longer > 1.0 - ONE_SIDED_FRACTION || shorter > 1.0 - ONE_SIDED_FRACTION).then(|| {
        format!(
            "the candidate is longer than the baseline in {:.0}% and shorter in {:.0}% of comparisons, \
             so the LC win-rate (prediction at equal length) is an extrapolation",
            100.0 * longer,
            100.0 * shorter
        )
    });
    let x: Vec<f64> = deltas.iter().map(|d| (d / sd).tanh()).collect();
    let y: Vec<f64> = comps.iter().map(|c| c.p_candidate).collect();
    match lc::fit_logistic(&x, &y, weights, opts.lc_l2) {
        Some(fit) if fit.converged => {
            let lc = lc::predict(&fit, 0.0);
            let warning = ((lc - raw).abs() > opts.lc_warn_threshold).then(|| {
                format!(
                    "LC win-rate {:.1}% differs from the raw win-rate {:.1}% by more than {:.0} points \
                     (length coefficient {:.2}): the judge's preference depends strongly on length, or the length model \
                     does not fit (AlpacaEval treats this as a sign of GLM failure)",
                    100.0 * lc,
                    100.0 * raw,
                    100.0 * opts.lc_warn_threshold,
                    fit.slope
                )
            });
            let warning = match (warning, one_sided) {
                (Some(a), Some(b)) => Some(format!("{a}; {b}")),
                (a, b) => a.or(b),
            };
            (lc, Some(fit.slope), warning)
        }
        _ => (
            raw,
            None,
            Some(
                "length-control logistic fit did not converge: LC win-rate set to the raw win-rate"
                    .to_string(),
            ),
        ),
    }
}
