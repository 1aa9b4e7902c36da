//! Preference matrices and win-rates: the reward r_t of DNO.
//!
//! Alg. 1 line 3 defines the reward of a response as its expected win-rate
//! against the current policy, r_t(x,y) = E_{y′∼π_t(·|x)} P(y ≻ y′ | x) ∈ \[0,1\].
//! DNO-Prct estimates it from the K sampled candidates (plus the gold
//! response) of a prompt (§4 implicit reward estimate):
//! r_t(x,y) ≈ mean over the other candidates y′ of P(y ≻ y′ | x).
//!
//! [`PreferenceMatrix::from_judgments`] builds the matrix `P[i][j]` of one prompt
//! from judged pairs (sample_a, sample_b, p_a = P(a ≻ b)):
//!
//! * both orders are merged: a judgment of (b, a) with p contributes 1 − p to
//!   (a, b) (and p to (b, a)); so `P[i][j]` + `P[j][i]` = 1 for every judged pair;
//! * several judgments of the same unordered pair (either order, e.g. a
//!   position-swapped re-judgment) are averaged;
//! * pairs never judged stay missing, and a candidate's win-rate is the mean
//!   over its *judged* opponents only ([`WinRate::n_opponents`] says how many);
//! * nothing assumes transitivity: a cycle a ≻ b ≻ c ≻ a is kept as judged.
//!
//! The candidate itself is not one of its opponents (§4 sums over
//! {y¹…yᴷ, y_gold} \ y). Including y′ = y would add P(y ≻ y) = ½ with weight
//! 1/(K+1), which only shrinks all win-rates towards ½ by the same factor.
//! [`expected_win_rates`] computes the exact Alg. 1 line 3 expectation for a
//! known policy (used by [`crate::nash`]).

use crate::{check_finite, check_probability, MathError, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// One judged pair of a prompt: `p_a` = P(sample_a ≻ sample_b).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judgment {
    /// Id of the first sample as shown to the judge.
    pub sample_a: String,
    /// Id of the second sample.
    pub sample_b: String,
    /// Probability that `sample_a` is preferred, in [0, 1] (0.5 = tie).
    pub p_a: f64,
}

/// A candidate's win-rate against its judged opponents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WinRate {
    /// Candidate id.
    pub id: String,
    /// Mean of P(id ≻ y′) over judged opponents y′; `None` when it has none.
    pub win_rate: Option<f64>,
    /// Number of distinct judged opponents.
    pub n_opponents: usize,
}

/// The preference matrix of one prompt's candidates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreferenceMatrix {
    ids: Vec<String>,
    /// `p[i][j]` = averaged P(i ≻ j), `None` if the pair was never judged.
    p: Vec<Vec<Option<f64>>>,
    /// Number of judgments merged into `p[i][j]` (symmetric).
    counts: Vec<Vec<usize>>,
}

