//! Pairing strategies: from a prompt's annotated candidates to training pairs
//! (chosen, rejected, target z, weight).
//!
//! A prompt's candidates are the K policy samples plus, in DNO-Prct, the
//! teacher's gold response (`source_is_reference = true`; Alg. 2, §5.1). Each
//! candidate is valued on one **basis**:
//!
//! * `score`: the judge's absolute score on the additive 6-point rubric
//!   (Fig. 3, App. C), used when *every* candidate of the prompt has a score
//!   (with [`Basis::Auto`]; repetitive candidates need none);
//! * `win-rate`: r_t(x,y) from [`crate::winrate`] (Alg. 1 line 3, §4).
//!
//! A candidate flagged `repetitive` (App. C "defect detection": many repeated
//! n-grams make a sample an automatic negative) is valued at the bottom of the
//! scale (`score_min`, default 0, or win-rate 0) whatever its annotation, so it
//! can only ever be rejected; two repetitive candidates tie and are not paired.
//!
//! Strategies ([`PairingStrategy`]):
//!
//! * `dno-prct` (§5.1, App. C large-margin rule): every unordered pair whose
//!   better member is a *positive* and beats the other by a large margin, all
//!   qualifying pairs kept, hard target z = 1. On scores: positive score ≥ 5
//!   ("positives must score 5 or 6"), margin ≥ 1 when the positive is a
//!   student (policy) sample, ≥ 2 when the positive is the teacher/reference.
//!   On win-rates (the paper pairs only from scores; this is our analogue):
//!   positive r ≥ 0.5 (it beats at least the average opponent), margin ≥ 1/6
//!   for a student positive and ≥ 1/3 for a teacher positive. These are the
//!   score margins divided by the width of the 6-point scale, and with the
//!   paper's K + 1 = 6 candidates (5 opponents each, hard judgments) a win-rate
//!   moves in steps of 1/5 = 0.2, so "one more point" becomes "one more win"
//!   (0.2 ≥ 1/6) and "two more points" becomes "two more wins" (0.4 ≥ 1/3).
//! * `max-min`: best vs worst candidate of the prompt (SPPO; RLHFlow
//!   `max_min`), z = 1. Ties for best/worst go to the earliest candidate.
//! * `soft` (Alg. 1, Eq. 8): every unordered pair, oriented so that the chosen
//!   has the higher value, with soft target z = σ(r(y⁺) − r(y⁻)) ∈ [½, σ(1)].
//!   On the score basis, scores are first mapped to [0, 1] by
//!   (s − score_min)/(score_max − score_min).
//!
//! Filters, applied in this order, each dropped pair counted under one reason
//! ([`DropCounts`]): a member without a value (`unrated`), equal values
//! (`tie`), margin < `min_margin` (`below_min_margin`), then for `dno-prct`
//! the positive threshold (`positive_below_threshold`) and the margin rule
//! (`margin_below_rule`), and finally `max_pairs_per_prompt` (`over_cap`):
//! the pairs with the largest margins are kept, ties broken by candidate order
//! (chosen index, then rejected index). Kept pairs are returned in candidate
//! order. Every pair has weight 1: the paper trains on its pairs uniformly;
//! the field is there for callers who reweight.
//!
//! Replay ([`replay_counts`], [`select_replay`], [`mix_replay`]): App. C
//! trains iteration t on its own pairs plus "at most 30% of pairs from t−1,
//! 15% from t−2" (not re-sampled: the old responses and labels are reused;
//! their reference log-probs must be recomputed under the new π_t). Here
//! `fractions[k]` is the largest share of the *final mixed set* that may come
//! from iteration t−1−k, so with N current pairs and ample history the counts
//! are m_k = ⌊f_k·N/(1 − Σf)⌋ (55 current pairs with f = (0.3, 0.15) give
//! 30 + 15 replayed pairs out of 100). When an old iteration has fewer pairs
//! than its share, all of them are used and the others' counts are recomputed
//! so that every share stays ≤ f_k. Which old pairs are used is a seeded,
//! deterministic uniform choice ([`SplitMix64`]).

use crate::loss::{sigmoid, PairTargets};
use crate::{check_finite, MathError, Result, SplitMix64};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

/// Tolerance for comparing margins and thresholds (scores and win-rates are
/// small rationals; 1/6 must not fail against 1 − 5/6).
const EPS: f64 = 1e-9;

/// One candidate response of a prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// Sample id.
    pub id: String,
    /// True for the teacher / gold / reference response (y_gold of Alg. 2).
    pub source_is_reference: bool,
    /// True when defect detection flagged the sample: an automatic negative.
    pub repetitive: bool,
    /// Judge score on the rubric, if any.
    pub score: Option<f64>,
}

/// How pairs are built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PairingStrategy {
    /// DNO-Prct's large-margin rule (§5.1, App. C).
    DnoPrct,
    /// Best vs worst per prompt.
    MaxMin,
    /// All pairs with soft targets (Alg. 1, Eq. 8).
    Soft,
}

impl PairingStrategy {
    /// The command-line name.
    pub fn as_str(&self) -> &'static str {
        match self {
            PairingStrategy::DnoPrct => "dno-prct",
            PairingStrategy::MaxMin => "max-min",
            PairingStrategy::Soft => "soft",
        }
    }
}

impl fmt::Display for PairingStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PairingStrategy {
    type Err = MathError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "dno-prct" => Ok(PairingStrategy::DnoPrct),
            "max-min" => Ok(PairingStrategy::MaxMin),
            "soft" => Ok(PairingStrategy::Soft),
            other => Err(MathError::new(format!(
                "unknown pairing strategy '{other}' (expected one of dno-prct, max-min, soft)"
            ))),
        }
    }
}

/// Which annotation values the candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Basis {
    /// Scores when every candidate of the prompt has one, else win-rates.
    Auto,
    /// Judge scores only (candidates without one are unrated).
    Score,
    /// Win-rates only (candidates without one are unrated).
    WinRate,
}

impl fmt::Display for Basis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Basis::Auto => "auto",
            Basis::Score => "score",
            Basis::WinRate => "win-rate",
        })
    }
}

