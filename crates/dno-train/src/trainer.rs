//! The training loop.

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor, TensorData};
use dno_math::loss::{LossConfig, LossKind};
use dno_model::{Dtype, LoadedModel, Llama};

use crate::batch::{share_limit, to_host, value_and_grad, PackedBatch};
use crate::checkpoint::{self, TrainState};
use crate::config::{epoch_order, group_by_length};
use crate::loss::{pair_losses, PairLogps, PairTargetTensors};
use crate::parallel::{all_reduce_gradients, split_even, ShardPlan};
use crate::reference::{self, RefLogps};
use rayon::prelude::*;

use crate::{optim, RunOptions, StepMetrics, TrainConfig, TrainExample, TrainOutcome};

/// Pad token for right padding. Any valid id works: padded positions are never attended to
/// by real tokens (causal mask) and never scored.
const PAD_ID: u32 = 0;

/// Trains `model` (the input model M = π_t, also the reference) on `examples`; see the crate
/// docs for the output layout. `device` is the plain device the model was loaded on; training
/// runs on its autodiff twin. `on_step` sees every step's metrics as they happen.
pub fn train(
    model: LoadedModel,
    examples: Vec<TrainExample>,
    cfg: &TrainConfig,
    out_dir: &Path,
    device: &Device,
    opts: RunOptions,
    mut on_step: impl FnMut(&StepMetrics),
) -> Result<TrainOutcome> {
    cfg.validate()?;
    validate_examples(&examples, cfg.loss, model.config.vocab_size)?;
    fs::create_dir_all(out_dir).with_context(|| format!("creating output directory {}", out_dir.display()))?;
    let LoadedModel { model: base, config, tokenizer, chat } = model;
    // Continuing a LoRA run: π_t (the policy's start and the reference) is the base with the
    // adapter; the base stays frozen.
    let (base, adapter_fp) = match (&cfg.init_adapter, &cfg.lora) {
        (Some(dir), Some(l)) => {
            let targets: Vec<&str> = l.targets.iter().map(String::as_str).collect();
            let with = base.attach_lora(l.rank, l.alpha, &targets, device).context("attaching LoRA adapters")?;
            let with = dno_model::lora::peft::load_into(with, dir).with_context(|| format!("loading the adapter {}", dir.display()))?;
            (with, Some(reference::model_files_fingerprint(&dir.join(dno_model::lora::peft::WEIGHTS))?))
        }
        (Some(dir), None) => bail!("--init-adapter {}: needs a LoRA configuration (its rank, alpha and targets)", dir.display()),
        (None, _) => (base, None),
    };
    let n = examples.len();
    let total = cfg.total_steps(n);
    // The model's compute dtype (`--dtype`); below f32 the run is mixed-precision.
    let dtype = Dtype::of(base.compute_dtype).unwrap_or(Dtype::F32);
    // Mixed precision: f32 norms and residual stream, for the policy and the reference alike.
    let base = base.autocast();
    let model_fp = match &opts.model_fingerprint {
        Some(f) => f.clone(),
        None => reference::weights_fingerprint(&base),
    };
    // Reference log-probs and checkpoints of a bf16 run are not those of an f32 run.
    let model_fp = if dtype == Dtype::F32 { model_fp } else { format!("{model_fp}|{dtype}, f32 norms and residual") };
    let model_fp = match adapter_fp {
        Some(a) => format!("{model_fp}|adapter {a}"),
        None => model_fp,
    };
    let examples_fp = reference::examples_fingerprint(&examples, cfg.max_len);
    let fingerprint = reference::fingerprint(&model_fp, &examples_fp);
    let fresh = TrainState::new(cfg.clone(), model_fp, examples_fp, n, total);

    let prior = if opts.resume { checkpoint::load_state(out_dir)? } else { None };
    if let Some((dir, st)) = &prior {
        // Everything but the checkpoint interval must match, or the resumed run would not be
        // the continuation of the interrupted one.
        if let Some(why) = checkpoint::incompatibility(st, &fresh) {
            bail!("cannot resume from {}: {why}; rerun the original command to continue it, or start over (dno train --force)", dir.display());
        }
        if st.complete {
            // The same command again after it finished: nothing to do.
            let model_dir = out_dir.join("model");
            if !model_dir.join("config.json").is_file() {
                bail!(
                    "{}: this run completed, but its export {} is gone and a completed run keeps no weights; retrain with dno train --force",
                    dir.display(),
                    model_dir.display()
                );
            }
            return Ok(TrainOutcome {
                metrics: st.metrics.clone(),
                interrupted: false,
                steps_done: st.step,
                total_steps: total,
                reference_cached: true,
                reference_s: 0.0,
                model_dir: Some(model_dir),
                resumed_from: Some(st.step),
            });
        }
    }

    // Gradient checkpointing trades time for memory: the bf16 kernel then packs each weight at
    // every use instead of keeping packed copies for the step (dno_model::bf16_linear).
    dno_model::bf16_linear::set_caching(!opts.gradient_checkpointing);
    let plan = ShardPlan::new(device, &opts.devices, opts.shards);
    if plan.len() > 1 {
        log::info!("data parallel: {} shards on {:?}", plan.len(), plan.devices);
    }

    // 1. Reference log-probs of π_t (no gradients), cached.
    let preference = cfg.loss != LossKind::Sft;
    let t_ref = Instant::now();
    let (refs, reference_cached) = if preference {
        let base_plain = base.valid();
        let computed = reference::load_or_compute(
            &base_plain,
            &examples,
            &fingerprint,
            cfg.max_len,
            cfg.batch_size,
            out_dir,
            device,
            &plan,
            &opts.stop,
        )?;
        match computed {
            Some(r) => r,
            None => {
                // Stopped during the reference pass: nothing trained, nothing to checkpoint.
                let steps_done_if_resumed = prior.as_ref().map(|(_, st)| st.step);
                let (steps_done, metrics) = prior.map(|(_, st)| (st.step, st.metrics)).unwrap_or_default();
                return Ok(TrainOutcome {
                    metrics,
                    interrupted: true,
                    steps_done,
                    total_steps: total,
                    reference_cached: false,
                    reference_s: t_ref.elapsed().as_secs_f64(),
                    model_dir: None,
                    resumed_from: steps_done_if_resumed,
                });
            }
        }
    } else {
        (Vec::new(), false)
    };
    release_free_memory();
    let reference_s = if reference_cached || !preference { 0.0 } else { t_ref.elapsed().as_secs_f64() };

    // 2. The policy on the autodiff device (LoRA adapters attached when configured).
    device.seed(cfg.seed);
    let ad = device.clone().autodiff();
    // `train()` moves the parameters onto autodiff with their configured require-grad state
    // (all trainable: full fine-tuning; LoRA below freezes the base again). `fork` alone would
    // keep them plain, i.e. constants.
    // Mixed precision: the policy's parameters stay in `dtype` (forward, backward and gradients
    // in `dtype`); the optimiser keeps each one's f32 master copy and f32 moments and applies the
    // update in f32 ([`crate::optim`]). LoRA freezes the base in `dtype`; its adapters are f32.
    let mut policy = base.fork(&ad).train();
    if let (Some(l), None) = (&cfg.lora, &cfg.init_adapter) {
        let targets: Vec<&str> = l.targets.iter().map(String::as_str).collect();
        policy = policy.attach_lora(l.rank, l.alpha, &targets, &ad).context("attaching LoRA adapters")?;
    }
    let mut state = fresh;
    let mut resumed_dir = None;
    if let Some((dir, st)) = prior {
        policy = checkpoint::restore_model(&dir, policy)?;
        state = st;
        resumed_dir = Some(dir);
        log::info!("resuming at step {}/{}", state.step, total);
    }
    let mut optim = optim::adamw(&policy, cfg.weight_decay);
    if let Some(dir) = &resumed_dir {
        optim = checkpoint::restore_optimizer(dir, optim)?;
    }
    // Several accelerators: every other device keeps its own replica of the policy (the same
    // parameter ids and values) and of the optimiser state for the whole run ([`crate::parallel`]);
    // `policy` and `optim` are the first device's, which checkpoints and exports.
    let mut others: Vec<(Llama, ModuleOptimizer)> = Vec::new();
    if plan.replicated() {
        for d in &plan.devices[1..] {
            let replica = policy.clone().fork(&d.clone().autodiff());
            let mut o = optim::adamw(&replica, cfg.weight_decay);
            if let Some(dir) = &resumed_dir {
                o = checkpoint::restore_optimizer(dir, o)?;
            }
            others.push((replica, o));
        }
        log::info!("replicated data parallel: a copy of the policy and optimiser on each of {:?}", plan.devices);
    }

    // 3. Optimiser steps.
    let loss_cfg = LossConfig { kind: cfg.loss, eta: cfg.eta, ipo_tau: cfg.ipo_tau };
    let steps_per_epoch = cfg.steps_per_epoch(n);
    let per_step = cfg.examples_per_step();
    let mut order_epoch = usize::MAX;
    let mut order = Vec::new();
    let resumed_from = resumed_dir.as_ref().map(|_| state.step);
    let mut saved_step = resumed_from;
    let mut interrupted = false;
    while state.step < total {
        if opts.stop.load(Ordering::SeqCst) {
            interrupted = true;
            break;
        }
        let epoch = state.step / steps_per_epoch;
        if epoch != order_epoch {
            order = epoch_order(n, cfg.seed, epoch);
            if cfg.group_by_length {
                order = group_by_length(&order, per_step, |i| examples[i].len());
            }
            order_epoch = epoch;
        }
        let pos = state.step % steps_per_epoch;
        let ids = &order[pos * per_step..((pos + 1) * per_step).min(n)];
        let lr = cfg.lr_at(state.step, total);

        let t_step = Instant::now();
        let (acc, grad_norm) = if others.is_empty() {
            let (grads, acc) = step_gradients(&policy, &examples, &refs, ids, cfg, &loss_cfg, &ad, &plan, &opts)?;
            let (grads, grad_norm) = optim::clip_global_norm(&policy, grads, cfg.max_grad_norm)?;
            policy = optim.step(lr, policy, grads);
            (acc, grad_norm)
        } else {
            let replicas: Vec<Llama> = std::iter::once(&policy).chain(others.iter().map(|(m, _)| m)).cloned().collect();
            let (mut grads, acc) = replicated_gradients(&replicas, &examples, &refs, ids, cfg, &loss_cfg, &plan, &opts)?;
            drop(replicas);
            // Every device now holds the same summed gradients, so the same norm, clipping and
            // update: the replicas stay equal.
            let (first, grad_norm) = optim::clip_global_norm(&policy, grads.remove(0), cfg.max_grad_norm)?;
            policy = optim.step(lr, policy, first);
            for ((model, o), g) in others.iter_mut().zip(grads) {
                let (g, _) = optim::clip_global_norm(model, g, cfg.max_grad_norm)?;
                *model = o.step(lr, model.clone(), g);
            }
            (acc, grad_norm)
        };
        // The weights changed: the bf16 kernel's packed copies of the old ones go.
        dno_model::bf16_linear::forget_packed();
        release_free_memory();
        let secs = t_step.elapsed().as_secs_f64();

        state.step += 1;
        state.elapsed_s += secs;
        let m = acc.metrics(state.step, state.step as f64 / steps_per_epoch as f64, grad_norm, lr, secs, state.elapsed_s, preference, cfg.eta);
        on_step(&m);
        state.metrics.push(m);
        #[allow(clippy::manual_is_multiple_of)] // `is_multiple_of` needs Rust 1.87; MSRV is 1.85
        let due = cfg.checkpoint_every > 0 && state.step % cfg.checkpoint_every == 0;
        if due && state.step < total {
            save_checkpoint(out_dir, &policy, &optim, &state)?;
            saved_step = Some(state.step);
        }
    }

    // 4. A stopped run checkpoints (unless it just did); a completed one exports, then marks
    // the checkpoint complete (its state alone: the weights are the export, and the optimiser
    // state is never needed again), which makes a rerun a no-op.
    if interrupted && saved_step != Some(state.step) {
        save_checkpoint(out_dir, &policy, &optim, &state)?;
    }
    drop(optim);
    let model_dir = if interrupted {
        None
    } else {
        let dir = out_dir.join("model");
        let mut trained = policy.valid();
        if cfg.lora.is_some() {
            // The adapter alone, in PEFT's format (`out_dir/adapter`), then merged into `model/`.
            let adapter = out_dir.join("adapter");
            let tmp = out_dir.join("adapter.tmp");
            for d in [&tmp, &adapter] {
                if d.exists() {
                    fs::remove_dir_all(d).with_context(|| format!("removing {}", d.display()))?;
                }
            }
            dno_model::lora::peft::save(&trained, &tmp, None).with_context(|| format!("writing the PEFT adapter to {}", tmp.display()))?;
            fs::rename(&tmp, &adapter).with_context(|| format!("renaming {} to {}", tmp.display(), adapter.display()))?;
            trained = trained.merge_lora();
        }
        let loaded = LoadedModel { model: trained, config, tokenizer, chat };
        // Written aside and renamed into place, so `model/` is always a complete export (a
        // make rule may take `model/config.json` as its target).
        let tmp = out_dir.join("model.tmp");
        for d in [&tmp, &dir] {
            if d.exists() {
                fs::remove_dir_all(d).with_context(|| format!("removing {}", d.display()))?;
            }
        }
        let export = dno_model::ExportOptions { dtype, ..Default::default() };
        dno_model::save_hf_with(&loaded, &tmp, export).with_context(|| format!("exporting the trained model to {}", tmp.display()))?;
        fs::rename(&tmp, &dir).with_context(|| format!("renaming {} to {}", tmp.display(), dir.display()))?;
        checkpoint::save_done(out_dir, &state)?;
        write_metrics_jsonl(out_dir, &state.metrics)?;
        Some(dir)
    };
    Ok(TrainOutcome {
        metrics: state.metrics,
        interrupted,
        steps_done: state.step,
        total_steps: total,
        reference_cached,
        reference_s,
        model_dir,
        resumed_from,
    })
}

