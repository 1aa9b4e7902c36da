//! A tabular preference game on which DNO provably finds the Nash (von
//! Neumann) winner, and a Bradley-Terry reward maximiser that does not.
//!
//! **Game.** n actions (responses of one prompt) and a preference matrix
//! `P[i][j]` = P(i ≻ j) with `P[i][j]` + `P[j][i]` = 1 (§2.2). The von Neumann
//! winner (Eq. 3) is the policy π* with min_j Σ_i π*(i) `P[i][j]` ≥ ½; a
//! policy's *exploitability* is how much the best response beats it:
//! max_i Σ_j `P[i][j]` π(j) − ½ ≥ 0, zero exactly at a Nash policy.
//!
//! **DNO (Alg. 1).** The policy is a softmax over logits θ. At iteration t,
//! with π_t the current policy:
//!
//! 1. r_t(i) = Σ_j π_t(j) `P[i][j]` (Alg. 1 line 3, computed exactly);
//! 2. for every pair (i, j) the soft target z_ij = σ(r_t(i) − r_t(j)) and the
//!    loss [`crate::loss::dno_loss`] on log π(i), log π(j) with reference
//!    log π_t (Eq. 8 / Eq. 11), averaged over pairs;
//! 3. π_{t+1} = argmin of that loss over θ, by plain gradient descent that uses
//!    the loss function's own gradients (d loss / d log π) chained through
//!    log-softmax: d log π(k)/dθ_m = δ_km − π(m).
//!
//! The averaged policy π̄ = mean(π_1..π_T) is returned (Alg. 1 line 6).
//!
//! *Why it converges.* A tabular softmax can realise any log-ratio, so every
//! pair's loss reaches its own minimum at once, where
//! η log π(i)/π_t(i) − η log π(j)/π_t(j) = r_t(i) − r_t(j) (Eq. 11); hence
//! π_{t+1} ∝ π_t exp(r_t/η), the soft-policy-iteration target of Eq. 9. That
//! is Hedge (multiplicative weights) with step 1/η on gains r_t ∈ [0, 1] in
//! self-play, and because xᵀPx = ½ for every distribution x, the average
//! regret equals the exploitability of π̄: it is at most
//! η ln n / T + 1/(8η) from a uniform π_1 (from another π_1, ln n becomes
//! max_i ln 1/π_1(i)). With η = 10 and T = 3000 that is < 0.02 for n ≤ 8 from
//! a uniform start; the skewed starts of the tests measure well below it.
//!
//! *Pair weights.* Because every pair's minimiser coincides, any positive pair
//! weighting gives the same π_{t+1}; weights only change how fast the inner
//! gradient descent gets there. With weights π_t(i)π_t(j) (on-policy pairs,
//! the paper's µ₁ = µ₂ = π_t) rarely played actions barely move and the inner
//! problem becomes badly conditioned as π_t concentrates; uniform weights over
//! pairs keep the inner problem well conditioned (its Hessian is close to
//! η²/4 times the complete-graph Laplacian), so [`PairWeighting::Uniform`] is
//! the default. Both are available and reach the same step.
//!
//! **Bradley-Terry reward maximiser (contrast).** At iteration t, fit scalar
//! rewards s to P by weighted logistic regression (BT likelihood with soft
//! labels `P[i][j]`, on-policy pair weights µ_t(i)µ_t(j) where µ_t mixes π_t with
//! a little uniform exploration, plus a small ridge), then play the reward
//! maximiser π_{t+1} = softmax(s/temperature). A BT reward is transitive, so on
//! rock-paper-scissors it always crowns one action, the policy concentrates on
//! it, the next fit crowns its counter, and the iterates cycle R → P → S with
//! exploitability near ½ (their long-run *average* can still be near uniform:
//! that is best-response cycling, not convergence).

#![allow(clippy::needless_range_loop)] // matrix code reads best with explicit indices