impl PreferenceMatrix {
    /// Builds the matrix over `ids` (candidate order is kept) from judgments.
    /// Errors on duplicate ids, unknown ids, self-pairs and p outside [0, 1].
    pub fn from_judgments(ids: &[String], judgments: &[Judgment]) -> Result<Self> {
        let mut index = HashMap::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            if index.insert(id.as_str(), i).is_some() {
                return Err(MathError::new(format!("duplicate candidate id '{id}' in preference matrix")));
            }
        }
        let n = ids.len();
        let mut sum = vec![vec![0.0f64; n]; n];
        let mut counts = vec![vec![0usize; n]; n];
        for j in judgments {
            let a = *index
                .get(j.sample_a.as_str())
                .ok_or_else(|| MathError::new(format!("judgment names unknown sample_a '{}'", j.sample_a)))?;
            let b = *index
                .get(j.sample_b.as_str())
                .ok_or_else(|| MathError::new(format!("judgment names unknown sample_b '{}'", j.sample_b)))?;
            if a == b {
                return Err(MathError::new(format!("judgment compares sample '{}' with itself", j.sample_a)));
            }
            check_probability(&format!("p_a of judgment ({}, {})", j.sample_a, j.sample_b), j.p_a)?;
            sum[a][b] += j.p_a;
            sum[b][a] += 1.0 - j.p_a;
            counts[a][b] += 1;
            counts[b][a] += 1;
        }
        let p = (0..n)
            .map(|i| {
                (0..n)
                    .map(|k| (counts[i][k] > 0).then(|| sum[i][k] / counts[i][k] as f64))
                    .collect()
            })
            .collect();
        Ok(Self { ids: ids.to_vec(), p, counts })
    }

    /// Builds the matrix from a complete dense matrix (diagonal ignored).
    /// Errors unless every off-diagonal entry is in [0, 1] and
    /// `P[i][j]` + `P[j][i]` = 1 (within 1e-9).
    pub fn from_dense(ids: &[String], p: &[Vec<f64>]) -> Result<Self> {
        let n = ids.len();
        if p.len() != n || p.iter().any(|row| row.len() != n) {
            return Err(MathError::new(format!("dense preference matrix must be {n}x{n}")));
        }
        let mut judgments = Vec::new();
        for i in 0..n {
            for k in (i + 1)..n {
                check_probability(&format!("P[{i}][{k}]"), p[i][k])?;
                if (p[i][k] + p[k][i] - 1.0).abs() > 1e-9 {
                    return Err(MathError::new(format!(
                        "P[{i}][{k}] + P[{k}][{i}] must be 1, got {}",
                        p[i][k] + p[k][i]
                    )));
                }
                judgments.push(Judgment { sample_a: ids[i].clone(), sample_b: ids[k].clone(), p_a: p[i][k] });
            }
        }
        Self::from_judgments(ids, &judgments)
    }

    /// Candidate ids, in the order given.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// Number of candidates.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when there are no candidates.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Averaged P(i ≻ j), `None` if never judged (or i == j, or out of range).
    pub fn get(&self, i: usize, j: usize) -> Option<f64> {
        self.p.get(i).and_then(|row| row.get(j)).copied().flatten()
    }

    /// Number of judgments merged into the (i, j) entry.
    pub fn count(&self, i: usize, j: usize) -> usize {
        self.counts.get(i).and_then(|row| row.get(j)).copied().unwrap_or(0)
    }

    /// r(i) = mean over judged opponents j of P(i ≻ j) (§4), per candidate.
    pub fn win_rates(&self) -> Vec<WinRate> {
        (0..self.len())
            .map(|i| {
                let judged: Vec<f64> = self.p[i].iter().flatten().copied().collect();
                let n = judged.len();
                WinRate {
                    id: self.ids[i].clone(),
                    win_rate: (n > 0).then(|| judged.iter().sum::<f64>() / n as f64),
                    n_opponents: n,
                }
            })
            .collect()
    }
}