/// Hands memory that the step freed back to the OS. The shards' activations and gradients are
/// freed in the arenas of the threads that allocated them, where glibc keeps them resident; later
/// allocations of other sizes on other threads cannot reuse those holes, so without this the
/// resident set grows by several hundred MiB over the first steps (bf16 SmolLM2 DPO with
/// checkpointing, 24 pairs: a peak RSS of 2889 MiB without it, 2801 MiB with it). Costs the page
/// faults of touching that memory again.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only returns free pages of the malloc arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn save_checkpoint(out_dir: &Path, policy: &Llama, optim: &ModuleOptimizer, state: &TrainState) -> Result<()> {
    checkpoint::save(out_dir, policy, optim, state)?;
    write_metrics_jsonl(out_dir, &state.metrics)
}

/// `out_dir/metrics.jsonl`, one [`StepMetrics`] per line, replaced atomically.
fn write_metrics_jsonl(out_dir: &Path, metrics: &[StepMetrics]) -> Result<()> {
    let mut text = String::new();
    for m in metrics {
        text.push_str(&serde_json::to_string(m)?);
        text.push('\n');
    }
    let path = out_dir.join("metrics.jsonl");
    let tmp = out_dir.join("metrics.jsonl.tmp");
    fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// Host-side sums for one step's metrics.
#[derive(Default)]
struct StepAcc {
    examples: usize,
    loss: f64,
    tokens: usize,
    correct: usize,
    sum_a: f64,
    sum_b: f64,
}

impl StepAcc {
    /// Adds a shard's sums (`examples` is set once per step, not summed).
    fn add(&mut self, o: &StepAcc) {
        self.loss += o.loss;
        self.tokens += o.tokens;
        self.correct += o.correct;
        self.sum_a += o.sum_a;
        self.sum_b += o.sum_b;
    }

    #[allow(clippy::too_many_arguments)]
    fn metrics(&self, step: usize, epoch: f64, grad_norm: f64, lr: f64, secs: f64, elapsed_s: f64, preference: bool, eta: f64) -> StepMetrics {
        let k = self.examples.max(1) as f64;
        let pref = |v: f64| preference.then_some(v);
        StepMetrics {
            step,
            epoch,
            loss: self.loss,
            reward_accuracy: pref(self.correct as f64 / k),
            margin_mean: pref(eta * (self.sum_a - self.sum_b) / k),
            chosen_logratio: pref(self.sum_a / k),
            rejected_logratio: pref(self.sum_b / k),
            grad_norm,
            lr,
            tokens: self.tokens,
            tokens_per_s: if secs > 0.0 { self.tokens as f64 / secs } else { 0.0 },
            elapsed_s,
        }
    }
}

fn f32_tensor(values: impl Iterator<Item = f64>, device: &Device) -> Tensor<1> {
    let v: Vec<f32> = values.map(|x| x as f32).collect();
    let len = v.len();
    Tensor::from_data(TensorData::new(v, [len]), device)
}

/// Forward + backward over the step's examples in micro-batches of `batch_size`, accumulating
/// gradients. Each micro-batch's loss is Σ_i w_i ℓ_i / |step|, so the accumulated gradient is
/// that of the weighted mean over the whole step whatever the micro-batching.
///
/// A micro-batch is split by pair into the shards of `plan` (one per CPU core, or one per
/// device), which run at the same time on their own forks of the policy; their gradients are
/// summed on the training device ([`crate::parallel`]).
#[allow(clippy::too_many_arguments)]
fn step_gradients(
    policy: &Llama,
    examples: &[TrainExample],
    refs: &[RefLogps],
    ids: &[usize],
    cfg: &TrainConfig,
    loss_cfg: &LossConfig,
    device: &Device,
    plan: &ShardPlan,
    opts: &RunOptions,
) -> Result<(GradientsParams, StepAcc)> {
    let mut accum = GradientsParams::new();
    // Several micro-batches accumulate in f32; one micro-batch's shards are summed in the
    // gradients' own dtype (a single rounding under mixed precision).
    let widen = ids.len() > cfg.batch_size;
    let mut acc = StepAcc { examples: ids.len(), ..Default::default() };
    let main = device.clone().inner();
    for micro in ids.chunks(cfg.batch_size) {
        let parts = split_even(micro, plan.len());
        let results: Vec<Result<(GradientsParams, StepAcc)>> = parts
            .par_iter()
            .enumerate()
            .map(|(k, part)| {
                let here = &plan.devices[k];
                let ad = here.clone().autodiff();
                let fork = policy.clone().fork(&ad);
                let (grads, part_acc) = shard_gradients(&fork, examples, refs, part, ids.len(), cfg, loss_cfg, &ad, opts.gradient_checkpointing)?;
                let grads = if *here == main { grads } else { grads.to_device(&main, &fork) };
                Ok((grads, part_acc))
            })
            .collect();
        for r in results {
            let (grads, part_acc) = r?;
            acc.add(&part_acc);
            dno_model::recompute::add_gradients(&mut accum, grads, policy, widen);
        }
    }
    Ok((accum, acc))
}

/// [`step_gradients`] for replicated data parallelism: replica k (on `plan.devices[k]`) takes
/// part k of every micro-batch, all replicas at the same time, and accumulates its gradients on its
/// own device; then the sums are taken across the devices ([`all_reduce_gradients`]), so every
/// replica gets the gradients of the whole step.
#[allow(clippy::too_many_arguments)]
fn replicated_gradients(
    replicas: &[Llama],
    examples: &[TrainExample],
    refs: &[RefLogps],
    ids: &[usize],
    cfg: &TrainConfig,
    loss_cfg: &LossConfig,
    plan: &ShardPlan,
    opts: &RunOptions,
) -> Result<(Vec<GradientsParams>, StepAcc)> {
    let widen = ids.len() > cfg.batch_size;
    let results: Vec<Result<(GradientsParams, StepAcc)>> = replicas
        .par_iter()
        .enumerate()
        .map(|(k, model)| {
            let ad = plan.devices[k].clone().autodiff();
            let mut accum = GradientsParams::new();
            let mut acc = StepAcc::default();
            for micro in ids.chunks(cfg.batch_size) {
                // A micro-batch smaller than the device count leaves the last devices idle.
                if let Some(part) = split_even(micro, plan.len()).get(k) {
                    let (grads, part_acc) = shard_gradients(model, examples, refs, part, ids.len(), cfg, loss_cfg, &ad, opts.gradient_checkpointing)?;
                    acc.add(&part_acc);
                    dno_model::recompute::add_gradients(&mut accum, grads, model, widen);
                }
            }
            Ok((accum, acc))
        })
        .collect();
    let mut acc = StepAcc { examples: ids.len(), ..Default::default() };
    let mut grads = Vec::with_capacity(results.len());
    for r in results {
        let (g, part_acc) = r?;
        acc.add(&part_acc);
        grads.push(g);
    }
    all_reduce_gradients(&replicas[0], &mut grads, &plan.devices);
    Ok((grads, acc))
}

/// Loss Σ_{i ∈ part} w_i ℓ_i / `step_examples` on `model` (each pair one row, prompt ++ chosen ++
/// rejected, in one forward), its gradients, and the part's metric sums.
#[allow(clippy::too_many_arguments)]
fn shard_gradients(
    model: &Llama,
    examples: &[TrainExample],
    refs: &[RefLogps],
    part: &[usize],
    step_examples: usize,
    cfg: &TrainConfig,
    loss_cfg: &LossConfig,
    device: &Device,
    recompute: bool,
) -> Result<(GradientsParams, StepAcc)> {
    let preference = cfg.loss != LossKind::Sft;
    let mut acc = StepAcc::default();
    let b = part.len();
    // validate_examples checked that preference losses have every rejected response.
    let pairs: Vec<_> = part.iter().map(|&i| examples[i].pair_tokens(preference)).collect();
    let batch = PackedBatch::pack_pairs(&pairs, cfg.max_len, PAD_ID, share_limit(model))
        .with_context(|| format!("batch starting at example {:?}", examples[part[0]].id))?;
    acc.tokens += batch.real_tokens;
    let ex = |f: fn(&TrainExample) -> f64| f32_tensor(part.iter().map(|&i| f(&examples[i])), device);
    // One forward for chosen and rejected together (one row per pair, prompt shared); the loss
    // is a function of the sequence log-probs, differentiated with the head chunked.
    let (loss, logps, grads) = value_and_grad(model, &batch, device, recompute, |logps| {
        let policy_chosen = logps.clone().narrow(0, 0, b);
        let x = if preference {
            PairLogps {
                policy_chosen,
                policy_rejected: Some(logps.narrow(0, b, b)),
                ref_chosen: Some(f32_tensor(part.iter().map(|&i| refs[i].chosen), device)),
                ref_rejected: Some(f32_tensor(part.iter().map(|&i| refs[i].rejected.unwrap_or_default()), device)),
            }
        } else {
            PairLogps { policy_chosen, policy_rejected: None, ref_chosen: None, ref_rejected: None }
        };
        let targets = PairTargetTensors { z: ex(|e| e.target), p_win: ex(|e| e.chosen_winrate), p_lose: ex(|e| e.rejected_winrate) };
        let losses = pair_losses(loss_cfg, &x, &targets)?;
        Ok((losses * ex(|e| e.weight)).sum().div_scalar(step_examples as f64))
    })?;
    acc.loss += to_host(loss)?[0];
    if preference {
        let lp = to_host(logps)?;
        for (k, &i) in part.iter().enumerate() {
            let a = lp[k] - refs[i].chosen;
            let bb = lp[b + k] - refs[i].rejected.unwrap_or_default();
            acc.sum_a += a;
            acc.sum_b += bb;
            if a > bb {
                acc.correct += 1;
            }
        }
    }
    Ok((grads, acc))
}

/// Clear, one-line errors for examples that cannot be trained on.
fn validate_examples(examples: &[TrainExample], kind: LossKind, vocab_size: usize) -> Result<()> {
    if examples.is_empty() {
        bail!("no training examples");
    }
    let mut seen = HashSet::new();
    let check_tokens = |id: &str, field: &str, t: &[u32]| -> Result<()> {
        if t.is_empty() {
            bail!("example {id:?}: {field} is empty");
        }
        if let Some(&bad) = t.iter().find(|&&x| x as usize >= vocab_size) {
            bail!("example {id:?}: {field} has token id {bad} outside the model's vocabulary ({vocab_size})");
        }
        Ok(())
    };
    for e in examples {
        if !seen.insert(e.id.as_str()) {
            bail!("duplicate example id {:?}", e.id);
        }
        check_tokens(&e.id, "prompt_tokens", &e.prompt_tokens)?;
        check_tokens(&e.id, "chosen_tokens", &e.chosen_tokens)?;
        match (&e.rejected_tokens, kind) {
            (Some(r), _) => check_tokens(&e.id, "rejected_tokens", r)?,
            (None, LossKind::Sft) => {}
            (None, _) => bail!("example {:?}: loss {kind} needs rejected_tokens", e.id),
        }
        if !(e.weight.is_finite() && e.weight >= 0.0) {
            bail!("example {:?}: weight must be finite and >= 0, got {}", e.id, e.weight);
        }
        for (name, v) in [("target", e.target), ("chosen_winrate", e.chosen_winrate), ("rejected_winrate", e.rejected_winrate)] {
            if !(0.0..=1.0).contains(&v) {
                bail!("example {:?}: {name} must lie in [0, 1], got {v}", e.id);
            }
        }
    }
    Ok(())
}