use crate::loss::{dno_loss, log_sigmoid, sigmoid, PairInputs};
use crate::winrate::expected_win_rates;
use crate::{check_finite, check_positive, MathError, Result, SplitMix64};

/// A symmetric two-player preference game: `P[i][j]` = P(i ≻ j).
#[derive(Debug, Clone, PartialEq)]
pub struct PreferenceGame {
    p: Vec<Vec<f64>>,
}

impl PreferenceGame {
    /// Validates P: square, n ≥ 2, entries in [0, 1], `P[i][j]` + `P[j][i]` = 1
    /// within 1e-9 (so the diagonal is ½).
    pub fn new(p: Vec<Vec<f64>>) -> Result<Self> {
        let n = p.len();
        if n < 2 {
            return Err(MathError::new(format!("preference game needs at least 2 actions, got {n}")));
        }
        for (i, row) in p.iter().enumerate() {
            if row.len() != n {
                return Err(MathError::new(format!("preference matrix row {i} has {} entries, expected {n}", row.len())));
            }
            for (j, &x) in row.iter().enumerate() {
                if !(0.0..=1.0).contains(&x) {
                    return Err(MathError::new(format!("P[{i}][{j}] must lie in [0, 1], got {x}")));
                }
            }
        }
        for i in 0..n {
            for j in i..n {
                if (p[i][j] + p[j][i] - 1.0).abs() > 1e-9 {
                    return Err(MathError::new(format!(
                        "P[{i}][{j}] + P[{j}][{i}] must be 1, got {}",
                        p[i][j] + p[j][i]
                    )));
                }
            }
        }
        Ok(Self { p })
    }

    /// Rock-paper-scissors with certain outcomes (actions R, P, S):
    /// `P[R][S]` = `P[S][P]` = `P[P][R]` = 1. The unique Nash policy is uniform.
    pub fn rock_paper_scissors() -> Self {
        Self {
            p: vec![vec![0.5, 0.0, 1.0], vec![1.0, 0.5, 0.0], vec![0.0, 1.0, 0.5]],
        }
    }

    /// P = ½ + A with A skew-symmetric, `A[i][j]` uniform in [−scale, scale]
    /// (scale is clamped to ½), from a seeded [`SplitMix64`].
    pub fn random_skew(n: usize, seed: u64, scale: f64) -> Result<Self> {
        check_positive("scale", scale)?;
        let scale = scale.min(0.5);
        let mut rng = SplitMix64::new(seed);
        let mut p = vec![vec![0.5; n]; n];
        for i in 0..n {
            for j in (i + 1)..n {
                let a = scale * (2.0 * rng.next_f64() - 1.0);
                p[i][j] = 0.5 + a;
                p[j][i] = 0.5 - a;
            }
        }
        Self::new(p)
    }

    /// Number of actions.
    pub fn n(&self) -> usize {
        self.p.len()
    }

    /// The matrix.
    pub fn matrix(&self) -> &[Vec<f64>] {
        &self.p
    }

    /// True when some strict 3-cycle i ≻ j ≻ k ≻ i exists (no transitive
    /// ranking, hence no Bradley-Terry reward, reproduces P).
    pub fn is_intransitive(&self) -> bool {
        let n = self.n();
        (0..n).any(|i| {
            (0..n).any(|j| {
                self.p[i][j] > 0.5 && (0..n).any(|k| self.p[j][k] > 0.5 && self.p[k][i] > 0.5)
            })
        })
    }

    /// An action preferred to every other one (`P[i][j]` ≥ ½ for all j), if any.
    /// Without one no pure policy is a Nash policy: the von Neumann winner is
    /// mixed, and the game is intransitive "at the top".
    pub fn condorcet_winner(&self) -> Option<usize> {
        (0..self.n()).find(|&i| self.p[i].iter().all(|&x| x >= 0.5))
    }

    /// r(i) = Σ_j π(j) `P[i][j]` (Alg. 1 line 3).
    pub fn win_rates(&self, pi: &[f64]) -> Result<Vec<f64>> {
        expected_win_rates(&self.p, pi)
    }

