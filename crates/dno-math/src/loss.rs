//! Per-pair losses of DNO and its relatives, with gradients.
//!
//! Every loss here is a function of four sequence log-probabilities
//! ([`PairInputs`]): the policy being trained, log π(y⁺|x) and log π(y⁻|x),
//! and the reference, log π_t(y⁺|x) and log π_t(y⁻|x). In DNO the reference is
//! the *previous iterate* π_t (Alg. 1 line 4, Eq. 13), not a fixed SFT model.
//! Each function returns the loss and its derivatives with respect to the two
//! **policy** log-probabilities (the reference is a constant), so a tensor
//! implementation can chain them into token log-probs and parameters.
//!
//! Notation (used in every doc comment below):
//!
//! * a = log π(y⁺) − log π_t(y⁺), b = log π(y⁻) − log π_t(y⁻) (un-scaled
//!   log-ratios; SPPO's code calls them `logits_w`, `logits_l`);
//! * Δ = a − b (TRL's `logits`, un-scaled);
//! * h = η·Δ (the scaled margin);
//! * η is DNO's inverse step size (Alg. 1). It plays the role of DPO's β
//!   (Eq. 13: DPO with β ≡ η) and is the coefficient of the implicit reward
//!   r_{π,t}(x,y) = η log π(y|x)/π_t(y|x) (Eq. 10, §4).
//!
//! The reported rewards are the implicit rewards of Eq. 10 without the
//! log-partition term: `reward_chosen` = η·a, `reward_rejected` = η·b,
//! `margin` = η·Δ = h and `accuracy` = 1 when `reward_chosen > reward_rejected`
//! (strictly, as TRL's `rewards/accuracies`), else 0. These are the same for
//! every loss kind so that training metrics are comparable across kinds.
//!
//! The losses:
//!
//! | kind | formula | d/da | d/db |
//! |---|---|---|---|
//! | `dno` (Alg. 1, Eq. 8 = Eq. 11) | −[z log σ(h) + (1−z) log σ(−h)] | η(σ(h) − z) | −η(σ(h) − z) |
//! | `dpo` (DNO-Prct, Alg. 2, Eq. 13) | −log σ(h) (= `dno` with z = 1) | η(σ(h) − 1) | −η(σ(h) − 1) |
//! | `ipo` (Azar et al.) | (Δ − 1/(2τ))² | 2(Δ − 1/(2τ)) | −2(Δ − 1/(2τ)) |
//! | `sppo` (Wu et al. Eq. 4.7, official code) | ½[(a − (P_w − ½)/η)² + (b − (P_l − ½)/η)²] | a − (P_w − ½)/η | b − (P_l − ½)/η |
//! | `sft` | −log π(y⁺) | −1 | 0 |
//!
//! Since a and b are the policy log-probs minus constants, d/da = d/d log π(y⁺)
//! and d/db = d/d log π(y⁻).
//!
//! **IPO and TRL.** Azar et al.'s IPO loss is (h_π(y⁺,y⁻) − 1/(2τ))² with the
//! *un-scaled* log-ratio difference h_π = Δ. TRL writes it as
//! `(logits - 1/(2*beta))**2` with `logits` = Δ, i.e. TRL's `beta` is Azar's τ.
//! In terms of this module's scaled margin h = η·Δ the loss is
//! (h/η − 1/(2τ))²: η cancels out of the loss value and only scales the
//! reported rewards. [`ipo_loss`] therefore equals TRL's IPO loss exactly when
//! τ = β, and [`LossConfig::new`] sets τ = η by default, so `ipo` with
//! `eta = β` is TRL's IPO with that β. (TRL additionally length-normalises the
//! sequence log-probs for IPO, averaging rather than summing token log-probs;
//! that choice belongs to whoever computes the [`PairInputs`].)
//!
//! **DNO and TRL's label smoothing.** TRL's `sigmoid` loss with
//! `label_smoothing` ε (conservative DPO) is −(1−ε) log σ(βΔ) − ε log σ(−βΔ),
//! which is [`dno_loss`] with η = β and z = 1 − ε. So the soft-label DNO loss
//! of Eq. 8 can be cross-checked against TRL with per-pair ε = 1 − z.
//!
//! **SPPO and its β.** SPPO's update (Eq. 4.7) regresses each response's own
//! log-ratio onto its centred win-rate: (log π(y)/π_t(y) − η_SPPO(P̂(y ≻ π_t) − ½))².
//! The official trainer (`uclaml/SPPO`, `loss_type == "sppo"`) computes, per
//! pair, `loss_w = (logits_w - (1/beta)*(P_win - 0.5))**2`,
//! `loss_l = (logits_l - (1/beta)*(P_lose - 0.5))**2`, `loss = (loss_w + loss_l)/2`,
//! where `P_win` is the chosen response's estimated win-rate against the
//! current policy and `P_lose` the rejected one's; η_SPPO = 1/β (their run uses
//! β = 0.001, η_SPPO = 1000). [`sppo_loss`] is exactly that with β = this
//! module's η, consistent with DPO/DNO where η·log-ratio is the implicit
//! reward: the regression target η·a = P_win − ½ is a centred win-rate.
//! TRL's `sppo_hard` is the hard-label version *without* the halving:
//! (a − ½/β)² + (b + ½/β)² = 2 × `sppo_loss(x, β, 1, 0)`.

