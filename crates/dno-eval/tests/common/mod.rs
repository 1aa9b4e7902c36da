//! Synthetic-data helpers shared by the integration tests.
#![allow(dead_code)]

use dno_eval::stats::SplitMix64;
use dno_eval::Comparison;

pub struct Gen(pub SplitMix64);

impl Gen {
    pub fn new(seed: u64) -> Self {
        Gen(SplitMix64::new(seed))
    }
    pub fn uniform(&mut self) -> f64 {
        self.0.next_f64()
    }
    pub fn bernoulli(&mut self, p: f64) -> bool {
        self.uniform() < p
    }
    /// Standard normal by Box–Muller.
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.0.index(hi - lo)
    }
}

/// A comparison with only the mean preference set.
pub fn comp(prompt: &str, p: f64, cand_len: usize, base_len: usize) -> Comparison {
    Comparison {
        prompt_id: prompt.to_string(),
        p_candidate: p,
        p_candidate_first: None,
        p_candidate_second: None,
        candidate_len: cand_len,
        baseline_len: base_len,
        candidate_correct: None,
        baseline_correct: None,
        candidate_constraints: None,
        baseline_constraints: None,
    }
}

/// A comparison judged in both orders: `first`/`second` are P(candidate preferred) with the
/// candidate shown first / second; p_candidate is their mean.
pub fn comp_two_orders(
    prompt: &str,
    first: f64,
    second: f64,
    cand_len: usize,
    base_len: usize,
) -> Comparison {
    Comparison {
        p_candidate: 0.5 * (first + second),
        p_candidate_first: Some(first),
        p_candidate_second: Some(second),
        ..comp(prompt, 0.0, cand_len, base_len)
    }
}

/// One hard judgement (win 1 / loss 0 / tie 0.5) per prompt with true win-rate `q`, 10% ties.
pub fn hard_judgements(g: &mut Gen, n_prompts: usize, q: f64) -> Vec<Comparison> {
    let tie = 0.1;
    let w = (q - 0.5 * tie) / (1.0 - tie); // tie·½ + (1−tie)·w = q
    (0..n_prompts)
        .map(|i| {
            let p = if g.bernoulli(tie) {
                0.5
            } else if g.bernoulli(w) {
                1.0
            } else {
                0.0
            };
            comp(&format!("p{i}"), p, g.range(100, 900), g.range(100, 900))
        })
        .collect()
}
