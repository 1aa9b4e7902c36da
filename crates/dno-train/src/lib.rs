//! `dno-train`: one DNO training iteration π_t → π_{t+1} on a burn model.
//!
//! [`train`] takes the input model M (= π_t, which is also the reference in every log-ratio,
//! Alg. 1 line 4 / Eq. 13), a list of [`TrainExample`]s and a [`TrainConfig`], and
//!
//! 1. computes the reference log-probs log π_t(y⁺|x), log π_t(y⁻|x) once, without gradients, and
//!    caches them in `out_dir/ref_logps.json` ([`reference`]);
//! 2. trains with the chosen loss ([`loss`]: dno Eq. 8/11, dpo Eq. 13, ipo, sppo, sft), AdamW
//!    (ε = 1e-8), warm-up + cosine/linear/constant decay, gradient accumulation and global
//!    grad-norm clipping ([`optim`]), in a seeded per-epoch order ([`config::epoch_order`]);
//! 3. checkpoints to `out_dir/checkpoint/` every `checkpoint_every` steps, when the `stop`
//!    flag is raised, and at the end ([`checkpoint`]); `resume` continues bit-for-bit;
//! 4. writes the trained model, LoRA merged, as a Hugging Face directory `out_dir/model/`
//!    (via `dno_model::save_hf`), loadable by `dno sample` and transformers.
//!
//! Output layout of `out_dir`: `model/` (HF export, only after a completed run),
//! `checkpoint/` (resume state), `ref_logps.json` (reference cache), `metrics.jsonl` (one
//! [`StepMetrics`] JSON object per optimiser step, rewritten at each checkpoint and at the end).

pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod loss;
pub mod memory;
pub mod optim;
pub mod parallel;
pub mod reference;
mod trainer;

pub use config::{epoch_order, LoraConfig, Schedule, TrainConfig};
pub use dno_math::loss::{LossConfig, LossKind};
pub use trainer::train;

use serde::{Deserialize, Serialize};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// One training example: a prompt and its chosen (and, except for sft, rejected) response,
/// already tokenised with the model's chat template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainExample {
    /// Unique id (keys the reference cache).
    pub id: String,
    pub prompt_tokens: Vec<u32>,
    /// y⁺ (without the prompt).
    pub chosen_tokens: Vec<u32>,
    /// y⁻; `None` is allowed only for sft.
    pub rejected_tokens: Option<Vec<u32>>,
    /// Soft label z = σ(r_t(y⁺) − r_t(y⁻)) for dno (Eq. 8); ignored by the other losses.
    pub target: f64,
    /// Per-example loss weight (≥ 0).
    pub weight: f64,
    /// r_t(x, y⁺): the chosen response's win-rate (SPPO's P_win).
    pub chosen_winrate: f64,
    /// r_t(x, y⁻): the rejected response's win-rate (SPPO's P_lose).
    pub rejected_winrate: f64,
}

impl TrainExample {
    /// `(prompt, chosen, rejected)` for [`batch::PackedBatch::pack_pairs`]; the rejected response
    /// only when `with_rejected` (preference losses) and present.
    pub fn pair_tokens(&self, with_rejected: bool) -> (&[u32], &[u32], Option<&[u32]>) {
        let rejected = if with_rejected { self.rejected_tokens.as_deref() } else { None };
        (&self.prompt_tokens, &self.chosen_tokens, rejected)
    }

    /// Tokens of the example's packed row: prompt, chosen and rejected responses (what
    /// `--group-by-length` sorts by).
    pub fn len(&self) -> usize {
        self.prompt_tokens.len() + self.chosen_tokens.len() + self.rejected_tokens.as_ref().map_or(0, Vec::len)
    }
}

/// Metrics of one optimiser step. Preference metrics are `None` for sft.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// 1-based optimiser step.
    pub step: usize,
    /// Progress in epochs (fractional, e.g. 0.5 = half-way through the first epoch).
    pub epoch: f64,
    /// Weighted mean loss over the step's examples.
    pub loss: f64,
    /// Fraction of pairs with η·a > η·b (implicit reward of y⁺ above y⁻, Eq. 10).
    pub reward_accuracy: Option<f64>,
    /// Mean h = η·(a − b).
    pub margin_mean: Option<f64>,
    /// Mean a = log π(y⁺) − log π_t(y⁺) (un-scaled).
    pub chosen_logratio: Option<f64>,
    /// Mean b = log π(y⁻) − log π_t(y⁻) (un-scaled).
    pub rejected_logratio: Option<f64>,
    /// Global gradient L2 norm before clipping.
    pub grad_norm: f64,
    /// Learning rate used by this step.
    pub lr: f64,
    /// Real (unpadded) tokens through the policy in this step: each pair's prompt once (shared by
    /// its two responses, see [`batch::PackedBatch::pack_pairs`]) plus the responses.
    pub tokens: usize,
    /// `tokens` / wall time of this step.
    pub tokens_per_s: f64,
    /// Cumulative training wall time, seconds (across resumes; excludes the reference pass).
    pub elapsed_s: f64,
}

/// How to run: resume from `out_dir/checkpoint` if present, and a flag that, once set (the CLI
/// sets it on SIGINT), makes training checkpoint after the current step and return.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub resume: bool,
    /// Fingerprint of the input model, [`reference::model_files_fingerprint`] of the files it
    /// was read from; `None` (a model built in memory) hashes its weights instead.
    pub model_fingerprint: Option<String>,
    pub stop: Arc<AtomicBool>,
    /// Data-parallel shards per micro-batch (and per reference batch) on the training device;
    /// `None` picks [`dno_model::device::data_parallel_shards`]: one per core on the CPU, 1 on a
    /// GPU. Ignored when `devices` is set.
    pub shards: Option<usize>,
    /// Data parallelism across devices (e.g. two GPUs): shard k of every batch runs on
    /// `devices[k]` (plain devices; the first should be the training device, which holds the
    /// optimiser and receives the summed gradients). Empty: the training device alone.
    pub devices: Vec<burn::tensor::Device>,
    /// Layer-wise gradient checkpointing ([`dno_model::recompute`], HF's scheme): only each
    /// decoder layer's input is kept, and every layer is recomputed in the backward pass. Same
    /// losses and gradients, far less memory, one extra forward pass; so it is a run option, not
    /// part of the [`TrainConfig`] a resume must match.
    pub gradient_checkpointing: bool,
}

/// What [`train`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOutcome {
    /// Every step's metrics, including the steps of earlier (resumed) runs.
    pub metrics: Vec<StepMetrics>,
    /// True when training stopped early on the `stop` flag (checkpoint written, no export).
    pub interrupted: bool,
    /// Optimiser steps completed / planned.
    pub steps_done: usize,
    pub total_steps: usize,
    /// Whether the reference log-probs came from the cache.
    pub reference_cached: bool,
    /// Seconds spent in the reference pass in this call (0 when cached or for sft).
    pub reference_s: f64,
    /// The HF export directory (`out_dir/model`), when the run completed.
    pub model_dir: Option<std::path::PathBuf>,
    /// The step of the checkpoint this call continued from, if it resumed one.
    pub resumed_from: Option<usize>,
}