impl FromStr for Basis {
    type Err = MathError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Basis::Auto),
            "score" => Ok(Basis::Score),
            "win-rate" | "winrate" => Ok(Basis::WinRate),
            other => Err(MathError::new(format!("unknown pairing basis '{other}' (expected auto, score or win-rate)"))),
        }
    }
}

/// The basis a prompt was actually paired on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ValueBasis {
    /// Judge scores.
    Score,
    /// Win-rates.
    WinRate,
}

/// Who beat whom (Table 2 categories).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PairKind {
    /// Teacher (reference) chosen over a student (policy) sample.
    TeacherOverStudent,
    /// Student chosen over the teacher.
    StudentOverTeacher,
    /// Student over student.
    StudentOverStudent,
    /// Teacher over teacher (only with several reference responses).
    TeacherOverTeacher,
}

impl PairKind {
    fn of(chosen: &Candidate, rejected: &Candidate) -> Self {
        match (chosen.source_is_reference, rejected.source_is_reference) {
            (true, false) => PairKind::TeacherOverStudent,
            (false, true) => PairKind::StudentOverTeacher,
            (false, false) => PairKind::StudentOverStudent,
            (true, true) => PairKind::TeacherOverTeacher,
        }
    }
}

/// Pairing settings; [`Default`] gives the paper's values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairingConfig {
    /// Strategy.
    pub strategy: PairingStrategy,
    /// Which annotation values candidates.
    pub basis: Basis,
    /// Bottom of the score scale (0 on the additive 6-point rubric); repetitive
    /// candidates get this score.
    pub score_min: f64,
    /// Top of the score scale (6).
    pub score_max: f64,
    /// dno-prct on scores: a positive must score at least this (5).
    pub score_positive_threshold: f64,
    /// dno-prct on scores: margin needed over the negative when the positive is a student (1).
    pub score_margin_student: f64,
    /// dno-prct on scores: margin needed when the positive is the teacher (2).
    pub score_margin_reference: f64,
    /// dno-prct on win-rates: a positive must have r at least this (0.5).
    pub winrate_positive_threshold: f64,
    /// dno-prct on win-rates: margin for a student positive (1/6).
    pub winrate_margin_student: f64,
    /// dno-prct on win-rates: margin for a teacher positive (1/3).
    pub winrate_margin_reference: f64,
    /// Every strategy: drop pairs whose margin (native units of the basis) is below this (0).
    pub min_margin: f64,
    /// Keep at most this many pairs per prompt (largest margins first); `None` = all.
    pub max_pairs_per_prompt: Option<usize>,
}

impl Default for PairingConfig {
    fn default() -> Self {
        Self {
            strategy: PairingStrategy::DnoPrct,
            basis: Basis::Auto,
            score_min: 0.0,
            score_max: 6.0,
            score_positive_threshold: 5.0,
            score_margin_student: 1.0,
            score_margin_reference: 2.0,
            winrate_positive_threshold: 0.5,
            winrate_margin_student: 1.0 / 6.0,
            winrate_margin_reference: 1.0 / 3.0,
            min_margin: 0.0,
            max_pairs_per_prompt: None,
        }
    }
}

impl PairingConfig {
    /// The default settings with another strategy.
    pub fn with_strategy(strategy: PairingStrategy) -> Self {
        Self { strategy, ..Self::default() }
    }

    /// Checks the settings; returns a one-line error naming the bad field.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("score_min", self.score_min),
            ("score_max", self.score_max),
            ("score_positive_threshold", self.score_positive_threshold),
            ("winrate_positive_threshold", self.winrate_positive_threshold),
        ] {
            check_finite(name, v)?;
        }
        for (name, v) in [
            ("score_margin_student", self.score_margin_student),
            ("score_margin_reference", self.score_margin_reference),
            ("winrate_margin_student", self.winrate_margin_student),
            ("winrate_margin_reference", self.winrate_margin_reference),
            ("min_margin", self.min_margin),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(MathError::new(format!("{name} must be a finite number >= 0, got {v}")));
            }
        }
        if self.score_max <= self.score_min {
            return Err(MathError::new(format!(
                "score_max ({}) must be greater than score_min ({})",
                self.score_max, self.score_min
            )));
        }
        if self.max_pairs_per_prompt == Some(0) {
            return Err(MathError::new("max_pairs_per_prompt must be at least 1 (or unset)"));
        }
        Ok(())
    }

    fn floor(&self, basis: ValueBasis) -> f64 {
        match basis {
            ValueBasis::Score => self.score_min,
            ValueBasis::WinRate => 0.0,
        }
    }

    /// Maps a value of `basis` to [0, 1] (win-rates unchanged; scores rescaled).
    pub fn to_unit(&self, basis: ValueBasis, v: f64) -> f64 {
        match basis {
            ValueBasis::WinRate => v,
            ValueBasis::Score => ((v - self.score_min) / (self.score_max - self.score_min)).clamp(0.0, 1.0),
        }
    }
}

/// One training pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pair {
    /// Prompt id.
    pub prompt_id: String,
    /// Chosen (preferred) sample id.
    pub chosen: String,
    /// Rejected sample id.
    pub rejected: String,
    /// Target z = P(chosen ≻ rejected) for the `dno` loss: 1 for hard pairs,
    /// σ(r⁺ − r⁻) for soft pairs.
    pub target: f64,
    /// Pair weight (1 from every strategy here).
    pub weight: f64,
    /// chosen_value − rejected_value (> 0).
    pub margin: f64,
    /// Basis of the values.
    pub basis: ValueBasis,
    /// Value of the chosen on the basis (repetitive = bottom of the scale).
    pub chosen_value: f64,
    /// Value of the rejected.
    pub rejected_value: f64,
    /// Teacher/student category.
    pub kind: PairKind,
}