    /// max_i Σ_j `P[i][j]` π(j) − ½.
    pub fn exploitability(&self, pi: &[f64]) -> Result<f64> {
        Ok(self.win_rates(pi)?.into_iter().fold(f64::NEG_INFINITY, f64::max) - 0.5)
    }
}

/// log-softmax, stable for any finite logits.
pub fn log_softmax(logits: &[f64]) -> Vec<f64> {
    let m = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = m + logits.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
    logits.iter().map(|x| x - lse).collect()
}

/// softmax.
pub fn softmax(logits: &[f64]) -> Vec<f64> {
    log_softmax(logits).into_iter().map(f64::exp).collect()
}

/// How the DNO pairs (i, j) of one iteration are weighted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairWeighting {
    /// Every unordered pair equally.
    Uniform,
    /// π_t(i)·π_t(j): pairs drawn on-policy.
    PolicyProduct,
}

/// Settings of the tabular DNO run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DnoTabularConfig {
    /// η of Eq. 8 (inverse step size).
    pub eta: f64,
    /// T: number of policies π_1..π_T (T − 1 updates).
    pub iterations: usize,
    /// Cap on inner gradient-descent steps per iteration.
    pub inner_max_steps: usize,
    /// Inner loop stops when the largest |∂loss/∂θ| is below this.
    pub inner_tol: f64,
    /// Pair weights.
    pub weighting: PairWeighting,
}

impl Default for DnoTabularConfig {
    fn default() -> Self {
        Self { eta: 10.0, iterations: 3000, inner_max_steps: 10_000, inner_tol: 1e-12, weighting: PairWeighting::Uniform }
    }
}

/// One DNO update's result.
#[derive(Debug, Clone, PartialEq)]
pub struct DnoStep {
    /// Logits of π_{t+1}.
    pub logits: Vec<f64>,
    /// Mean pair loss at π_{t+1}.
    pub loss: f64,
    /// Gradient-descent steps taken.
    pub steps: usize,
    /// Largest |∂loss/∂θ| at the end.
    pub grad_max: f64,
}

/// Mean DNO loss over the pairs and its gradient w.r.t. the logits, via
/// [`dno_loss`] and the log-softmax chain rule.
fn dno_objective(
    theta: &[f64],
    ref_logp: &[f64],
    pairs: &[(usize, usize, f64, f64)],
    eta: f64,
) -> Result<(f64, Vec<f64>)> {
    let logp = log_softmax(theta);
    let pi: Vec<f64> = logp.iter().map(|l| l.exp()).collect();
    let n = theta.len();
    let mut grad = vec![0.0; n];
    let mut loss = 0.0;
    for &(i, j, z, w) in pairs {
        let x = PairInputs {
            policy_chosen: logp[i],
            policy_rejected: logp[j],
            ref_chosen: ref_logp[i],
            ref_rejected: ref_logp[j],
        };
        let out = dno_loss(&x, eta, z)?;
        loss += w * out.loss;
        // d/dθ_m = g_c (δ_im − π_m) + g_r (δ_jm − π_m)
        grad[i] += w * out.grad_chosen;
        grad[j] += w * out.grad_rejected;
        let s = w * (out.grad_chosen + out.grad_rejected);
        if s != 0.0 {
            for m in 0..n {
                grad[m] -= s * pi[m];
            }
        }
    }
    Ok((loss, grad))
}

