//! The training losses on tensors. Each is the batched, differentiable twin of the scalar
//! function of the same name in `dno_math::loss` (the tests check value and gradient against
//! it). Notation as there: a = log π(y⁺) − log π_t(y⁺), b = log π(y⁻) − log π_t(y⁻),
//! Δ = a − b, h = η·Δ, with π_t the reference (the input model M, the previous iterate).

use anyhow::{bail, Result};
use burn::tensor::activation::log_sigmoid;
use burn::tensor::Tensor;
use dno_math::loss::{LossConfig, LossKind};

/// Sequence log-probabilities of one batch of pairs, each `[B]`.
#[derive(Debug, Clone)]
pub struct PairLogps {
    /// log π(y⁺|x) of the policy being trained (tracked).
    pub policy_chosen: Tensor<1>,
    /// log π(y⁻|x) of the policy (tracked); `None` for sft.
    pub policy_rejected: Option<Tensor<1>>,
    /// log π_t(y⁺|x) of the reference (constant); `None` for sft.
    pub ref_chosen: Option<Tensor<1>>,
    /// log π_t(y⁻|x) of the reference (constant); `None` for sft.
    pub ref_rejected: Option<Tensor<1>>,
}

/// Per-pair targets, each `[B]` (see `dno_math::loss::PairTargets`).
#[derive(Debug, Clone)]
pub struct PairTargetTensors {
    /// DNO soft label z = σ(r_t(y⁺) − r_t(y⁻)) (Eq. 8).
    pub z: Tensor<1>,
    /// Win-rate of the chosen response (SPPO's P_win).
    pub p_win: Tensor<1>,
    /// Win-rate of the rejected response (SPPO's P_lose).
    pub p_lose: Tensor<1>,
}