impl Pair {
    /// Loss targets: z = `target`, SPPO's P_win / P_lose = the two values
    /// mapped to [0, 1] (win-rates as they are; scores rescaled).
    pub fn targets(&self, cfg: &PairingConfig) -> PairTargets {
        PairTargets {
            z: self.target,
            p_win: cfg.to_unit(self.basis, self.chosen_value),
            p_lose: cfg.to_unit(self.basis, self.rejected_value),
        }
    }
}

/// Dropped pairs by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropCounts {
    /// A member had no value on the basis.
    pub unrated: usize,
    /// Equal values.
    pub tie: usize,
    /// Margin below `min_margin`.
    pub below_min_margin: usize,
    /// dno-prct: the better member is not a positive.
    pub positive_below_threshold: usize,
    /// dno-prct: margin below the student/teacher rule.
    pub margin_below_rule: usize,
    /// Beyond `max_pairs_per_prompt`.
    pub over_cap: usize,
}

impl DropCounts {
    /// Sum over reasons.
    pub fn total(&self) -> usize {
        self.unrated + self.tie + self.below_min_margin + self.positive_below_threshold + self.margin_below_rule + self.over_cap
    }

    fn add(&mut self, o: &DropCounts) {
        self.unrated += o.unrated;
        self.tie += o.tie;
        self.below_min_margin += o.below_min_margin;
        self.positive_below_threshold += o.positive_below_threshold;
        self.margin_below_rule += o.margin_below_rule;
        self.over_cap += o.over_cap;
    }
}

/// Counts over all prompts paired so far. `considered = kept + dropped.total()`.
/// `considered` counts the unordered candidate pairs examined: all of them for
/// `dno-prct` and `soft`, the single best-vs-worst pair for `max-min`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairingSummary {
    /// Prompts seen.
    pub prompts: usize,
    /// Prompts that produced at least one pair.
    pub prompts_with_pairs: usize,
    /// Prompts paired on scores.
    pub prompts_on_scores: usize,
    /// Prompts paired on win-rates.
    pub prompts_on_win_rates: usize,
    /// Candidates seen.
    pub candidates: usize,
    /// Candidates with no value on their prompt's basis (and not repetitive).
    pub unrated_candidates: usize,
    /// Candidates flagged repetitive.
    pub repetitive_candidates: usize,
    /// Candidate pairs examined.
    pub considered: usize,
    /// Pairs kept.
    pub kept: usize,
    /// Pairs dropped, by reason.
    pub dropped: DropCounts,
    /// Kept teacher ≻ student pairs (Table 2).
    pub teacher_over_student: usize,
    /// Kept student ≻ teacher pairs.
    pub student_over_teacher: usize,
    /// Kept student ≻ student pairs.
    pub student_over_student: usize,
    /// Kept teacher ≻ teacher pairs.
    pub teacher_over_teacher: usize,
}

impl PairingSummary {
    /// Adds another summary's counts to this one.
    pub fn merge(&mut self, o: &PairingSummary) {
        self.prompts += o.prompts;
        self.prompts_with_pairs += o.prompts_with_pairs;
        self.prompts_on_scores += o.prompts_on_scores;
        self.prompts_on_win_rates += o.prompts_on_win_rates;
        self.candidates += o.candidates;
        self.unrated_candidates += o.unrated_candidates;
        self.repetitive_candidates += o.repetitive_candidates;
        self.considered += o.considered;
        self.kept += o.kept;
        self.dropped.add(&o.dropped);
        self.teacher_over_student += o.teacher_over_student;
        self.student_over_teacher += o.student_over_teacher;
        self.student_over_student += o.student_over_student;
        self.teacher_over_teacher += o.teacher_over_teacher;
    }

    fn count_kind(&mut self, kind: PairKind) {
        match kind {
            PairKind::TeacherOverStudent => self.teacher_over_student += 1,
            PairKind::StudentOverTeacher => self.student_over_teacher += 1,
            PairKind::StudentOverStudent => self.student_over_student += 1,
            PairKind::TeacherOverTeacher => self.teacher_over_teacher += 1,
        }
    }
}