/// One DNO iteration (Alg. 1 lines 3-4) from the logits of π_t.
pub fn dno_step(game: &PreferenceGame, ref_logits: &[f64], cfg: &DnoTabularConfig) -> Result<DnoStep> {
    let n = game.n();
    if ref_logits.len() != n {
        return Err(MathError::new(format!("{} logits given for a game with {n} actions", ref_logits.len())));
    }
    for (i, &x) in ref_logits.iter().enumerate() {
        check_finite(&format!("logit {i}"), x)?;
    }
    check_positive("eta", cfg.eta)?;
    let ref_logp = log_softmax(ref_logits);
    let pi_t: Vec<f64> = ref_logp.iter().map(|l| l.exp()).collect();
    let r = game.win_rates(&pi_t)?;

    let mut pairs = Vec::with_capacity(n * (n - 1) / 2);
    for i in 0..n {
        for j in (i + 1)..n {
            let w = match cfg.weighting {
                PairWeighting::Uniform => 1.0,
                PairWeighting::PolicyProduct => pi_t[i] * pi_t[j],
            };
            pairs.push((i, j, sigmoid(r[i] - r[j]), w));
        }
    }
    let total: f64 = pairs.iter().map(|p| p.3).sum();
    if total.is_nan() || total <= 0.0 {
        return Err(MathError::new("DNO pair weights sum to zero"));
    }
    let mut degree = vec![0.0; n];
    for p in pairs.iter_mut() {
        p.3 /= total;
        degree[p.0] += p.3;
        degree[p.1] += p.3;
    }
    // The loss is convex in θ with Hessian ≼ (η²/4)·(weighted Laplacian) ≼ (η²/2)·max degree.
    let max_degree = degree.iter().copied().fold(0.0, f64::max);
    let lr = 2.0 / (cfg.eta * cfg.eta * max_degree);

    let mut theta = ref_logits.to_vec();
    let (mut loss, mut grad) = dno_objective(&theta, &ref_logp, &pairs, cfg.eta)?;
    let mut steps = 0;
    let gmax = |g: &[f64]| g.iter().fold(0.0f64, |a, b| a.max(b.abs()));
    while steps < cfg.inner_max_steps && gmax(&grad) > cfg.inner_tol {
        for (t, g) in theta.iter_mut().zip(&grad) {
            *t -= lr * g;
        }
        (loss, grad) = dno_objective(&theta, &ref_logp, &pairs, cfg.eta)?;
        steps += 1;
    }
    // Logits are defined up to a constant: keep them centred.
    let mean = theta.iter().sum::<f64>() / n as f64;
    theta.iter_mut().for_each(|t| *t -= mean);
    Ok(DnoStep { logits: theta, loss, steps, grad_max: gmax(&grad) })
}

/// The outcome of a tabular run.
#[derive(Debug, Clone, PartialEq)]
pub struct TabularRun {
    /// π_1..π_T.
    pub policies: Vec<Vec<f64>>,
    /// π̄ = mean of `policies`.
    pub average: Vec<f64>,
    /// Exploitability of the running average after each iteration (entry t−1 is for π̄ over π_1..π_t).
    pub average_exploitability: Vec<f64>,
    /// Exploitability of each iterate.
    pub iterate_exploitability: Vec<f64>,
    /// Most inner steps any update needed (DNO) or fit steps (BT).
    pub max_inner_steps: usize,
    /// Largest final inner gradient (how exactly each argmin was solved).
    pub max_final_grad: f64,
}

impl TabularRun {
    /// Exploitability of π̄.
    pub fn exploitability_average(&self) -> f64 {
        *self.average_exploitability.last().unwrap_or(&f64::NAN)
    }

    /// Exploitability of the last iterate π_T.
    pub fn exploitability_last(&self) -> f64 {
        *self.iterate_exploitability.last().unwrap_or(&f64::NAN)
    }

    fn record(game: &PreferenceGame, policies: Vec<Vec<f64>>, max_inner_steps: usize, max_final_grad: f64) -> Result<Self> {
        let n = game.n();
        let mut sum = vec![0.0; n];
        let mut average_exploitability = Vec::with_capacity(policies.len());
        let mut iterate_exploitability = Vec::with_capacity(policies.len());
        for (t, pi) in policies.iter().enumerate() {
            for (s, p) in sum.iter_mut().zip(pi) {
                *s += p;
            }
            let avg: Vec<f64> = sum.iter().map(|s| s / (t + 1) as f64).collect();
            average_exploitability.push(game.exploitability(&avg)?);
            iterate_exploitability.push(game.exploitability(pi)?);
        }
        let t = policies.len().max(1) as f64;
        let average = sum.iter().map(|s| s / t).collect();
        Ok(Self { policies, average, average_exploitability, iterate_exploitability, max_inner_steps, max_final_grad })
    }
}