use crate::{check_finite, check_positive, check_probability, MathError, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// log σ(x) = −log(1 + e^{−x}), computed without overflow or cancellation for
/// any finite x (and −∞ → −∞, +∞ → 0).
pub fn log_sigmoid(x: f64) -> f64 {
    // log σ(x) = min(x, 0) − log(1 + e^{−|x|}).
    x.min(0.0) - (-x.abs()).exp().ln_1p()
}

/// σ(x) = 1 / (1 + e^{−x}), evaluated on the side that cannot overflow.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// The four sequence log-probabilities a pair loss depends on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PairInputs {
    /// log π(y⁺|x): the policy being trained, chosen response.
    pub policy_chosen: f64,
    /// log π(y⁻|x): the policy being trained, rejected response.
    pub policy_rejected: f64,
    /// log π_t(y⁺|x): the reference (previous iterate), chosen response.
    pub ref_chosen: f64,
    /// log π_t(y⁻|x): the reference (previous iterate), rejected response.
    pub ref_rejected: f64,
}

impl PairInputs {
    /// a = log π(y⁺) − log π_t(y⁺).
    pub fn chosen_logratio(&self) -> f64 {
        self.policy_chosen - self.ref_chosen
    }

    /// b = log π(y⁻) − log π_t(y⁻).
    pub fn rejected_logratio(&self) -> f64 {
        self.policy_rejected - self.ref_rejected
    }

    /// Δ = a − b, the un-scaled log-ratio difference (TRL's `logits`).
    pub fn logratio_diff(&self) -> f64 {
        self.chosen_logratio() - self.rejected_logratio()
    }

    fn validate(&self) -> Result<()> {
        check_finite("policy_chosen log-prob", self.policy_chosen)?;
        check_finite("policy_rejected log-prob", self.policy_rejected)?;
        check_finite("ref_chosen log-prob", self.ref_chosen)?;
        check_finite("ref_rejected log-prob", self.ref_rejected)
    }
}

/// A pair loss, its gradient and the metrics every kind reports.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossOutput {
    /// The loss value.
    pub loss: f64,
    /// d loss / d log π(y⁺|x).
    pub grad_chosen: f64,
    /// d loss / d log π(y⁻|x).
    pub grad_rejected: f64,
    /// η·(log π(y⁺) − log π_t(y⁺)): implicit reward of the chosen (Eq. 10, §4).
    pub reward_chosen: f64,
    /// η·(log π(y⁻) − log π_t(y⁻)): implicit reward of the rejected.
    pub reward_rejected: f64,
    /// reward_chosen − reward_rejected (= h).
    pub margin: f64,
    /// 1 when reward_chosen > reward_rejected, else 0.
    pub accuracy: f64,
}

impl LossOutput {
    fn with_rewards(x: &PairInputs, eta: f64, loss: f64, grad_chosen: f64, grad_rejected: f64) -> Self {
        let reward_chosen = eta * x.chosen_logratio();
        let reward_rejected = eta * x.rejected_logratio();
        Self {
            loss,
            grad_chosen,
            grad_rejected,
            reward_chosen,
            reward_rejected,
            margin: reward_chosen - reward_rejected,
            accuracy: if reward_chosen > reward_rejected { 1.0 } else { 0.0 },
        }
    }
}

/// DNO's soft-label binary cross-entropy (Alg. 1 line 4, Eq. 8; written as a
/// regression in Eq. 11): with h = η(a − b) and soft target
/// z = σ(r_t(y⁺) − r_t(y⁻)),
///
/// ℓ = −[z log σ(h) + (1−z) log σ(−h)] = z log(1/ẑ) + (1−z) log(1/(1−ẑ)), ẑ = σ(h).
///
/// dℓ/dh = σ(h) − z, so dℓ/d log π(y⁺) = η(σ(h) − z) = −dℓ/d log π(y⁻).
/// Minimised (over h) at h = logit(z) = r_t(y⁺) − r_t(y⁻): the policy's
/// implicit reward difference regresses onto the win-rate difference.
pub fn dno_loss(x: &PairInputs, eta: f64, z: f64) -> Result<LossOutput> {
    x.validate()?;
    check_positive("eta", eta)?;
    check_probability("dno target z", z)?;
    let h = eta * x.logratio_diff();
    let loss = -(z * log_sigmoid(h) + (1.0 - z) * log_sigmoid(-h));
    let dh = sigmoid(h) - z;
    Ok(LossOutput::with_rewards(x, eta, loss, eta * dh, -eta * dh))
}