/// Builds the pairs of one prompt and adds its counts to `summary`.
///
/// `win_rates`, when given, is aligned with `candidates` (e.g. from
/// [`crate::PreferenceMatrix::win_rates`]). Errors (nothing added to
/// `summary`) on an invalid config, duplicate candidate ids, a misaligned
/// `win_rates`, a score outside [score_min, score_max] or a win-rate outside [0, 1].
pub fn pair_prompt(
    prompt_id: &str,
    candidates: &[Candidate],
    win_rates: Option<&[Option<f64>]>,
    cfg: &PairingConfig,
    summary: &mut PairingSummary,
) -> Result<Vec<Pair>> {
    cfg.validate()?;
    let mut seen = HashSet::with_capacity(candidates.len());
    for c in candidates {
        if !seen.insert(c.id.as_str()) {
            return Err(MathError::new(format!("prompt '{prompt_id}': duplicate candidate id '{}'", c.id)));
        }
        if let Some(s) = c.score {
            if !(cfg.score_min..=cfg.score_max).contains(&s) {
                return Err(MathError::new(format!(
                    "prompt '{prompt_id}': score of candidate '{}' must lie in [{}, {}], got {s}",
                    c.id, cfg.score_min, cfg.score_max
                )));
            }
        }
    }
    if let Some(w) = win_rates {
        if w.len() != candidates.len() {
            return Err(MathError::new(format!(
                "prompt '{prompt_id}': {} win-rates given for {} candidates",
                w.len(),
                candidates.len()
            )));
        }
        for (c, r) in candidates.iter().zip(w) {
            if let Some(r) = r {
                if !(0.0..=1.0).contains(r) {
                    return Err(MathError::new(format!(
                        "prompt '{prompt_id}': win-rate of candidate '{}' must lie in [0, 1], got {r}",
                        c.id
                    )));
                }
            }
        }
    }

    // Repetitive candidates are automatic negatives and need no score.
    let all_scored = candidates.iter().any(|c| !c.repetitive)
        && candidates.iter().all(|c| c.repetitive || c.score.is_some());
    let basis = match cfg.basis {
        Basis::Score => ValueBasis::Score,
        Basis::WinRate => ValueBasis::WinRate,
        Basis::Auto if all_scored => ValueBasis::Score,
        Basis::Auto => ValueBasis::WinRate,
    };
    let floor = cfg.floor(basis);
    let values: Vec<Option<f64>> = candidates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if c.repetitive {
                Some(floor)
            } else {
                match basis {
                    ValueBasis::Score => c.score,
                    ValueBasis::WinRate => win_rates.and_then(|w| w[i]),
                }
            }
        })
        .collect();

    let mut s = PairingSummary {
        prompts: 1,
        candidates: candidates.len(),
        unrated_candidates: values.iter().filter(|v| v.is_none()).count(),
        repetitive_candidates: candidates.iter().filter(|c| c.repetitive).count(),
        ..Default::default()
    };
    match basis {
        ValueBasis::Score => s.prompts_on_scores = 1,
        ValueBasis::WinRate => s.prompts_on_win_rates = 1,
    }

    // (chosen index, rejected index, margin) of pairs passing every rule but the cap.
    let mut passing: Vec<(usize, usize, f64)> = Vec::new();
    let mut judge = |hi: usize, lo: usize, s: &mut PairingSummary| {
        let (vh, vl) = (values[hi].unwrap_or(floor), values[lo].unwrap_or(floor));
        let margin = vh - vl;
        if margin < cfg.min_margin - EPS {
            s.dropped.below_min_margin += 1;
            return;
        }
        if cfg.strategy == PairingStrategy::DnoPrct {
            let (threshold, m_student, m_reference) = match basis {
                ValueBasis::Score => (cfg.score_positive_threshold, cfg.score_margin_student, cfg.score_margin_reference),
                ValueBasis::WinRate => {
                    (cfg.winrate_positive_threshold, cfg.winrate_margin_student, cfg.winrate_margin_reference)
                }
            };
            if candidates[hi].repetitive || vh < threshold - EPS {
                s.dropped.positive_below_threshold += 1;
                return;
            }
            let need = if candidates[hi].source_is_reference { m_reference } else { m_student };
            if margin < need - EPS {
                s.dropped.margin_below_rule += 1;
                return;
            }
        }
        passing.push((hi, lo, margin));
    };

    match cfg.strategy {
        PairingStrategy::DnoPrct | PairingStrategy::Soft => {
            for i in 0..candidates.len() {
                for k in (i + 1)..candidates.len() {
                    s.considered += 1;
                    match (values[i], values[k]) {
                        (Some(a), Some(b)) if a > b => judge(i, k, &mut s),
                        (Some(a), Some(b)) if b > a => judge(k, i, &mut s),
                        (Some(_), Some(_)) => s.dropped.tie += 1,
                        _ => s.dropped.unrated += 1,
                    }
                }
            }
        }
        PairingStrategy::MaxMin => {
            let rated: Vec<(usize, f64)> = values.iter().enumerate().filter_map(|(i, v)| v.map(|v| (i, v))).collect();
            if rated.len() >= 2 {
                s.considered = 1;
                let mut best = rated[0];
                let mut worst = rated[0];
                for &(i, v) in &rated[1..] {
                    if v > best.1 {
                        best = (i, v);
                    }
                    if v < worst.1 {
                        worst = (i, v);
                    }
                }
                if best.1 > worst.1 {
                    judge(best.0, worst.0, &mut s);
                } else {
                    s.dropped.tie += 1;
                }
            }
        }
    }

    // Cap: keep the largest margins, ties by (chosen, rejected) index; output in candidate order.
    if let Some(cap) = cfg.max_pairs_per_prompt {
        if passing.len() > cap {
            let mut order: Vec<usize> = (0..passing.len()).collect();
            order.sort_by(|&x, &y| {
                let (a, b) = (passing[x], passing[y]);
                b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)).then(a.1.cmp(&b.1))
            });
            let mut keep = vec![false; passing.len()];
            for &o in &order[..cap] {
                keep[o] = true;
            }
            s.dropped.over_cap += passing.len() - cap;
            passing = passing.into_iter().zip(keep).filter(|(_, k)| *k).map(|(p, _)| p).collect();
        }
    }
    passing.sort_by(|a, b| a.0.min(a.1).cmp(&b.0.min(b.1)).then(a.0.max(a.1).cmp(&b.0.max(b.1))));

    let pairs: Vec<Pair> = passing
        .into_iter()
        .map(|(hi, lo, margin)| {
            let (vh, vl) = (values[hi].unwrap_or(floor), values[lo].unwrap_or(floor));
            let target = match cfg.strategy {
                PairingStrategy::Soft => sigmoid(cfg.to_unit(basis, vh) - cfg.to_unit(basis, vl)),
                _ => 1.0,
            };
            Pair {
                prompt_id: prompt_id.to_string(),
                chosen: candidates[hi].id.clone(),
                rejected: candidates[lo].id.clone(),
                target,
                weight: 1.0,
                margin,
                basis,
                chosen_value: vh,
                rejected_value: vl,
                kind: PairKind::of(&candidates[hi], &candidates[lo]),
            }
        })
        .collect();
    s.kept = pairs.len();
    s.prompts_with_pairs = usize::from(!pairs.is_empty());
    for p in &pairs {
        s.count_kind(p.kind);
    }
    summary.merge(&s);
    Ok(pairs)
}