/// Runs Alg. 1 on the game from π_1 = softmax(`init_logits`).
pub fn run_dno(game: &PreferenceGame, init_logits: &[f64], cfg: &DnoTabularConfig) -> Result<TabularRun> {
    if init_logits.len() != game.n() {
        return Err(MathError::new(format!("{} logits given for a game with {} actions", init_logits.len(), game.n())));
    }
    if cfg.iterations == 0 {
        return Err(MathError::new("iterations must be at least 1"));
    }
    let mut logits = init_logits.to_vec();
    let mut policies = vec![softmax(&logits)];
    let (mut max_steps, mut max_grad) = (0, 0.0f64);
    for _ in 1..cfg.iterations {
        let step = dno_step(game, &logits, cfg)?;
        max_steps = max_steps.max(step.steps);
        max_grad = max_grad.max(step.grad_max);
        logits = step.logits;
        policies.push(softmax(&logits));
    }
    TabularRun::record(game, policies, max_steps, max_grad)
}

/// Settings of the Bradley-Terry reward maximiser.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BtConfig {
    /// Number of policies π_1..π_T.
    pub iterations: usize,
    /// π_{t+1} = softmax(s / temperature).
    pub temperature: f64,
    /// Data distribution µ_t = (1 − ε)π_t + ε·uniform.
    pub exploration: f64,
    /// L2 penalty (λ/2)|s|² keeping the fit finite on separable data.
    pub ridge: f64,
    /// Gradient steps of the logistic regression.
    pub fit_steps: usize,
}

impl Default for BtConfig {
    fn default() -> Self {
        Self { iterations: 300, temperature: 0.1, exploration: 0.1, ridge: 1e-3, fit_steps: 5000 }
    }
}

/// Fits Bradley-Terry rewards: minimises
/// Σ_{i<j} w_ij [−P_ij log σ(s_i − s_j) − P_ji log σ(s_j − s_i)] / Σw + (λ/2)|s|²
/// by gradient descent. Returns (s, steps, final max |gradient|).
pub fn fit_bradley_terry(game: &PreferenceGame, weights: &[Vec<f64>], ridge: f64, max_steps: usize) -> Result<(Vec<f64>, usize, f64)> {
    let n = game.n();
    if weights.len() != n || weights.iter().any(|r| r.len() != n) {
        return Err(MathError::new(format!("BT pair weights must be {n}x{n}")));
    }
    check_positive("ridge", ridge)?;
    let total: f64 = (0..n).flat_map(|i| ((i + 1)..n).map(move |j| (i, j))).map(|(i, j)| weights[i][j]).sum();
    if !(total > 0.0 && total.is_finite()) {
        return Err(MathError::new("BT pair weights must have a positive finite sum"));
    }
    let p = game.matrix();
    let mut degree = vec![0.0; n];
    for i in 0..n {
        for j in (i + 1)..n {
            degree[i] += weights[i][j] / total;
            degree[j] += weights[i][j] / total;
        }
    }
    let lr = 1.0 / (0.5 * degree.iter().copied().fold(0.0, f64::max) + ridge);
    let mut s = vec![0.0; n];
    let grad_of = |s: &[f64]| {
        let mut g: Vec<f64> = s.iter().map(|x| ridge * x).collect();
        for i in 0..n {
            for j in (i + 1)..n {
                let w = weights[i][j] / total;
                let d = w * (sigmoid(s[i] - s[j]) - p[i][j]);
                g[i] += d;
                g[j] -= d;
            }
        }
        g
    };
    let mut g = grad_of(&s);
    let mut steps = 0;
    let gmax = |g: &[f64]| g.iter().fold(0.0f64, |a, b| a.max(b.abs()));
    while steps < max_steps && gmax(&g) > 1e-12 {
        for (x, gi) in s.iter_mut().zip(&g) {
            *x -= lr * gi;
        }
        g = grad_of(&s);
        steps += 1;
    }
    Ok((s, steps, gmax(&g)))
}

