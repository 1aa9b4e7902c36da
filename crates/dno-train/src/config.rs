//! Training configuration, learning-rate schedule and the per-epoch data order.

use anyhow::{bail, Result};
use dno_math::loss::LossKind;
use dno_math::SplitMix64;
use serde::{Deserialize, Serialize};

/// Learning-rate decay after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Half-cosine from `lr` down to 0 over the post-warm-up steps.
    Cosine,
    /// Straight line from `lr` down to 0 over the post-warm-up steps.
    Linear,
    /// `lr` for every post-warm-up step.
    Constant,
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Schedule::Cosine => "cosine",
            Schedule::Linear => "linear",
            Schedule::Constant => "constant",
        })
    }
}

impl std::str::FromStr for Schedule {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "cosine" => Ok(Schedule::Cosine),
            "linear" => Ok(Schedule::Linear),
            "constant" => Ok(Schedule::Constant),
            other => bail!("unknown lr schedule {other:?} (expected cosine|linear|constant)"),
        }
    }
}

/// LoRA adapters (attached through `dno_model`, merged into the dense weights on save).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    /// Projection names to adapt, e.g. `["q_proj", "v_proj"]` (dno-model's naming).
    pub targets: Vec<String>,
}

/// Everything that determines a training run. Serialised into every checkpoint; a resume must
/// use an identical configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Which objective: dno (Eq. 8/11), dpo (Eq. 13), ipo, sppo or sft.
    pub loss: LossKind,
    /// η: the inverse step size of Alg. 1 (β of DPO); scales the log-ratios in h.
    pub eta: f64,
    /// τ of IPO: target margin 1/(2τ).
    pub ipo_tau: f64,
    /// Peak learning rate.
    pub lr: f64,
    pub epochs: usize,
    /// Examples (pairs) per micro-batch, i.e. per forward/backward pass.
    pub batch_size: usize,
    /// Micro-batches per optimiser step; the effective batch is `batch_size * grad_accum`.
    pub grad_accum: usize,
    /// Decoupled (AdamW) weight decay, applied to matrices (rank ≥ 2) only, not to norms.
    pub weight_decay: f64,
    /// Warm-up as a fraction of the total optimiser steps (used when `warmup_steps` is 0).
    pub warmup_ratio: f64,
    /// Warm-up in optimiser steps; takes precedence over `warmup_ratio` when non-zero.
    pub warmup_steps: usize,
    pub schedule: Schedule,
    /// Clip the global L2 norm of the gradient to this value; 0 disables clipping.
    pub max_grad_norm: f64,
    /// Seeds the per-epoch data shuffle and burn's RNG (LoRA adapter init).
    pub seed: u64,
    pub lora: Option<LoraConfig>,
    /// Write a checkpoint every this many optimiser steps; 0 = only on stop and at the end.
    pub checkpoint_every: usize,
    /// Maximum prompt+response tokens per sequence (prompt truncated from the left first).
    pub max_len: usize,
    /// A PEFT LoRA adapter directory to start from (`dno train --init-adapter`): the input model
    /// π_t is the base with this adapter, which is also the reference; `lora` must match its
    /// `adapter_config.json` (rank, alpha, targets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_adapter: Option<std::path::PathBuf>,
    /// Group examples of similar length into the same step (`dno train --group-by-length`, as
    /// HF's `group_by_length`): less padding, since each micro-batch is padded to its widest row.
    /// See [`group_by_length`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub group_by_length: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            loss: LossKind::Dpo,
            eta: 0.1,
            ipo_tau: 0.1,
            lr: 5e-7,
            epochs: 1,
            batch_size: 8,
            grad_accum: 1,
            weight_decay: 0.0,
            warmup_ratio: 0.1,
            warmup_steps: 0,
            schedule: Schedule::Cosine,
            max_grad_norm: 1.0,
            seed: dno_math::rng::DEFAULT_SEED,
            lora: None,
            checkpoint_every: 0,
            max_len: 1024,
            init_adapter: None,
            group_by_length: false,
        }
    }
}