/// DNO-Prct's contrastive loss (Alg. 2, Eq. 13): −log σ(η(a − b)), i.e. DPO
/// with β = η and reference π_t, and [`dno_loss`] with hard target z = 1.
pub fn dpo_loss(x: &PairInputs, eta: f64) -> Result<LossOutput> {
    dno_loss(x, eta, 1.0)
}

/// IPO (Azar et al. 2023): (Δ − 1/(2τ))² with Δ = a − b un-scaled, which is
/// (h/η − 1/(2τ))² in terms of h = ηΔ. Equals TRL's `(logits - 1/(2*beta))**2`
/// when τ = β. `eta` only scales the reported rewards.
pub fn ipo_loss(x: &PairInputs, eta: f64, tau: f64) -> Result<LossOutput> {
    x.validate()?;
    check_positive("eta", eta)?;
    check_positive("ipo tau", tau)?;
    let resid = x.logratio_diff() - 1.0 / (2.0 * tau);
    let g = 2.0 * resid;
    Ok(LossOutput::with_rewards(x, eta, resid * resid, g, -g))
}

/// SPPO (Wu et al. 2024, Eq. 4.7, as in the official trainer):
/// ½[(a − (P_win − ½)/η)² + (b − (P_lose − ½)/η)²], with P_win (P_lose) the
/// chosen (rejected) response's win-rate against the current policy and η
/// in the role of the code's β.
pub fn sppo_loss(x: &PairInputs, eta: f64, p_win: f64, p_lose: f64) -> Result<LossOutput> {
    x.validate()?;
    check_positive("eta", eta)?;
    check_probability("sppo chosen win-rate p_win", p_win)?;
    check_probability("sppo rejected win-rate p_lose", p_lose)?;
    let rw = x.chosen_logratio() - (p_win - 0.5) / eta;
    let rl = x.rejected_logratio() - (p_lose - 0.5) / eta;
    let loss = 0.5 * (rw * rw + rl * rl);
    Ok(LossOutput::with_rewards(x, eta, loss, rw, rl))
}

/// Supervised fine-tuning on the chosen response: −log π(y⁺|x) (gradient −1
/// w.r.t. log π(y⁺), 0 w.r.t. log π(y⁻)). `eta` only scales the reported
/// rewards. (Token-averaged NLL, as TRL's `sft` term, is this with the
/// caller passing the mean token log-prob.)
pub fn sft_loss(x: &PairInputs, eta: f64) -> Result<LossOutput> {
    x.validate()?;
    check_positive("eta", eta)?;
    Ok(LossOutput::with_rewards(x, eta, -x.policy_chosen, -1.0, 0.0))
}

/// The loss kinds, spelled as on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LossKind {
    /// Soft-label DNO, Alg. 1 Eq. 8 / Eq. 11 ([`dno_loss`]).
    Dno,
    /// DNO-Prct / DPO, Alg. 2 Eq. 13 ([`dpo_loss`]).
    Dpo,
    /// IPO ([`ipo_loss`]).
    Ipo,
    /// SPPO ([`sppo_loss`]).
    Sppo,
    /// SFT on the chosen response ([`sft_loss`]).
    Sft,
}

impl LossKind {
    /// All kinds, in a fixed order.
    pub const ALL: [LossKind; 5] = [LossKind::Dno, LossKind::Dpo, LossKind::Ipo, LossKind::Sppo, LossKind::Sft];

    /// The command-line name.
    pub fn as_str(&self) -> &'static str {
        match self {
            LossKind::Dno => "dno",
            LossKind::Dpo => "dpo",
            LossKind::Ipo => "ipo",
            LossKind::Sppo => "sppo",
            LossKind::Sft => "sft",
        }
    }
}

impl fmt::Display for LossKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LossKind {
    type Err = MathError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "dno" => Ok(LossKind::Dno),
            "dpo" => Ok(LossKind::Dpo),
            "ipo" => Ok(LossKind::Ipo),
            "sppo" => Ok(LossKind::Sppo),
            "sft" => Ok(LossKind::Sft),
            other => Err(MathError::new(format!(
                "unknown loss kind '{other}' (expected one of dno, dpo, ipo, sppo, sft)"
            ))),
        }
    }
}

/// Hyper-parameters shared by all pairs of a training run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossConfig {
    /// Which loss.
    pub kind: LossKind,
    /// η (DNO) = β (DPO/TRL) = β of SPPO's code; > 0.
    pub eta: f64,
    /// IPO's τ (TRL's β for IPO); > 0. [`LossConfig::new`] sets it to `eta`.
    pub ipo_tau: f64,
}

impl LossConfig {
    /// A config with τ = η.
    pub fn new(kind: LossKind, eta: f64) -> Self {
        Self { kind, eta, ipo_tau: eta }
    }
}