/// How many pairs to replay from each earlier iteration.
///
/// `n_current`: pairs of the current iteration; `available[k]`: pairs of
/// iteration t−1−k; `fractions[k]`: the largest share of the final mixed set
/// that may come from t−1−k (App. C: 0.3, 0.15). Extra entries of either
/// slice beyond the shorter one are ignored. Guarantees, for the returned m:
/// m_k ≤ `available[k]` and m_k ≤ `fractions[k]`·(n_current + Σm). With ample
/// history m_k = ⌊f_k·n_current/(1 − Σf)⌋.
pub fn replay_counts(n_current: usize, available: &[usize], fractions: &[f64]) -> Result<Vec<usize>> {
    let k = available.len().min(fractions.len());
    let f = &fractions[..k];
    for (i, &x) in f.iter().enumerate() {
        if !(x.is_finite() && (0.0..1.0).contains(&x)) {
            return Err(MathError::new(format!("replay fraction {i} must lie in [0, 1), got {x}")));
        }
    }
    let total_f: f64 = f.iter().sum();
    if total_f >= 1.0 {
        return Err(MathError::new(format!("replay fractions must sum to less than 1, got {total_f}")));
    }
    // Sources short of their share are used in full; the target size T solves
    // T = n + Σ_capped a_k + Σ_free f_k·T.
    let mut capped = vec![false; k];
    let mut target;
    loop {
        let fixed: f64 = (0..k).filter(|&i| capped[i]).map(|i| available[i] as f64).sum();
        let free_f: f64 = (0..k).filter(|&i| !capped[i]).map(|i| f[i]).sum();
        target = (n_current as f64 + fixed) / (1.0 - free_f);
        let newly: Vec<usize> = (0..k).filter(|&i| !capped[i] && (available[i] as f64) < f[i] * target).collect();
        if newly.is_empty() {
            break;
        }
        for i in newly {
            capped[i] = true;
        }
    }
    let mut m: Vec<usize> = (0..k).map(|i| available[i].min((f[i] * target + EPS).floor() as usize)).collect();
    // Flooring can leave a share a hair above f_k; shrink until every share holds.
    loop {
        let total = (n_current + m.iter().sum::<usize>()) as f64;
        let mut changed = false;
        for i in 0..k {
            let allowed = (f[i] * total + EPS).floor() as usize;
            if m[i] > allowed {
                m[i] = allowed;
                changed = true;
            }
        }
        if !changed {
            return Ok(m);
        }
    }
}

