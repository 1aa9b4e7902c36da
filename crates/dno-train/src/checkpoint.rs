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
const FORMAT_VERSION: u32 = 2;

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
    let tmp = out_dir.join(TMP);
    if tmp.exists() {
        fs::remove_dir_all(&tmp).with_context(|| format!("removing stale {}", tmp.display()))?;
    }
    fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let model_path = tmp.join("model.bpk");
    model
        .clone()
        .save_file(&model_path)
        .map_err(|e| anyhow::anyhow!("writing model checkpoint {}: {e:?}", model_path.display()))?;
    let optim_path = tmp.join("optim.bpk");
    optim
        .save(&optim_path)
        .map_err(|e| anyhow::anyhow!("writing optimizer checkpoint {}: {e:?}", optim_path.display()))?;
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

/// The newest complete checkpoint directory, if any (`checkpoint/`, or `checkpoint.old/` when a
/// crash happened between the two renames of [`save`]).
fn find(out_dir: &Path) -> Option<PathBuf> {
    [DIR, OLD]
        .iter()
        .map(|d| out_dir.join(d))
        .find(|d| d.join("state.json").is_file() && d.join("model.bpk").is_file() && d.join("optim.bpk").is_file())
}

/// Reads only the state of the newest checkpoint.
pub fn load_state(out_dir: &Path) -> Result<Option<(PathBuf, TrainState)>> {
    let Some(dir) = find(out_dir) else { return Ok(None) };
    let path = dir.join("state.json");
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
    Ok(Some((dir, state)))
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