/// Per-pair targets, as stored with each training pair.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PairTargets {
    /// DNO soft target z = σ(r_t(y⁺) − r_t(y⁻)) (used by `dno` only).
    pub z: f64,
    /// Win-rate of the chosen response (used by `sppo` only).
    pub p_win: f64,
    /// Win-rate of the rejected response (used by `sppo` only).
    pub p_lose: f64,
}

impl PairTargets {
    /// Targets for a hard-labelled pair: z = 1, win-rates 1 and 0 (SPPO with
    /// these is TRL's `sppo_hard`).
    pub fn hard() -> Self {
        Self { z: 1.0, p_win: 1.0, p_lose: 0.0 }
    }

    /// Targets from the two win-rates: z = σ(r⁺ − r⁻) (Eq. 8), p_win = r⁺, p_lose = r⁻.
    pub fn from_win_rates(r_chosen: f64, r_rejected: f64) -> Result<Self> {
        check_probability("chosen win-rate", r_chosen)?;
        check_probability("rejected win-rate", r_rejected)?;
        Ok(Self {
            z: sigmoid(r_chosen - r_rejected),
            p_win: r_chosen,
            p_lose: r_rejected,
        })
    }
}

/// Dispatches to the loss named by `cfg.kind`.
pub fn pair_loss(cfg: &LossConfig, x: &PairInputs, t: &PairTargets) -> Result<LossOutput> {
    match cfg.kind {
        LossKind::Dno => dno_loss(x, cfg.eta, t.z),
        LossKind::Dpo => dpo_loss(x, cfg.eta),
        LossKind::Ipo => ipo_loss(x, cfg.eta, cfg.ipo_tau),
        LossKind::Sppo => sppo_loss(x, cfg.eta, t.p_win, t.p_lose),
        LossKind::Sft => sft_loss(x, cfg.eta),
    }
}

/// A (weighted) batch of pair losses reduced the way a trainer reports them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchLoss {
    /// Σ_k w_k ℓ_k / Σ_k w_k (the plain mean when all weights are 1).
    pub loss: f64,
    /// d loss / d log π(y⁺_k) = (w_k / Σw)·grad_chosen_k, per pair.
    pub grad_chosen: Vec<f64>,
    /// d loss / d log π(y⁻_k), per pair.
    pub grad_rejected: Vec<f64>,
    /// Unweighted mean of `reward_chosen` (TRL's `rewards/chosen`).
    pub reward_chosen: f64,
    /// Unweighted mean of `reward_rejected` (`rewards/rejected`).
    pub reward_rejected: f64,
    /// Unweighted mean margin (`rewards/margins`).
    pub margin: f64,
    /// Unweighted mean accuracy (`rewards/accuracies`).
    pub accuracy: f64,
}