/// Exact Alg. 1 line 3 reward for a known policy: r(i) = Σ_j π(j) `P[i][j]`,
/// with P dense (`P[i][i]` is used as given, normally ½).
pub fn expected_win_rates(p: &[Vec<f64>], pi: &[f64]) -> Result<Vec<f64>> {
    let n = pi.len();
    if p.len() != n || p.iter().any(|row| row.len() != n) {
        return Err(MathError::new(format!("preference matrix must be {n}x{n} to match the policy")));
    }
    for (j, &w) in pi.iter().enumerate() {
        check_finite(&format!("policy probability pi[{j}]"), w)?;
    }
    Ok(p.iter().map(|row| row.iter().zip(pi).map(|(a, b)| a * b).sum()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn j(a: &str, b: &str, p: f64) -> Judgment {
        Judgment { sample_a: a.into(), sample_b: b.into(), p_a: p }
    }

    #[test]
    fn both_orders_merge_and_average() {
        // (a,b) judged 0.9; (b,a) judged 0.3 → contributes 0.7 to (a,b). Mean 0.8.
        let m = PreferenceMatrix::from_judgments(&ids(&["a", "b"]), &[j("a", "b", 0.9), j("b", "a", 0.3)]).unwrap();
        assert!((m.get(0, 1).unwrap() - 0.8).abs() < 1e-15);
        assert!((m.get(1, 0).unwrap() - 0.2).abs() < 1e-15);
        assert_eq!(m.count(0, 1), 2);
        assert_eq!(m.get(0, 0), None);
        let w = m.win_rates();
        assert!((w[0].win_rate.unwrap() - 0.8).abs() < 1e-15);
        assert_eq!(w[1].n_opponents, 1);
    }

    #[test]
    fn missing_pairs_only_judged_opponents_count() {
        // a beats b (1.0), a vs c tie (0.5); b vs c never judged; d never judged at all.
        let m = PreferenceMatrix::from_judgments(&ids(&["a", "b", "c", "d"]), &[j("a", "b", 1.0), j("c", "a", 0.5)])
            .unwrap();
        let w = m.win_rates();
        assert_eq!(w[0].n_opponents, 2);
        assert!((w[0].win_rate.unwrap() - 0.75).abs() < 1e-15);
        assert_eq!((w[1].win_rate, w[1].n_opponents), (Some(0.0), 1));
        assert_eq!((w[2].win_rate, w[2].n_opponents), (Some(0.5), 1));
        assert_eq!((w[3].win_rate, w[3].n_opponents), (None, 0));
        assert_eq!(m.get(1, 2), None);
    }

    #[test]
    fn intransitive_cycle_survives() {
        // a ≻ b ≻ c ≻ a, all certain: every candidate wins exactly half.
        let m = PreferenceMatrix::from_judgments(
            &ids(&["a", "b", "c"]),
            &[j("a", "b", 1.0), j("b", "c", 1.0), j("c", "a", 1.0)],
        )
        .unwrap();
        assert_eq!(m.get(0, 1), Some(1.0));
        assert_eq!(m.get(1, 2), Some(1.0));
        assert_eq!(m.get(2, 0), Some(1.0));
        assert_eq!(m.get(0, 2), Some(0.0));
        for w in m.win_rates() {
            assert_eq!(w.win_rate, Some(0.5));
            assert_eq!(w.n_opponents, 2);
        }
    }

    #[test]
    fn four_candidates_by_hand() {
        // Hand-computed: P(a≻b)=.8, P(a≻c)=.6, P(b≻c)=.3 (judged as (c,b)=.7), P(d≻a)=.9.
        let m = PreferenceMatrix::from_judgments(
            &ids(&["a", "b", "c", "d"]),
            &[j("a", "b", 0.8), j("a", "c", 0.6), j("c", "b", 0.7), j("d", "a", 0.9)],
        )
        .unwrap();
        let w: Vec<f64> = m.win_rates().iter().map(|w| w.win_rate.unwrap()).collect();
        // a: (.8 + .6 + .1)/3 = .5; b: (.2 + .3)/2 = .25; c: (.4 + .7)/2 = .55; d: .9
        let expect = [0.5, 0.25, 0.55, 0.9];
        for (x, e) in w.iter().zip(expect) {
            assert!((x - e).abs() < 1e-12, "{w:?}");
        }
    }

    #[test]
    fn dense_round_trip_and_expected_win_rates() {
        let p = vec![vec![0.5, 0.7, 0.2], vec![0.3, 0.5, 0.9], vec![0.8, 0.1, 0.5]];
        let m = PreferenceMatrix::from_dense(&ids(&["x", "y", "z"]), &p).unwrap();
        assert!((m.get(2, 0).unwrap() - 0.8).abs() < 1e-15);
        // Uniform π over 3 includes self (½): r = (row sum)/3.
        let r = expected_win_rates(&p, &[1.0 / 3.0; 3]).unwrap();
        assert!((r[0] - 1.4 / 3.0).abs() < 1e-15);
        // §4 estimate excludes self: (0.7 + 0.2)/2.
        assert!((m.win_rates()[0].win_rate.unwrap() - 0.45).abs() < 1e-15);
        let bad = vec![vec![0.5, 0.7], vec![0.4, 0.5]];
        assert!(PreferenceMatrix::from_dense(&ids(&["x", "y"]), &bad).is_err());
        assert!(expected_win_rates(&p, &[0.5, 0.5]).is_err());
    }

    #[test]
    fn bad_judgments_are_errors() {
        let c = ids(&["a", "b"]);
        assert!(PreferenceMatrix::from_judgments(&c, &[j("a", "z", 0.5)]).unwrap_err().message().contains("'z'"));
        assert!(PreferenceMatrix::from_judgments(&c, &[j("a", "a", 0.5)]).unwrap_err().message().contains("itself"));
        assert!(PreferenceMatrix::from_judgments(&c, &[j("a", "b", 1.1)]).unwrap_err().message().contains("p_a"));
        assert!(PreferenceMatrix::from_judgments(&c, &[j("a", "b", f64::NAN)]).is_err());
        assert!(PreferenceMatrix::from_judgments(&ids(&["a", "a"]), &[]).unwrap_err().message().contains("duplicate"));
    }
}
