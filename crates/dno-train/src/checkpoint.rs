//! Resumable checkpoints: `out_dir/checkpoint/{model.bpk, optim.bpk, state.json}`.
//!
//! * `model.bpk`: burn's module record (burnpack) of the policy as trained (LoRA adapters
//!   unmerged). It stores every parameter's `ParamId`, so loading it restores the ids the
//!   optimiser state is keyed by.
//! * `optim.bpk`: the AdamW state (first/second moments and step count per parameter).
//! * `state.json`: [`TrainState`]: the config, the step reached (which fixes the epoch and the
//!   position in that epoch's seeded order) and the metrics so far.
//!
//! A checkpoint is written into `checkpoint.tmp/` and then renamed into place, so a crash
//! leaves either the previous checkpoint or the new one, never a torn one.
//!
//! A **completed** run keeps only `state.json` (with `complete: true`, [`save_done`]) beside its
//! export in `out_dir/model/`: the weights are in the export, and the optimiser state of a
//! finished run is never needed (writing it cost 15% of a short DPO run on SmolLM2, and its
//! buffers the run's peak memory). A rerun of the same command is then a no-op.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::store::ModuleRecord;
use dno_model::Llama;
use serde::{Deserialize, Serialize};

use crate::{StepMetrics, TrainConfig};

const DIR: &str = "checkpoint";
const TMP: &str = "checkpoint.tmp";
const OLD: &str = "checkpoint.old";
/// 3: mixed-precision parameters are stored in the compute dtype, their f32 masters in the
/// optimiser state; completed runs keep only `state.json`.
const FORMAT_VERSION: u32 = 3;

/// Everything besides tensors that a resume needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    pub format_version: u32,
    pub config: TrainConfig,
    /// Fingerprints of the input model and of the examples (see [`crate::reference`]).
    pub model_fingerprint: String,
    pub examples_fingerprint: String,
    pub n_examples: usize,
    /// Optimiser steps completed.
    pub step: usize,
    pub total_steps: usize,
    /// Training wall time so far (excluding the reference pass), seconds.
    pub elapsed_s: f64,
    pub metrics: Vec<StepMetrics>,
    /// The run finished and was exported; the checkpoint holds no tensors.
    #[serde(default)]
    pub complete: bool,
}

impl TrainState {
    pub fn new(config: TrainConfig, model_fingerprint: String, examples_fingerprint: String, n_examples: usize, total_steps: usize) -> Self {
        TrainState {
            format_version: FORMAT_VERSION,
            config,
            model_fingerprint,
            examples_fingerprint,
            n_examples,
            step: 0,
            total_steps,
            elapsed_s: 0.0,
            metrics: Vec::new(),
            complete: false,
        }
    }
}

/// Why a checkpoint written with `old` cannot be continued by a run with `new` (`None`: it
/// can): the config fields that differ, named with both values (the checkpoint interval may
/// change), or the input model or the examples.
pub fn incompatibility(old: &TrainState, new: &TrainState) -> Option<String> {
    let fields = |c: &TrainConfig| match serde_json::to_value(TrainConfig { checkpoint_every: 0, ..c.clone() }) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => unreachable!("TrainConfig serialises to an object"),
    };
    let (a, b) = (fields(&old.config), fields(&new.config));
    let changed: Vec<String> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .map(|(k, v)| format!("{k} {v} in the checkpoint, {} now", b.get(k).map(|x| x.to_string()).unwrap_or_default()))
        .collect();
    if !changed.is_empty() {
        return Some(format!("it was written with a different training config ({})", changed.join("; ")));
    }
    if old.model_fingerprint != new.model_fingerprint {
        return Some("the input model differs from the one it was trained from".into());
    }
    if old.examples_fingerprint != new.examples_fingerprint || old.n_examples != new.n_examples {
        return Some(format!(
            "the training examples differ ({} in the checkpoint, {} now{})",
            old.n_examples,
            new.n_examples,
            if old.n_examples == new.n_examples { ", with other content" } else { "" }
        ));
    }
    None
}

/// The checkpoint directory of a run.
pub fn checkpoint_dir(out_dir: &Path) -> PathBuf {
    out_dir.join(DIR)
}