/// The un-weighted per-pair loss `[B]` of `cfg.kind`.
pub fn pair_losses(cfg: &LossConfig, x: &PairLogps, t: &PairTargetTensors) -> Result<Tensor<1>> {
    if cfg.kind == LossKind::Sft {
        // SFT: −log π(y⁺|x), the negative summed log-likelihood of the chosen response.
        return Ok(x.policy_chosen.clone().neg());
    }
    let (Some(pr), Some(rc), Some(rr)) = (&x.policy_rejected, &x.ref_chosen, &x.ref_rejected) else {
        bail!("loss {}: needs rejected responses and reference log-probs", cfg.kind);
    };
    let a = x.policy_chosen.clone() - rc.clone();
    let b = pr.clone() - rr.clone();
    let eta = cfg.eta;
    Ok(match cfg.kind {
        // DNO, Alg. 1 line 4 / Eq. 8, as the soft-label cross-entropy of Eq. 11:
        // ℓ = −[z log σ(h) + (1−z) log σ(−h)], h = η(a − b), z = σ(r_t(y⁺) − r_t(y⁻)).
        LossKind::Dno => {
            let h = (a - b).mul_scalar(eta);
            let z = t.z.clone();
            let one_minus_z = z.clone().neg().add_scalar(1.0);
            (z * log_sigmoid(h.clone()) + one_minus_z * log_sigmoid(h.neg())).neg()
        }
        // DNO-Prct, Alg. 2 Eq. 13: ℓ = −log σ(η(a − b)) (DPO with β = η, reference π_t).
        LossKind::Dpo => log_sigmoid((a - b).mul_scalar(eta)).neg(),
        // IPO (Azar et al.; TRL's `(logits − 1/(2β))²` with β = τ): ℓ = (Δ − 1/(2τ))².
        LossKind::Ipo => (a - b).sub_scalar(1.0 / (2.0 * cfg.ipo_tau)).square(),
        // SPPO (Wu et al. Eq. 4.7, official code with β = η):
        // ℓ = ½[(a − (P_win − ½)/η)² + (b − (P_lose − ½)/η)²].
        LossKind::Sppo => {
            let tw = t.p_win.clone().sub_scalar(0.5).div_scalar(eta);
            let tl = t.p_lose.clone().sub_scalar(0.5).div_scalar(eta);
            ((a - tw).square() + (b - tl).square()).mul_scalar(0.5)
        }
        LossKind::Sft => unreachable!("handled above"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};
    use dno_math::loss::{pair_loss, PairInputs, PairTargets};

    fn t1(v: &[f64], device: &Device) -> Tensor<1> {
        Tensor::from_data(TensorData::new(v.iter().map(|&x| x as f32).collect::<Vec<_>>(), [v.len()]), device)
    }

    fn vals(t: Tensor<1>) -> Vec<f64> {
        t.into_data().iter::<f32>().map(|x| x as f64).collect()
    }

    /// Value and gradient of every tensor loss equal dno-math's scalar loss/grad.
    #[test]
    fn tensor_losses_match_dno_math_value_and_gradient() {
        let device = Device::flex().autodiff();
        // Fixed log-probs: ordinary, tied, wrong-way and large-magnitude pairs.
        let pc = [-10.0, -3.0, -120.0, -0.5, -55.0, -7.25];
        let pr = [-12.0, -3.0, -80.0, -40.0, -54.0, -9.5];
        let rc = [-10.5, -3.0, -118.0, -2.0, -56.0, -7.0];
        let rr = [-11.0, -3.0, -83.5, -30.0, -53.0, -9.0];
        let z = [0.62, 0.5, 0.3, 0.73, 1.0, 0.27];
        let pw = [0.8, 0.5, 0.1, 1.0, 0.6, 0.35];
        let pl = [0.3, 0.5, 0.9, 0.0, 0.4, 0.6];
        for kind in LossKind::ALL {
            for (eta, tau) in [(0.1, 0.1), (0.5, 0.25), (1.0, 2.0)] {
                let cfg = LossConfig { kind, eta, ipo_tau: tau };
                let policy_chosen = t1(&pc, &device).require_grad();
                let policy_rejected = t1(&pr, &device).require_grad();
                let x = PairLogps {
                    policy_chosen: policy_chosen.clone(),
                    policy_rejected: Some(policy_rejected.clone()),
                    ref_chosen: Some(t1(&rc, &device)),
                    ref_rejected: Some(t1(&rr, &device)),
                };
                let t = PairTargetTensors { z: t1(&z, &device), p_win: t1(&pw, &device), p_lose: t1(&pl, &device) };
                let losses = pair_losses(&cfg, &x, &t).unwrap();
                let values = vals(losses.clone());
                let grads = losses.sum().backward();
                let gc = vals(policy_chosen.grad(&grads).unwrap());
                let gr = policy_rejected.grad(&grads).map(vals).unwrap_or_else(|| vec![0.0; pc.len()]);
                for i in 0..pc.len() {
                    let inputs = PairInputs { policy_chosen: pc[i], policy_rejected: pr[i], ref_chosen: rc[i], ref_rejected: rr[i] };
                    let targets = PairTargets { z: z[i], p_win: pw[i], p_lose: pl[i] };
                    let want = pair_loss(&cfg, &inputs, &targets).unwrap();
                    let tol = |w: f64| 1e-4 * (1.0 + w.abs());
                    assert!((values[i] - want.loss).abs() <= tol(want.loss), "{kind} eta={eta} pair {i}: loss {} vs {}", values[i], want.loss);
                    assert!((gc[i] - want.grad_chosen).abs() <= tol(want.grad_chosen), "{kind} eta={eta} pair {i}: dchosen {} vs {}", gc[i], want.grad_chosen);
                    assert!((gr[i] - want.grad_rejected).abs() <= tol(want.grad_rejected), "{kind} eta={eta} pair {i}: drejected {} vs {}", gr[i], want.grad_rejected);
                }
            }
        }
    }

    #[test]
    fn pairwise_losses_need_rejected_and_reference() {
        let device = Device::flex();
        let x = PairLogps { policy_chosen: t1(&[-1.0], &device), policy_rejected: None, ref_chosen: None, ref_rejected: None };
        let t = PairTargetTensors { z: t1(&[1.0], &device), p_win: t1(&[1.0], &device), p_lose: t1(&[0.0], &device) };
        let err = pair_losses(&LossConfig::new(LossKind::Dpo, 0.1), &x, &t).unwrap_err();
        assert!(err.to_string().contains("dpo"), "{err}");
        let sft = pair_losses(&LossConfig::new(LossKind::Sft, 0.1), &x, &t).unwrap();
        assert_eq!(vals(sft), vec![1.0]);
    }
}