/// Applies [`pair_loss`] to every pair and reduces: weighted mean loss with
/// its per-pair gradients, unweighted means of the metrics. `weights`
/// (default all 1) must be finite, ≥ 0 and not all 0; the batch must be
/// non-empty and `targets` / `weights` as long as `inputs`.
pub fn batch_loss(
    cfg: &LossConfig,
    inputs: &[PairInputs],
    targets: &[PairTargets],
    weights: Option<&[f64]>,
) -> Result<BatchLoss> {
    let n = inputs.len();
    if n == 0 {
        return Err(MathError::new("batch_loss needs at least one pair"));
    }
    if targets.len() != n {
        return Err(MathError::new(format!("batch_loss: {} targets for {n} pairs", targets.len())));
    }
    let ones = vec![1.0; n];
    let w = weights.unwrap_or(&ones);
    if w.len() != n {
        return Err(MathError::new(format!("batch_loss: {} weights for {n} pairs", w.len())));
    }
    for (k, &x) in w.iter().enumerate() {
        if !(x.is_finite() && x >= 0.0) {
            return Err(MathError::new(format!("batch_loss: weight {k} must be finite and >= 0, got {x}")));
        }
    }
    let total: f64 = w.iter().sum();
    if total <= 0.0 {
        return Err(MathError::new("batch_loss: weights sum to zero"));
    }
    let mut out = BatchLoss {
        loss: 0.0,
        grad_chosen: Vec::with_capacity(n),
        grad_rejected: Vec::with_capacity(n),
        reward_chosen: 0.0,
        reward_rejected: 0.0,
        margin: 0.0,
        accuracy: 0.0,
    };
    for k in 0..n {
        let o = pair_loss(cfg, &inputs[k], &targets[k]).map_err(|e| MathError::new(format!("pair {k}: {e}")))?;
        let s = w[k] / total;
        out.loss += s * o.loss;
        out.grad_chosen.push(s * o.grad_chosen);
        out.grad_rejected.push(s * o.grad_rejected);
        out.reward_chosen += o.reward_chosen / n as f64;
        out.reward_rejected += o.reward_rejected / n as f64;
        out.margin += o.margin / n as f64;
        out.accuracy += o.accuracy / n as f64;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(pc: f64, pr: f64, rc: f64, rr: f64) -> PairInputs {
        PairInputs { policy_chosen: pc, policy_rejected: pr, ref_chosen: rc, ref_rejected: rr }
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * (1.0 + a.abs().max(b.abs()))
    }

    /// Central finite differences of `f` w.r.t. the two policy log-probs.
    fn fd(f: &dyn Fn(&PairInputs) -> f64, x: &PairInputs) -> (f64, f64) {
        let e = 1e-6;
        let mut p = *x;
        let mut m = *x;
        p.policy_chosen += e;
        m.policy_chosen -= e;
        let gc = (f(&p) - f(&m)) / (2.0 * e);
        let mut p = *x;
        let mut m = *x;
        p.policy_rejected += e;
        m.policy_rejected -= e;
        let gr = (f(&p) - f(&m)) / (2.0 * e);
        (gc, gr)
    }

    fn sample_points() -> Vec<PairInputs> {
        let mut rng = crate::SplitMix64::new(42);
        let mut v = vec![
            inputs(-10.0, -12.0, -10.5, -11.0),
            inputs(-3.0, -3.0, -3.0, -3.0),
            inputs(-120.0, -80.0, -118.0, -83.5),
            inputs(-0.5, -40.0, -2.0, -30.0),
        ];
        for _ in 0..40 {
            let mut g = || -200.0 * rng.next_f64();
            v.push(inputs(g(), g(), g(), g()));
        }
        v
    }

    #[test]
    fn log_sigmoid_is_stable_and_matches_naive() {
        for &x in &[-30.0f64, -5.0, -1.0, -1e-3, 0.0, 1e-3, 1.0, 5.0, 30.0] {
            let naive = (1.0 / (1.0 + (-x).exp())).ln();
            assert!(close(log_sigmoid(x), naive, 1e-12), "x={x}");
            assert!(close(sigmoid(x), x.exp() / (1.0 + x.exp()), 1e-12));
        }
        assert_eq!(log_sigmoid(0.0), -std::f64::consts::LN_2);
        // Far tails: naive would give -inf / 0; exact asymptotics are x and -e^{-x}.
        assert_eq!(log_sigmoid(-1000.0), -1000.0);
        assert!(log_sigmoid(1000.0) <= 0.0 && log_sigmoid(1000.0) > -1e-300);
        assert!(close(log_sigmoid(40.0), -(-40.0f64).exp(), 1e-10));
        assert_eq!(sigmoid(-1000.0), 0.0);
        assert_eq!(sigmoid(1000.0), 1.0);
        assert!(log_sigmoid(f64::NEG_INFINITY) == f64::NEG_INFINITY);
        assert_eq!(log_sigmoid(f64::INFINITY), 0.0);
    }

    #[test]
    fn dno_closed_form_values() {
        // a = 0.5, b = -1, Δ = 1.5, η = 0.1 → h = 0.15; z = σ(0.4).
        let x = inputs(-10.0, -12.0, -10.5, -11.0);
        let z = sigmoid(0.4);
        let out = dno_loss(&x, 0.1, z).unwrap();
        let s = 1.0 / (1.0 + (-0.15f64).exp());
        let expect = -(z * s.ln() + (1.0 - z) * (1.0 - s).ln());
        assert!(close(out.loss, expect, 1e-14));
        assert!(close(out.grad_chosen, 0.1 * (s - z), 1e-12));
        assert!(close(out.grad_rejected, -0.1 * (s - z), 1e-12));
        assert!(close(out.reward_chosen, 0.05, 1e-14));
        assert!(close(out.reward_rejected, -0.1, 1e-14));
        assert!(close(out.margin, 0.15, 1e-14));
        assert_eq!(out.accuracy, 1.0);
        // Hand value: h = 0 → loss = ln 2 for any z.
        let x0 = inputs(-3.0, -7.0, -3.0, -7.0);
        for z in [0.0, 0.3, 0.5, 1.0] {
            assert!(close(dno_loss(&x0, 0.1, z).unwrap().loss, std::f64::consts::LN_2, 1e-15));
        }
    }

    #[test]
    fn dno_symmetries() {
        // z = ½ at h = 0: zero gradient (the minimum).
        let x0 = inputs(-3.0, -7.0, -2.0, -6.0);
        let out = dno_loss(&x0, 0.5, 0.5).unwrap();
        assert_eq!(out.grad_chosen, 0.0);
        assert_eq!(out.grad_rejected, 0.0);
        assert_eq!(out.accuracy, 0.0); // equal rewards do not count as correct
        // Swapping chosen/rejected and z ↔ 1−z leaves the loss unchanged and swaps grads.
        for x in sample_points() {
            let z = 0.62;
            let a = dno_loss(&x, 0.05, z).unwrap();
            let sw = inputs(x.policy_rejected, x.policy_chosen, x.ref_rejected, x.ref_chosen);
            let b = dno_loss(&sw, 0.05, 1.0 - z).unwrap();
            assert!(close(a.loss, b.loss, 1e-12));
            assert!(close(a.grad_chosen, b.grad_rejected, 1e-12));
            assert!(close(a.grad_rejected, b.grad_chosen, 1e-12));
            // Gradients sum to zero: only the difference Δ matters.
            assert_eq!(a.grad_chosen + a.grad_rejected, 0.0);
        }
        // The minimiser over h is h* = logit(z): loss there is the entropy of z.
        let z: f64 = sigmoid(0.7);
        let x = inputs(0.7 / 0.1, 0.0, 0.0, 0.0); // h = 0.1 * 7 = 0.7
        let out = dno_loss(&x, 0.1, z).unwrap();
        assert!(out.grad_chosen.abs() < 1e-15);
        let entropy = -(z * z.ln() + (1.0 - z) * (1.0 - z).ln());
        assert!(close(out.loss, entropy, 1e-12));
    }

    #[test]
    fn dpo_is_dno_with_hard_target_and_matches_trl_sigmoid() {
        for x in sample_points() {
            let d = dpo_loss(&x, 0.1).unwrap();
            let n = dno_loss(&x, 0.1, 1.0).unwrap();
            assert_eq!(d, n);
            // TRL sigmoid loss (label_smoothing = 0): -logsigmoid(beta * logits).
            let logits = (x.policy_chosen - x.policy_rejected) - (x.ref_chosen - x.ref_rejected);
            let trl = -(1.0 / (1.0 + (-0.1 * logits).exp())).ln();
            assert!(close(d.loss, trl, 1e-9), "{} vs {}", d.loss, trl);
        }
        // Hand value: h = 0 → ln 2, grad = η(½ − 1) = −η/2.
        let x = inputs(-5.0, -6.0, -5.0, -6.0);
        let o = dpo_loss(&x, 0.1).unwrap();
        assert!(close(o.loss, std::f64::consts::LN_2, 1e-15));
        assert!(close(o.grad_chosen, -0.05, 1e-15));
        assert!(close(o.grad_rejected, 0.05, 1e-15));
        // A huge wrong-way margin stays finite (stable log-sigmoid): loss ≈ −h.
        let bad = inputs(-1000.0, 0.0, 0.0, 0.0);
        let o = dpo_loss(&bad, 1.0).unwrap();
        assert!(close(o.loss, 1000.0, 1e-12));
        assert!(close(o.grad_chosen, -1.0, 1e-12));
    }

    #[test]
    fn ipo_matches_trl_formula() {
        // TRL: (logits - 1/(2*beta))**2 with logits un-scaled; here tau = beta.
        for x in sample_points() {
            for beta in [0.01, 0.1, 0.5] {
                let o = ipo_loss(&x, beta, beta).unwrap();
                let logits = (x.policy_chosen - x.policy_rejected) - (x.ref_chosen - x.ref_rejected);
                let trl = (logits - 1.0 / (2.0 * beta)).powi(2);
                assert!(close(o.loss, trl, 1e-12));
                // LossConfig::new sets tau = eta, so the dispatcher gives the same.
                let cfg = LossConfig::new(LossKind::Ipo, beta);
                assert_eq!(pair_loss(&cfg, &x, &PairTargets::hard()).unwrap(), o);
            }
        }
        // Hand value: Δ = 1.5, τ = 0.1 → (1.5 − 5)² = 12.25, grad 2(−3.5) = −7.
        let x = inputs(-10.0, -12.0, -10.5, -11.0);
        let o = ipo_loss(&x, 0.1, 0.1).unwrap();
        assert!(close(o.loss, 12.25, 1e-13));
        assert!(close(o.grad_chosen, -7.0, 1e-13));
        assert!(close(o.grad_rejected, 7.0, 1e-13));
        // η does not change the loss, only the rewards.
        let o2 = ipo_loss(&x, 0.7, 0.1).unwrap();
        assert_eq!(o.loss, o2.loss);
        assert!(close(o2.reward_chosen, 0.35, 1e-14));
        // Minimum at Δ = 1/(2τ).
        let xm = inputs(5.0, 0.0, 0.0, 0.0);
        let om = ipo_loss(&xm, 0.1, 0.1).unwrap();
        assert_eq!(om.loss, 0.0);
        assert_eq!(om.grad_chosen, 0.0);
    }

    #[test]
    fn sppo_matches_official_code() {
        // Official: loss_w = (logits_w - (1/beta)(P_win - .5))^2, loss_l likewise, mean of the two.
        let x = inputs(-10.0, -12.0, -10.5, -11.0); // logits_w = 0.5, logits_l = -1
        let beta = 0.5;
        let (pw, pl) = (0.8, 0.3);
        let o = sppo_loss(&x, beta, pw, pl).unwrap();
        // By hand: 0.5 - 0.6 = -0.1; -1 - (-0.4) = -0.6; (0.01 + 0.36)/2 = 0.185.
        assert!(close(o.loss, 0.185, 1e-13));
        assert!(close(o.grad_chosen, -0.1, 1e-12));
        assert!(close(o.grad_rejected, -0.6, 1e-12));
        for x in sample_points() {
            let o = sppo_loss(&x, 0.001, 0.7, 0.2).unwrap();
            let lw = ((x.policy_chosen - x.ref_chosen) - (1.0 / 0.001) * (0.7 - 0.5)).powi(2);
            let ll = ((x.policy_rejected - x.ref_rejected) - (1.0 / 0.001) * (0.2 - 0.5)).powi(2);
            assert!(close(o.loss, (lw + ll) / 2.0, 1e-12));
        }
        // Eq. 4.12 pairwise hard form: P_win = 1, P_lose = 0 → ((βa − ½)² + (βb + ½)²)/(2β²).
        let o = sppo_loss(&x, beta, 1.0, 0.0).unwrap();
        let (a, b) = (0.5, -1.0);
        let expect = ((beta * a - 0.5f64).powi(2) + (beta * b + 0.5f64).powi(2)) / (2.0 * beta * beta);
        assert!(close(o.loss, expect, 1e-13));
        // Minimum where each log-ratio equals its centred win-rate over η.
        let xm = inputs(0.3 / beta, -0.2 / beta, 0.0, 0.0);
        let om = sppo_loss(&xm, beta, 0.8, 0.3).unwrap();
        assert!(om.loss < 1e-28 && om.grad_chosen.abs() < 1e-14 && om.grad_rejected.abs() < 1e-14);
    }

    #[test]
    fn dno_equals_trl_sigmoid_with_label_smoothing() {
        for x in sample_points() {
            for eps in [0.0, 0.1, 0.27, 0.5] {
                let beta = 0.1;
                let logits = x.logratio_diff();
                let trl = -(1.0 - eps) * log_sigmoid(beta * logits) - eps * log_sigmoid(-beta * logits);
                assert!(close(dno_loss(&x, beta, 1.0 - eps).unwrap().loss, trl, 1e-13));
            }
        }
    }

    #[test]
    fn sppo_hard_of_trl_is_twice_ours() {
        // TRL sppo_hard: (a − 0.5/β)² + (b + 0.5/β)².
        for x in sample_points() {
            let beta = 0.1;
            let (a, b) = (x.chosen_logratio(), x.rejected_logratio());
            let trl = (a - 0.5 / beta).powi(2) + (b + 0.5 / beta).powi(2);
            assert!(close(2.0 * sppo_loss(&x, beta, 1.0, 0.0).unwrap().loss, trl, 1e-12));
        }
    }

    #[test]
    fn batch_loss_is_the_weighted_mean_with_matching_gradients() {
        let xs: Vec<PairInputs> = sample_points().into_iter().take(6).collect();
        let ts: Vec<PairTargets> = (0..6).map(|k| PairTargets { z: 0.5 + 0.04 * k as f64, p_win: 0.7, p_lose: 0.2 }).collect();
        let w = [1.0, 2.0, 0.0, 0.5, 1.0, 3.0];
        for kind in LossKind::ALL {
            let cfg = LossConfig::new(kind, 0.1);
            let b = batch_loss(&cfg, &xs, &ts, Some(&w)).unwrap();
            let per: Vec<LossOutput> = xs.iter().zip(&ts).map(|(x, t)| pair_loss(&cfg, x, t).unwrap()).collect();
            let expect: f64 = per.iter().zip(&w).map(|(o, w)| w * o.loss).sum::<f64>() / 7.5;
            assert!(close(b.loss, expect, 1e-13), "{kind}");
            // Gradient of the batch loss by finite differences on one pair's policy log-prob.
            let k = 3;
            let f = |d: f64| {
                let mut xs2 = xs.clone();
                xs2[k].policy_chosen += d;
                batch_loss(&cfg, &xs2, &ts, Some(&w)).unwrap().loss
            };
            let fd = (f(1e-6) - f(-1e-6)) / 2e-6;
            assert!((b.grad_chosen[k] - fd).abs() < 1e-6 * (1.0 + b.loss.abs()), "{kind}: {} vs {fd}", b.grad_chosen[k]);
            assert_eq!(b.grad_chosen[2], 0.0); // zero weight
            let acc = per.iter().map(|o| o.accuracy).sum::<f64>() / 6.0;
            assert!(close(b.accuracy, acc, 1e-15));
        }
        // Unweighted = plain mean.
        let cfg = LossConfig::new(LossKind::Dpo, 0.1);
        let b = batch_loss(&cfg, &xs, &ts, None).unwrap();
        let mean = xs.iter().map(|x| dpo_loss(x, 0.1).unwrap().loss).sum::<f64>() / 6.0;
        assert!(close(b.loss, mean, 1e-14));
        assert!(batch_loss(&cfg, &[], &[], None).is_err());
        assert!(batch_loss(&cfg, &xs, &ts[..2], None).is_err());
        assert!(batch_loss(&cfg, &xs, &ts, Some(&[0.0; 6])).is_err());
        assert!(batch_loss(&cfg, &xs, &ts, Some(&[1.0, -1.0, 1.0, 1.0, 1.0, 1.0])).is_err());
    }

    #[test]
    fn sft_is_nll_of_chosen() {
        let x = inputs(-42.5, -3.0, -1.0, -2.0);
        let o = sft_loss(&x, 0.1).unwrap();
        assert_eq!(o.loss, 42.5);
        assert_eq!(o.grad_chosen, -1.0);
        assert_eq!(o.grad_rejected, 0.0);
    }

    #[test]
    fn every_gradient_matches_finite_differences() {
        let targets = PairTargets { z: 0.64, p_win: 0.7, p_lose: 0.35 };
        for kind in LossKind::ALL {
            for eta in [0.05, 0.1, 1.0] {
                let cfg = LossConfig { kind, eta, ipo_tau: 0.25 };
                for x in sample_points() {
                    let f = |y: &PairInputs| pair_loss(&cfg, y, &targets).unwrap().loss;
                    let out = pair_loss(&cfg, &x, &targets).unwrap();
                    let (gc, gr) = fd(&f, &x);
                    let tol = 1e-6 * (1.0 + out.loss.abs());
                    assert!((out.grad_chosen - gc).abs() <= tol, "{kind} eta={eta} x={x:?}: {} vs fd {gc}", out.grad_chosen);
                    assert!((out.grad_rejected - gr).abs() <= tol, "{kind} eta={eta} x={x:?}: {} vs fd {gr}", out.grad_rejected);
                }
            }
        }
    }

    #[test]
    fn rewards_are_shared_across_kinds() {
        let x = inputs(-10.0, -12.0, -10.5, -11.0);
        let t = PairTargets { z: 0.6, p_win: 0.6, p_lose: 0.4 };
        for kind in LossKind::ALL {
            let o = pair_loss(&LossConfig::new(kind, 0.2), &x, &t).unwrap();
            assert!(close(o.reward_chosen, 0.1, 1e-14), "{kind}");
            assert!(close(o.reward_rejected, -0.2, 1e-14), "{kind}");
            assert!(close(o.margin, 0.3, 1e-14), "{kind}");
            assert_eq!(o.accuracy, 1.0);
        }
    }

    #[test]
    fn loss_kind_parses_and_prints() {
        for kind in LossKind::ALL {
            assert_eq!(kind.as_str().parse::<LossKind>().unwrap(), kind);
            assert_eq!(kind.to_string(), kind.as_str());
        }
        assert_eq!(" DPO ".parse::<LossKind>().unwrap(), LossKind::Dpo);
        let err = "kto".parse::<LossKind>().unwrap_err();
        assert!(err.message().contains("unknown loss kind 'kto'"), "{err}");
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        let x = inputs(-1.0, -2.0, -1.0, -2.0);
        assert!(dno_loss(&x, 0.0, 0.5).unwrap_err().message().contains("eta"));
        assert!(dno_loss(&x, 0.1, 1.5).unwrap_err().message().contains("dno target z"));
        assert!(dno_loss(&x, f64::NAN, 0.5).is_err());
        assert!(ipo_loss(&x, 0.1, -1.0).unwrap_err().message().contains("tau"));
        assert!(sppo_loss(&x, 0.1, f64::NAN, 0.5).unwrap_err().message().contains("p_win"));
        assert!(sppo_loss(&x, 0.1, 0.5, 2.0).unwrap_err().message().contains("p_lose"));
        let nan = inputs(f64::NAN, -2.0, -1.0, -2.0);
        assert!(dpo_loss(&nan, 0.1).unwrap_err().message().contains("policy_chosen"));
        let inf = inputs(-1.0, -2.0, -1.0, f64::NEG_INFINITY);
        assert!(sft_loss(&inf, 0.1).unwrap_err().message().contains("ref_rejected"));
        assert!(PairTargets::from_win_rates(1.2, 0.1).is_err());
    }

    #[test]
    fn targets_from_win_rates() {
        let t = PairTargets::from_win_rates(0.8, 0.2).unwrap();
        assert!(close(t.z, 1.0 / (1.0 + (-0.6f64).exp()), 1e-15));
        assert_eq!((t.p_win, t.p_lose), (0.8, 0.2));
        // z stays in [σ(−1), σ(1)] since win-rates lie in [0, 1].
        let t = PairTargets::from_win_rates(1.0, 0.0).unwrap();
        assert!(close(t.z, 0.7310585786300049, 1e-15));
    }
}