/// BT negative log-likelihood of rewards `s` under pair weights (diagnostic).
pub fn bradley_terry_nll(game: &PreferenceGame, weights: &[Vec<f64>], s: &[f64]) -> f64 {
    let p = game.matrix();
    let n = game.n();
    let mut nll = 0.0;
    for i in 0..n {
        for j in (i + 1)..n {
            nll -= weights[i][j] * (p[i][j] * log_sigmoid(s[i] - s[j]) + p[j][i] * log_sigmoid(s[j] - s[i]));
        }
    }
    nll
}

/// Iterates "fit a BT reward on on-policy data, play its maximiser".
pub fn run_bt_maximiser(game: &PreferenceGame, init_logits: &[f64], cfg: &BtConfig) -> Result<TabularRun> {
    let n = game.n();
    if init_logits.len() != n {
        return Err(MathError::new(format!("{} logits given for a game with {n} actions", init_logits.len())));
    }
    if cfg.iterations == 0 {
        return Err(MathError::new("iterations must be at least 1"));
    }
    check_positive("temperature", cfg.temperature)?;
    if !(0.0..=1.0).contains(&cfg.exploration) {
        return Err(MathError::new(format!("exploration must lie in [0, 1], got {}", cfg.exploration)));
    }
    let mut pi = softmax(init_logits);
    let mut policies = vec![pi.clone()];
    let (mut max_steps, mut max_grad) = (0, 0.0f64);
    for _ in 1..cfg.iterations {
        let mu: Vec<f64> = pi.iter().map(|p| (1.0 - cfg.exploration) * p + cfg.exploration / n as f64).collect();
        let w: Vec<Vec<f64>> = (0..n).map(|i| (0..n).map(|j| mu[i] * mu[j]).collect()).collect();
        let (s, steps, g) = fit_bradley_terry(game, &w, cfg.ridge, cfg.fit_steps)?;
        max_steps = max_steps.max(steps);
        max_grad = max_grad.max(g);
        let scaled: Vec<f64> = s.iter().map(|x| x / cfg.temperature).collect();
        pi = softmax(&scaled);
        policies.push(pi.clone());
    }
    TabularRun::record(game, policies, max_steps, max_grad)
}