impl TrainConfig {
    /// Reject configurations that cannot train; one clear message per problem.
    pub fn validate(&self) -> Result<()> {
        let finite_pos = |v: f64| v.is_finite() && v > 0.0;
        if !finite_pos(self.eta) {
            bail!("train config: eta must be a positive finite number, got {}", self.eta);
        }
        if !finite_pos(self.ipo_tau) {
            bail!("train config: ipo_tau must be a positive finite number, got {}", self.ipo_tau);
        }
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            bail!("train config: lr must be finite and >= 0, got {}", self.lr);
        }
        if self.epochs == 0 {
            bail!("train config: epochs must be >= 1");
        }
        if self.batch_size == 0 {
            bail!("train config: batch_size must be >= 1");
        }
        if self.grad_accum == 0 {
            bail!("train config: grad_accum must be >= 1");
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            bail!("train config: weight_decay must be finite and >= 0, got {}", self.weight_decay);
        }
        if !(0.0..=1.0).contains(&self.warmup_ratio) {
            bail!("train config: warmup_ratio must be in [0, 1], got {}", self.warmup_ratio);
        }
        if !(self.max_grad_norm.is_finite() && self.max_grad_norm >= 0.0) {
            bail!("train config: max_grad_norm must be finite and >= 0, got {}", self.max_grad_norm);
        }
        if self.max_len < 2 {
            bail!("train config: max_len must be >= 2 (one prompt token + one response token)");
        }
        if let Some(lora) = &self.lora {
            if lora.rank == 0 {
                bail!("train config: lora.rank must be >= 1");
            }
            if !finite_pos(lora.alpha) {
                bail!("train config: lora.alpha must be positive, got {}", lora.alpha);
            }
            if lora.targets.is_empty() {
                bail!("train config: lora.targets must name at least one projection");
            }
        }
        Ok(())
    }

    /// Examples consumed per optimiser step.
    pub fn examples_per_step(&self) -> usize {
        self.batch_size * self.grad_accum
    }

    /// Optimiser steps in one epoch over `n` examples (the last step may be short).
    pub fn steps_per_epoch(&self, n: usize) -> usize {
        n.div_ceil(self.examples_per_step())
    }

    pub fn total_steps(&self, n: usize) -> usize {
        self.steps_per_epoch(n) * self.epochs
    }

    pub fn warmup(&self, total_steps: usize) -> usize {
        if self.warmup_steps > 0 {
            self.warmup_steps.min(total_steps)
        } else {
            ((self.warmup_ratio * total_steps as f64).ceil() as usize).min(total_steps)
        }
    }

    /// Learning rate for optimiser step `step` (0-based) of `total` steps: linear warm-up
    /// `lr·(step+1)/W` for the first W steps, then the chosen decay from `lr` towards 0.
    pub fn lr_at(&self, step: usize, total: usize) -> f64 {
        let warm = self.warmup(total);
        if step < warm {
            return self.lr * (step + 1) as f64 / warm as f64;
        }
        let decay_steps = total.saturating_sub(warm).max(1);
        let progress = ((step - warm) as f64 / decay_steps as f64).clamp(0.0, 1.0);
        match self.schedule {
            Schedule::Constant => self.lr,
            Schedule::Linear => self.lr * (1.0 - progress),
            Schedule::Cosine => self.lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        }
    }
}

/// The order in which epoch `epoch` visits `n` examples: a Fisher–Yates shuffle driven by
/// dno-math's SplitMix64 seeded from (`seed`, `epoch`). Deterministic, so a resumed run only needs to
/// remember the epoch and its position in it.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut rng = SplitMix64::new(seed ^ (epoch as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    order
}

/// Steps per length group in [`group_by_length`] (HF's `LengthGroupedSampler` uses 50 batches).
pub const LENGTH_GROUP_STEPS: usize = 50;

/// Reorders a shuffled epoch `order` so that each step's `per_step` examples have similar
/// lengths: the order is cut into groups of [`LENGTH_GROUP_STEPS`] steps, and each group is sorted
/// by `len` (longest first, ties kept in shuffled order). The steps stay a random partition of the
/// epoch at the group's scale, and the result is a pure function of its inputs, so a resumed run
/// reproduces it.
pub fn group_by_length(order: &[usize], per_step: usize, len: impl Fn(usize) -> usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(order.len());
    for group in order.chunks(per_step.max(1) * LENGTH_GROUP_STEPS) {
        let mut g = group.to_vec();
        g.sort_by_key(|&i| std::cmp::Reverse(len(i)));
        out.extend(g);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_by_length_sorts_within_groups_and_keeps_every_example() {
        let lens = |i: usize| (i * 37) % 101;
        let order = epoch_order(250, 3, 0);
        let g = group_by_length(&order, 2, lens);
        let mut sorted = g.clone();
        sorted.sort();
        assert_eq!(sorted, (0..250).collect::<Vec<_>>(), "a permutation");
        // Groups of 100: the same members as the shuffled order's, each longest first.
        for (a, b) in order.chunks(100).zip(g.chunks(100)) {
            let (mut a, b2) = (a.to_vec(), b.to_vec());
            a.sort();
            let mut bs = b2.clone();
            bs.sort();
            assert_eq!(a, bs);
            assert!(b.windows(2).all(|w| lens(w[0]) >= lens(w[1])));
        }
        assert_eq!(g, group_by_length(&order, 2, lens), "deterministic");
    }

    #[test]
    fn schedule_warmup_then_cosine_to_zero() {
        let cfg = TrainConfig { lr: 1.0, warmup_steps: 2, schedule: Schedule::Cosine, ..Default::default() };
        let lrs: Vec<f64> = (0..6).map(|s| cfg.lr_at(s, 6)).collect();
        assert!((lrs[0] - 0.5).abs() < 1e-12 && (lrs[1] - 1.0).abs() < 1e-12);
        assert!((lrs[2] - 1.0).abs() < 1e-12, "decay starts at the peak");
        assert!((lrs[4] - 0.5).abs() < 1e-12, "half-way through the decay is lr/2: {lrs:?}");
        assert!(lrs.windows(2).skip(1).all(|w| w[1] <= w[0]));
        let lin = TrainConfig { schedule: Schedule::Linear, ..cfg.clone() };
        assert!((lin.lr_at(3, 6) - 0.75).abs() < 1e-12);
        let cst = TrainConfig { schedule: Schedule::Constant, ..cfg };
        assert_eq!(cst.lr_at(5, 6), 1.0);
    }

    #[test]
    fn epoch_order_is_a_seeded_permutation() {
        let a = epoch_order(50, 7, 0);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(50, 7, 0));
        assert_ne!(a, epoch_order(50, 7, 1));
        assert_ne!(a, epoch_order(50, 8, 0));
    }

    #[test]
    fn config_round_trips_through_json_and_validates() {
        let cfg = TrainConfig { loss: LossKind::Ipo, ..Default::default() };
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(json.contains("\"loss\":\"ipo\""), "{json}");
        let back: TrainConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cfg);
        assert!(TrainConfig { eta: 0.0, ..Default::default() }.validate().is_err());
        assert!(TrainConfig { batch_size: 0, ..Default::default() }.validate().is_err());
        assert!(TrainConfig::default().validate().is_ok());
    }
}