/// Which earlier pairs to replay: for each earlier iteration k (t−1−k), the
/// sorted indices of its chosen pairs. Counts as [`replay_counts`]; the choice
/// within iteration k is uniform, from a [`SplitMix64`] seeded by `seed` and k.
pub fn select_replay(n_current: usize, available: &[usize], fractions: &[f64], seed: u64) -> Result<Vec<Vec<usize>>> {
    let counts = replay_counts(n_current, available, fractions)?;
    Ok(counts
        .iter()
        .enumerate()
        .map(|(k, &m)| {
            let mut rng = SplitMix64::new(seed ^ (k as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
            rng.choose_indices(available[k], m)
        })
        .collect())
}

/// The current pairs followed by the replayed ones (iteration t−1's picks in
/// their original order, then t−2's, ...). `history[k]` = pairs of t−1−k.
pub fn mix_replay<T: Clone>(current: &[T], history: &[Vec<T>], fractions: &[f64], seed: u64) -> Result<Vec<T>> {
    let available: Vec<usize> = history.iter().map(Vec::len).collect();
    let picks = select_replay(current.len(), &available, fractions, seed)?;
    let mut out = current.to_vec();
    for (k, idx) in picks.iter().enumerate() {
        out.extend(idx.iter().map(|&i| history[k][i].clone()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(id: &str, reference: bool, repetitive: bool, score: Option<f64>) -> Candidate {
        Candidate { id: id.into(), source_is_reference: reference, repetitive, score }
    }

    fn names(pairs: &[Pair]) -> Vec<(String, String)> {
        pairs.iter().map(|p| (p.chosen.clone(), p.rejected.clone())).collect()
    }

    fn pr(a: &str, b: &str) -> (String, String) {
        (a.to_string(), b.to_string())
    }

    fn check_invariants(s: &PairingSummary) {
        assert_eq!(s.considered, s.kept + s.dropped.total(), "{s:?}");
        assert_eq!(
            s.kept,
            s.teacher_over_student + s.student_over_teacher + s.student_over_student + s.teacher_over_teacher
        );
    }

    /// The paper's setting: teacher (gold) + 5 students, scores on the 6-point rubric.
    fn paper_prompt() -> Vec<Candidate> {
        vec![
            cand("gold", true, false, Some(5.0)),
            cand("s1", false, false, Some(6.0)),
            cand("s2", false, false, Some(5.0)),
            cand("s3", false, false, Some(3.0)),
            cand("s4", false, false, Some(4.0)),
            cand("s5", false, true, Some(6.0)), // repetitive: automatic negative despite its score
        ]
    }

    #[test]
    fn dno_prct_scores_follow_the_paper_rule() {
        let cfg = PairingConfig::default();
        let mut s = PairingSummary::default();
        let pairs = pair_prompt("p", &paper_prompt(), None, &cfg, &mut s).unwrap();
        // By hand (values: gold 5 (teacher), s1 6, s2 5, s3 3, s4 4, s5 → 0):
        // gold>s3 (2 ≥ 2 ok), gold>s4 (1 < 2 no), gold>s5 (5 ok); s1>gold (1 ok), s1>s2, s1>s3, s1>s4, s1>s5;
        // s2>s3, s2>s4, s2>s5; gold vs s2 tie; s4>s3 and s4>s5 positive 4 < 5; s3>s5 positive 3 < 5.
        // Returned in candidate-pair order.
        let expect = vec![
            pr("s1", "gold"),
            pr("gold", "s3"),
            pr("gold", "s5"),
            pr("s1", "s2"),
            pr("s1", "s3"),
            pr("s1", "s4"),
            pr("s1", "s5"),
            pr("s2", "s3"),
            pr("s2", "s4"),
            pr("s2", "s5"),
        ];
        assert_eq!(names(&pairs), expect);
        assert!(pairs.iter().all(|p| p.target == 1.0 && p.weight == 1.0 && p.basis == ValueBasis::Score));
        assert_eq!(s.considered, 15);
        assert_eq!(s.kept, 10);
        assert_eq!(s.dropped.tie, 1);
        assert_eq!(s.dropped.margin_below_rule, 1);
        assert_eq!(s.dropped.positive_below_threshold, 3);
        assert_eq!((s.teacher_over_student, s.student_over_teacher, s.student_over_student), (2, 1, 7));
        assert_eq!(s.repetitive_candidates, 1);
        assert_eq!(s.prompts_on_scores, 1);
        check_invariants(&s);
        // The repetitive sample is never chosen.
        assert!(pairs.iter().all(|p| p.chosen != "s5"));
        let p = pairs.iter().find(|p| p.rejected == "s5" && p.chosen == "s1").unwrap();
        assert_eq!((p.chosen_value, p.rejected_value, p.margin), (6.0, 0.0, 6.0));
    }

    #[test]
    fn dno_prct_margin_rule_depends_on_positive_source() {
        // Teacher 6 vs student 5: margin 1 < 2 → dropped. Student 6 vs teacher 5: margin 1 ≥ 1 → kept.
        let cfg = PairingConfig::default();
        let mut s = PairingSummary::default();
        let a = pair_prompt("a", &[cand("t", true, false, Some(6.0)), cand("x", false, false, Some(5.0))], None, &cfg, &mut s)
            .unwrap();
        assert!(a.is_empty());
        let b = pair_prompt("b", &[cand("t", true, false, Some(5.0)), cand("x", false, false, Some(6.0))], None, &cfg, &mut s)
            .unwrap();
        assert_eq!(names(&b), vec![pr("x", "t")]);
        assert_eq!(b[0].kind, PairKind::StudentOverTeacher);
        assert_eq!(s.prompts, 2);
        assert_eq!(s.prompts_with_pairs, 1);
        assert_eq!(s.dropped.margin_below_rule, 1);
        check_invariants(&s);
    }

    #[test]
    fn dno_prct_on_win_rates_when_scores_incomplete() {
        // One score missing → Auto falls back to win-rates.
        let c = vec![
            cand("gold", true, false, Some(5.0)),
            cand("s1", false, false, None),
            cand("s2", false, false, Some(4.0)),
            cand("s3", false, false, Some(2.0)),
        ];
        // 4 candidates, 3 opponents each: win-rates in steps of 1/3.
        let w = [Some(1.0), Some(2.0 / 3.0), Some(1.0 / 3.0), Some(0.0)];
        let mut s = PairingSummary::default();
        let pairs = pair_prompt("p", &c, Some(&w), &PairingConfig::default(), &mut s).unwrap();
        // gold (teacher) needs Δ ≥ 1/3: vs s1 (1/3 ok), s2, s3. s1 (student, r=2/3 ≥ .5) needs ≥ 1/6: vs s2, s3.
        // s2 (r=1/3) is not a positive.
        assert_eq!(
            names(&pairs),
            vec![pr("gold", "s1"), pr("gold", "s2"), pr("gold", "s3"), pr("s1", "s2"), pr("s1", "s3")]
        );
        assert!(pairs.iter().all(|p| p.basis == ValueBasis::WinRate));
        assert_eq!(s.prompts_on_win_rates, 1);
        assert_eq!(s.dropped.positive_below_threshold, 1);
        check_invariants(&s);
        // Without win-rates every pair is unrated.
        let mut s2 = PairingSummary::default();
        assert!(pair_prompt("p", &c, None, &PairingConfig::default(), &mut s2).unwrap().is_empty());
        assert_eq!(s2.dropped.unrated, 6);
        assert_eq!(s2.unrated_candidates, 4);
        check_invariants(&s2);
    }

    #[test]
    fn default_win_rate_margins_map_one_point_to_one_win() {
        // Six candidates, five opponents each: a one-win gap (0.2) passes the student rule
        // (≥ 1/6), a one-win gap from the teacher fails (< 1/3), two wins pass.
        let c: Vec<Candidate> = (0..3).map(|i| cand(&format!("c{i}"), i == 0, false, None)).collect();
        let w = [Some(0.8), Some(0.6), Some(0.4)];
        let mut s = PairingSummary::default();
        let cfg = PairingConfig { basis: Basis::WinRate, ..Default::default() };
        let pairs = pair_prompt("p", &c, Some(&w), &cfg, &mut s).unwrap();
        // c0 (teacher .8): vs c1 Δ .2 < 1/3 dropped; vs c2 Δ .4 kept. c1 (student .6) vs c2 Δ .2 kept.
        assert_eq!(names(&pairs), vec![pr("c0", "c2"), pr("c1", "c2")]);
    }

    #[test]
    fn max_min_best_vs_worst() {
        let cfg = PairingConfig::with_strategy(PairingStrategy::MaxMin);
        let mut s = PairingSummary::default();
        let pairs = pair_prompt("p", &paper_prompt(), None, &cfg, &mut s).unwrap();
        // Best: s1 (6; repetitive s5 is at 0). Worst: s5 (0).
        assert_eq!(names(&pairs), vec![pr("s1", "s5")]);
        assert_eq!(pairs[0].target, 1.0);
        assert_eq!(s.considered, 1);
        check_invariants(&s);
        // Without the repetitive one, the worst is s3; earliest wins ties for best.
        let c = vec![
            cand("a", false, false, Some(4.0)),
            cand("b", false, false, Some(5.0)),
            cand("c", false, false, Some(5.0)),
            cand("d", false, false, Some(1.0)),
            cand("e", false, false, Some(1.0)),
        ];
        let pairs = pair_prompt("p", &c, None, &cfg, &mut s).unwrap();
        assert_eq!(names(&pairs), vec![pr("b", "d")]);
        // All equal → tie, nothing kept.
        let c = vec![cand("a", false, false, Some(3.0)), cand("b", false, false, Some(3.0))];
        let mut s = PairingSummary::default();
        assert!(pair_prompt("p", &c, None, &cfg, &mut s).unwrap().is_empty());
        assert_eq!(s.dropped.tie, 1);
        check_invariants(&s);
    }

    #[test]
    fn soft_pairs_all_with_sigmoid_targets() {
        let cfg = PairingConfig::with_strategy(PairingStrategy::Soft);
        let c: Vec<Candidate> = ["a", "b", "c", "d"].iter().map(|i| cand(i, false, false, None)).collect();
        let w = [Some(0.25), Some(0.75), Some(0.5), Some(0.5)];
        let mut s = PairingSummary::default();
        let pairs = pair_prompt("p", &c, Some(&w), &cfg, &mut s).unwrap();
        // c vs d tie dropped; the rest oriented by win-rate.
        assert_eq!(names(&pairs), vec![pr("b", "a"), pr("c", "a"), pr("d", "a"), pr("b", "c"), pr("b", "d")]);
        let ba = &pairs[0];
        assert!((ba.target - 1.0 / (1.0 + (-0.5f64).exp())).abs() < 1e-15);
        assert!(pairs.iter().all(|p| p.target > 0.5 && p.target <= sigmoid(1.0)));
        let t = ba.targets(&cfg);
        assert_eq!((t.p_win, t.p_lose), (0.75, 0.25));
        assert_eq!(s.dropped.tie, 1);
        check_invariants(&s);
        // On scores, values are rescaled to [0, 1] first: 6 vs 3 → σ(0.5).
        let c = vec![cand("x", false, false, Some(6.0)), cand("y", false, false, Some(3.0))];
        let pairs = pair_prompt("q", &c, None, &cfg, &mut s).unwrap();
        assert!((pairs[0].target - sigmoid(0.5)).abs() < 1e-15);
        assert_eq!(pairs[0].targets(&cfg).p_lose, 0.5);
    }

    /// What `--strategy soft` hands the `dno` loss with a 0/1 verifier and every pair judged (the
    /// quickstart: K = 8, no reference): a correct sample beats each wrong one and ties the other
    /// correct ones, so r⁺ − r⁻ = K / (2(K − 1)) whatever the number c of correct samples, and every
    /// target is σ(4/7) ≈ 0.639. Pairs are oriented chosen ≥ rejected, so z never falls below ½;
    /// Eq. 8's other orientation, (y⁻, y⁺, 1 − z), gives the same loss and gradients
    /// (`loss::tests::dno_symmetries`), so one orientation per pair is the whole of Eq. 8.
    #[test]
    fn soft_targets_from_a_verifier_are_sigma_of_k_over_2k_minus_2() {
        use crate::{Judgment, PreferenceMatrix};
        let k = 8;
        let ids: Vec<String> = (0..k).map(|i| format!("s{i}")).collect();
        let cfg = PairingConfig::with_strategy(PairingStrategy::Soft);
        for correct in 1..k {
            let ok = |i: usize| i < correct;
            let mut js = Vec::new();
            for i in 0..k {
                for j in i + 1..k {
                    let p_a = if ok(i) == ok(j) { 0.5 } else if ok(i) { 1.0 } else { 0.0 };
                    js.push(Judgment { sample_a: ids[i].clone(), sample_b: ids[j].clone(), p_a });
                }
            }
            let w: Vec<Option<f64>> = PreferenceMatrix::from_judgments(&ids, &js).unwrap().win_rates().into_iter().map(|r| r.win_rate).collect();
            let c: Vec<Candidate> = ids.iter().map(|i| cand(i, false, false, None)).collect();
            let pairs = pair_prompt("p", &c, Some(&w), &cfg, &mut PairingSummary::default()).unwrap();
            assert_eq!(pairs.len(), correct * (k - correct));
            for p in &pairs {
                assert!(p.chosen_value > p.rejected_value);
                assert!((p.margin - 4.0 / 7.0).abs() < 1e-12, "c={correct}: margin {}", p.margin);
                assert!((p.target - sigmoid(4.0 / 7.0)).abs() < 1e-12);
            }
        }
        assert!((sigmoid(4.0 / 7.0) - 0.6391).abs() < 1e-4);
    }

    #[test]
    fn min_margin_and_cap_are_deterministic() {
        let cfg = PairingConfig {
            strategy: PairingStrategy::Soft,
            min_margin: 0.2,
            max_pairs_per_prompt: Some(3),
            ..Default::default()
        };
        let c: Vec<Candidate> = ["a", "b", "c", "d", "e"].iter().map(|i| cand(i, false, false, None)).collect();
        let w = [Some(0.9), Some(0.7), Some(0.5), Some(0.3), Some(0.1)];
        let mut s = PairingSummary::default();
        let pairs = pair_prompt("p", &c, Some(&w), &cfg, &mut s).unwrap();
        // Margins: ab .2 ac .4 ad .6 ae .8 bc .2 bd .4 be .6 cd .2 ce .4 de .2 (none below .2).
        // Top 3 by margin: ae .8, then ad .6 and be .6 (tie broken by chosen index: a before b).
        assert_eq!(names(&pairs), vec![pr("a", "d"), pr("a", "e"), pr("b", "e")]);
        assert_eq!(s.dropped.over_cap, 7);
        check_invariants(&s);
        let again = pair_prompt("p", &c, Some(&w), &cfg, &mut PairingSummary::default()).unwrap();
        assert_eq!(pairs, again);
        // min_margin drops small gaps.
        let cfg = PairingConfig { strategy: PairingStrategy::Soft, min_margin: 0.5, ..Default::default() };
        let mut s = PairingSummary::default();
        let pairs = pair_prompt("p", &c, Some(&w), &cfg, &mut s).unwrap();
        assert_eq!(pairs.len(), 3); // ad .6, ae .8, be .6
        assert_eq!(s.dropped.below_min_margin, 7);
        check_invariants(&s);
    }

    #[test]
    fn repetitive_candidates_only_lose() {
        let cfg = PairingConfig::with_strategy(PairingStrategy::Soft);
        let c = vec![
            cand("rep1", false, true, None),
            cand("ok", false, false, None),
            cand("rep2", false, true, None),
        ];
        let w = [Some(1.0), Some(0.0), Some(1.0)];
        let mut s = PairingSummary::default();
        let pairs = pair_prompt("p", &c, Some(&w), &cfg, &mut s).unwrap();
        // rep1 and rep2 are valued 0 whatever their win-rate; "ok" has win-rate 0 too: all tie.
        assert!(pairs.is_empty());
        assert_eq!(s.dropped.tie, 3);
        let w = [Some(1.0), Some(0.4), Some(1.0)];
        let pairs = pair_prompt("p", &c, Some(&w), &cfg, &mut s).unwrap();
        assert_eq!(names(&pairs), vec![pr("ok", "rep1"), pr("ok", "rep2")]);
        assert!(pairs.iter().all(|p| p.rejected_value == 0.0));
    }

    #[test]
    fn unscored_repetitive_candidates_do_not_force_win_rates() {
        let c = vec![
            cand("a", false, false, Some(5.0)),
            cand("b", false, true, None),
            cand("c", false, false, Some(3.0)),
        ];
        let mut s = PairingSummary::default();
        let pairs = pair_prompt("p", &c, None, &PairingConfig::default(), &mut s).unwrap();
        assert_eq!(names(&pairs), vec![pr("a", "b"), pr("a", "c")]);
        assert_eq!(s.prompts_on_scores, 1);
        assert_eq!(s.unrated_candidates, 0);
        check_invariants(&s);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let mut s = PairingSummary::default();
        let dup = vec![cand("a", false, false, Some(1.0)), cand("a", false, false, Some(2.0))];
        let e = pair_prompt("p", &dup, None, &PairingConfig::default(), &mut s).unwrap_err();
        assert!(e.message().contains("duplicate candidate id 'a'"), "{e}");
        let c = vec![cand("a", false, false, Some(f64::NAN))];
        assert!(pair_prompt("p", &c, None, &PairingConfig::default(), &mut s).unwrap_err().message().contains("score"));
        let c = vec![cand("a", false, false, Some(7.0))];
        let e = pair_prompt("p", &c, None, &PairingConfig::default(), &mut s).unwrap_err();
        assert!(e.message().contains("must lie in [0, 6], got 7"), "{e}");
        let c = vec![cand("a", false, false, None), cand("b", false, false, None)];
        assert!(pair_prompt("p", &c, Some(&[Some(0.5)]), &PairingConfig::default(), &mut s).is_err());
        assert!(pair_prompt("p", &c, Some(&[Some(0.5), Some(1.5)]), &PairingConfig::default(), &mut s).is_err());
        let cfg = PairingConfig { max_pairs_per_prompt: Some(0), ..Default::default() };
        assert!(pair_prompt("p", &c, None, &cfg, &mut s).unwrap_err().message().contains("max_pairs_per_prompt"));
        let cfg = PairingConfig { score_margin_student: -1.0, ..Default::default() };
        assert!(cfg.validate().unwrap_err().message().contains("score_margin_student"));
        assert_eq!(s, PairingSummary::default());
        assert!("dno-prct".parse::<PairingStrategy>().is_ok());
        assert_eq!("max-min".parse::<PairingStrategy>().unwrap(), PairingStrategy::MaxMin);
        assert_eq!("soft".parse::<PairingStrategy>().unwrap().to_string(), "soft");
        assert!("best".parse::<PairingStrategy>().is_err());
        assert_eq!("win-rate".parse::<Basis>().unwrap(), Basis::WinRate);
    }

    #[test]
    fn replay_counts_follow_the_paper_shares() {
        // 55 current, ample history, 30% / 15% of the final set → 30 + 15, total 100.
        assert_eq!(replay_counts(55, &[1000, 1000], &[0.3, 0.15]).unwrap(), vec![30, 15]);
        // Iteration t−2 has only 5 pairs: use them all, t−1 gets 30% of the smaller total.
        // T = (55 + 5)/(1 − 0.3) = 85.71 → m1 = 25; total 85; 25 ≤ 25.5.
        assert_eq!(replay_counts(55, &[1000, 5], &[0.3, 0.15]).unwrap(), vec![25, 5]);
        // Only one earlier iteration: the extra fraction is ignored.
        assert_eq!(replay_counts(70, &[1000], &[0.3, 0.15]).unwrap(), vec![30]);
        assert_eq!(replay_counts(0, &[10, 10], &[0.3, 0.15]).unwrap(), vec![0, 0]);
        assert!(replay_counts(10, &[10, 10], &[0.6, 0.5]).is_err());
        assert!(replay_counts(10, &[10], &[f64::NAN]).is_err());
        // Property: shares never exceed f_k, counts never exceed availability.
        let mut rng = SplitMix64::new(5);
        for _ in 0..2000 {
            let n = rng.below(300) as usize;
            let a = [rng.below(200) as usize, rng.below(200) as usize, rng.below(50) as usize];
            let f = [rng.next_f64() * 0.4, rng.next_f64() * 0.3, rng.next_f64() * 0.2];
            let m = replay_counts(n, &a, &f).unwrap();
            let total = (n + m.iter().sum::<usize>()) as f64;
            for k in 0..3 {
                assert!(m[k] <= a[k]);
                assert!(m[k] as f64 <= f[k] * total + 1e-6, "n={n} a={a:?} f={f:?} m={m:?}");
            }
        }
    }

    #[test]
    fn replay_selection_is_seeded_and_deterministic() {
        let cur: Vec<u32> = (0..55).collect();
        let h1: Vec<u32> = (1000..1200).collect();
        let h2: Vec<u32> = (2000..2100).collect();
        let mixed = mix_replay(&cur, &[h1.clone(), h2.clone()], &[0.3, 0.15], 7).unwrap();
        assert_eq!(mixed.len(), 100);
        assert_eq!(&mixed[..55], &cur[..]);
        let from1: Vec<u32> = mixed.iter().copied().filter(|x| (1000..1200).contains(x)).collect();
        let from2: Vec<u32> = mixed.iter().copied().filter(|x| (2000..2100).contains(x)).collect();
        assert_eq!((from1.len(), from2.len()), (30, 15));
        assert!(from1.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(mixed, mix_replay(&cur, &[h1.clone(), h2.clone()], &[0.3, 0.15], 7).unwrap());
        assert_ne!(mixed, mix_replay(&cur, &[h1, h2], &[0.3, 0.15], 8).unwrap());
        let sel = select_replay(55, &[200, 100], &[0.3, 0.15], 7).unwrap();
        assert_eq!(sel[0].len(), 30);
        assert!(sel[1].iter().all(|&i| i < 100));
    }
}