/// Index of the largest entry (first on ties).
pub fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn game_validation_and_exploitability() {
        let g = PreferenceGame::rock_paper_scissors();
        assert!(g.is_intransitive());
        assert!(g.exploitability(&[1.0 / 3.0; 3]).unwrap().abs() < 1e-15);
        // Pure rock is beaten by paper for sure.
        assert!((g.exploitability(&[1.0, 0.0, 0.0]).unwrap() - 0.5).abs() < 1e-15);
        assert!(PreferenceGame::new(vec![vec![0.5, 0.7], vec![0.4, 0.5]]).is_err());
        assert!(PreferenceGame::new(vec![vec![0.5]]).is_err());
        assert!(PreferenceGame::new(vec![vec![0.5, 1.2], vec![-0.2, 0.5]]).is_err());
        let transitive = PreferenceGame::new(vec![
            vec![0.5, 0.9, 0.8],
            vec![0.1, 0.5, 0.7],
            vec![0.2, 0.3, 0.5],
        ])
        .unwrap();
        assert!(!transitive.is_intransitive());
        assert_eq!(transitive.condorcet_winner(), Some(0));
        assert_eq!(PreferenceGame::rock_paper_scissors().condorcet_winner(), None);
        // xᵀPx = ½ for any x: the identity behind "average regret = exploitability".
        let g = PreferenceGame::random_skew(6, 3, 0.5).unwrap();
        let x = softmax(&[0.3, -1.0, 2.0, 0.0, 0.5, -0.2]);
        let r = g.win_rates(&x).unwrap();
        let xpx: f64 = x.iter().zip(&r).map(|(a, b)| a * b).sum();
        assert!((xpx - 0.5).abs() < 1e-14);
    }

    #[test]
    fn log_softmax_is_stable() {
        let l = log_softmax(&[1000.0, 0.0, -1000.0]);
        assert!(l[0].abs() < 1e-300 || l[0] == 0.0);
        assert!((l[1] + 1000.0).abs() < 1e-9);
        let p = softmax(&[0.0, 0.0]);
        assert_eq!(p, vec![0.5, 0.5]);
    }

    #[test]
    fn one_dno_step_is_the_soft_policy_iteration_target() {
        // Eq. 11's minimiser is Eq. 9: π_{t+1} ∝ π_t exp(r_t/η).
        let g = PreferenceGame::random_skew(5, 11, 0.5).unwrap();
        let logits = vec![1.0, -0.5, 0.2, 0.0, -1.3];
        for eta in [0.5, 2.0, 10.0] {
            for weighting in [PairWeighting::Uniform, PairWeighting::PolicyProduct] {
                let cfg = DnoTabularConfig { eta, inner_max_steps: 200_000, inner_tol: 1e-13, weighting, ..Default::default() };
                let step = dno_step(&g, &logits, &cfg).unwrap();
                assert!(step.grad_max <= 1e-13, "not converged: {step:?}");
                let pi_t = softmax(&logits);
                let r = g.win_rates(&pi_t).unwrap();
                let target: Vec<f64> = logits.iter().zip(&r).map(|(l, r)| l + r / eta).collect();
                let expect = softmax(&target);
                let got = softmax(&step.logits);
                for (a, b) in got.iter().zip(&expect) {
                    assert!((a - b).abs() < 1e-9, "eta={eta} {weighting:?}: {got:?} vs {expect:?}");
                }
            }
        }
    }

    #[test]
    fn dno_step_rejects_bad_input() {
        let g = PreferenceGame::rock_paper_scissors();
        let cfg = DnoTabularConfig::default();
        assert!(dno_step(&g, &[0.0, 0.0], &cfg).is_err());
        assert!(dno_step(&g, &[0.0, f64::NAN, 0.0], &cfg).is_err());
        assert!(dno_step(&g, &[0.0; 3], &DnoTabularConfig { eta: 0.0, ..cfg }).is_err());
        assert!(run_dno(&g, &[0.0; 3], &DnoTabularConfig { iterations: 0, ..cfg }).is_err());
        assert!(run_bt_maximiser(&g, &[0.0; 2], &BtConfig::default()).is_err());
    }

    #[test]
    fn bt_fit_recovers_transitive_rewards() {
        // P from true BT rewards (1, 0, −2): the fit recovers the differences.
        let s_true = [1.0, 0.0, -2.0];
        let p: Vec<Vec<f64>> = (0..3).map(|i| (0..3).map(|j| sigmoid(s_true[i] - s_true[j])).collect()).collect();
        let g = PreferenceGame::new(p).unwrap();
        let w = vec![vec![1.0; 3]; 3];
        let (s, _, grad) = fit_bradley_terry(&g, &w, 1e-9, 200_000).unwrap();
        assert!(grad < 1e-10);
        assert!(((s[0] - s[1]) - 1.0).abs() < 1e-5, "{s:?}");
        assert!(((s[1] - s[2]) - 2.0).abs() < 1e-5, "{s:?}");
        assert!(bradley_terry_nll(&g, &w, &s) <= bradley_terry_nll(&g, &w, &[0.0; 3]));
    }
}