/// Writes the checkpoint atomically (temp dir, then rename).
pub fn save(out_dir: &Path, model: &Llama, optim: &ModuleOptimizer, state: &TrainState) -> Result<()> {
    replace(out_dir, state, |tmp| {
        let model_path = tmp.join("model.bpk");
        model
            .clone()
            .save_file(&model_path)
            .map_err(|e| anyhow::anyhow!("writing model checkpoint {}: {e:?}", model_path.display()))?;
        let optim_path = tmp.join("optim.bpk");
        optim
            .save(&optim_path)
            .map_err(|e| anyhow::anyhow!("writing optimizer checkpoint {}: {e:?}", optim_path.display()))
    })
}

/// Marks the run complete: the checkpoint becomes `state.json` alone (`complete: true`),
/// replacing any earlier checkpoint's tensors. Call it after the export is in place.
pub fn save_done(out_dir: &Path, state: &TrainState) -> Result<()> {
    let done = TrainState { complete: true, ..state.clone() };
    replace(out_dir, &done, |_| Ok(()))
}

/// Writes `state.json` and whatever `tensors` writes into `checkpoint.tmp/`, then swaps it in for
/// `checkpoint/`.
fn replace(out_dir: &Path, state: &TrainState, tensors: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = out_dir.join(TMP);
    if tmp.exists() {
        fs::remove_dir_all(&tmp).with_context(|| format!("removing stale {}", tmp.display()))?;
    }
    fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    tensors(&tmp)?;
    let state_path = tmp.join("state.json");
    let json = serde_json::to_vec_pretty(state).context("serialising checkpoint state")?;
    fs::write(&state_path, json).with_context(|| format!("writing {}", state_path.display()))?;

    let dir = out_dir.join(DIR);
    let old = out_dir.join(OLD);
    if old.exists() {
        fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
    }
    if dir.exists() {
        fs::rename(&dir, &old).with_context(|| format!("moving {} aside", dir.display()))?;
    }
    fs::rename(&tmp, &dir).with_context(|| format!("renaming {} to {}", tmp.display(), dir.display()))?;
    if old.exists() {
        fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
    }
    Ok(())
}

/// Reads the state of the newest usable checkpoint: `checkpoint/`, or `checkpoint.old/` when a
/// crash happened between the two renames of [`replace`]. A checkpoint is usable when it has its
/// tensors, or when it marks a completed run.
pub fn load_state(out_dir: &Path) -> Result<Option<(PathBuf, TrainState)>> {
    for dir in [DIR, OLD].iter().map(|d| out_dir.join(d)) {
        let path = dir.join("state.json");
        if !path.is_file() {
            continue;
        }
        let text = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let state: TrainState =
            serde_json::from_slice(&text).with_context(|| format!("parsing checkpoint state {}", path.display()))?;
        if state.format_version != FORMAT_VERSION {
            bail!(
                "checkpoint {} has format version {}, expected {FORMAT_VERSION} (start over with dno train --force)",
                path.display(),
                state.format_version
            );
        }
        if state.complete || (dir.join("model.bpk").is_file() && dir.join("optim.bpk").is_file()) {
            return Ok(Some((dir, state)));
        }
    }
    Ok(None)
}

/// Applies a checkpoint's model record: weights and the persisted parameter ids (which key
/// the optimiser state, so build the optimiser after this).
pub fn restore_model(dir: &Path, model: Llama) -> Result<Llama> {
    let model_path = dir.join("model.bpk");
    let record = ModuleRecord::load(&model_path)
        .map_err(|e| anyhow::anyhow!("reading model checkpoint {}: {e:?}", model_path.display()))?;
    model
        .try_load_record(record)
        .map_err(|e| anyhow::anyhow!("applying model checkpoint {}: {e:?}", model_path.display()))
}

/// Loads a checkpoint's optimiser state into `optim`.
pub fn restore_optimizer(dir: &Path, optim: ModuleOptimizer) -> Result<ModuleOptimizer> {
    let optim_path = dir.join("optim.bpk");
    optim
        .load(&optim_path)
        .map_err(|e| anyhow::anyhow!("reading optimizer checkpoint {}: {e:?}", optim_path.display()))
}
