//! DPO training throughput of `dno_train::train` (full fine-tune by default).
//!
//! ```text
//! cargo run --release -p dno-train --example bench_train -- \
//!     [--model PATH] [--steps 3] [--batch 8] [--seq-len 120] [--prompt-len 40] [--lora RANK] [--device cpu]
//!     [--shards N]   # data-parallel shards per batch (default: one per core on the CPU)
//!     [--gradient-checkpointing]
//!     [--dtype f32|bf16|f16]   # compute dtype (bf16: mixed precision with f32 master weights)
//!     [--lr 5e-7] [--epochs 1]  # epochs > 1 repeat the same pairs (steps x epochs optimiser steps)
//! ```
//!
//! Default model: `$HOME/.cache/dno/models/SmolLM2-135M-Instruct.Q4_1.gguf` (scripts/fetch_smollm2.sh).
//! Each pair is a prompt of `prompt-len` tokens with a chosen and a rejected response, each
//! sequence `seq-len` tokens in all. Throughput counts the tokens of both sequences of every
//! pair, over the time of the reference pass plus the policy forward+backward+update steps
//! (checkpoint and export excluded), the work TRL's DPOTrainer does too (it also runs a
//! reference forward per pair). Compare with a TRL run measured on the same machine at the same
//! time; this program prints only what it measures.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use dno_math::SplitMix64;
use dno_model::DeviceSpec;
use dno_train::{train, LossKind, LoraConfig, RunOptions, Schedule, TrainConfig, TrainExample};

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// CPU seconds (user + system) this process has used so far, from /proc/self/stat
/// (fields 14 and 15, in clock ticks of 1/100 s on Linux).
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.split_whitespace().collect::<Vec<_>>();
            let utime: f64 = rest.get(11)?.parse().ok()?;
            let stime: f64 = rest.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(f64::NAN)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() -> Result<()> {
    dno_model::device::one_malloc_arena();
    let mut model = std::env::var("HOME")
        .map(|h| PathBuf::from(h).join(".cache/dno/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
        .unwrap_or_default();
    let (mut steps, mut batch, mut seq_len, mut prompt_len, mut lora, mut device_spec) =
        (3usize, 8usize, 120usize, 40usize, None::<usize>, "cpu".to_string());
    let mut shards = None::<usize>;
    let mut gradient_checkpointing = false;
    let mut dtype_flag = None::<String>;
    let (mut lr, mut epochs) = (5e-7f64, 1usize);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--model" => model = PathBuf::from(val()?),
            "--steps" => steps = val()?.parse()?,
            "--batch" => batch = val()?.parse()?,
            "--seq-len" => seq_len = val()?.parse()?,
            "--prompt-len" => prompt_len = val()?.parse()?,
            "--lora" => lora = Some(val()?.parse()?),
            "--device" => device_spec = val()?,
            "--shards" => shards = Some(val()?.parse()?),
            "--gradient-checkpointing" => gradient_checkpointing = true,
            "--dtype" => dtype_flag = Some(val()?),
            "--lr" => lr = val()?.parse()?,
            "--epochs" => epochs = val()?.parse()?,
            other => bail!("unknown argument {other}"),
        }
    }
    if prompt_len == 0 || prompt_len >= seq_len {
        bail!("--prompt-len must be in 1..seq-len");
    }
    let spec = device_spec.parse::<DeviceSpec>()?;
    let dtype = dno_model::Dtype::resolve(dtype_flag.as_deref(), &spec)?;
    let device = spec.device()?;
    let t_load = Instant::now();
    let loaded = dno_model::load_model_as(&model, &device, dtype).with_context(|| format!("loading {}", model.display()))?;
    let load_s = t_load.elapsed().as_secs_f64();
    let vocab = loaded.config.vocab_size as u64;

    // Deterministic token ids, avoiding the low special-token range.
    let n_pairs = steps * batch;
    let mut rng = SplitMix64::new(1234);
    let mut toks = |n: usize| (0..n).map(|_| (100 + rng.below(vocab - 100)) as u32).collect::<Vec<u32>>();
    let examples: Vec<TrainExample> = (0..n_pairs)
        .map(|k| TrainExample {
            id: format!("bench-{k}"),
            prompt_tokens: toks(prompt_len),
            chosen_tokens: toks(seq_len - prompt_len),
            rejected_tokens: Some(toks(seq_len - prompt_len)),
            target: 1.0,
            weight: 1.0,
            chosen_winrate: 1.0,
            rejected_winrate: 0.0,
        })
        .collect();
    let pair_tokens = (2 * seq_len * n_pairs * epochs) as f64;

    let cfg = TrainConfig {
        loss: LossKind::Dpo,
        eta: 0.1,
        lr,
        epochs,
        batch_size: batch,
        grad_accum: 1,
        warmup_ratio: 0.0,
        schedule: Schedule::Constant,
        max_len: seq_len,
        lora: lora.map(|rank| LoraConfig {
            rank,
            alpha: 2.0 * rank as f64,
            targets: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"].map(String::from).to_vec(),
        }),
        ..TrainConfig::default()
    };
    let shard_count = shards.unwrap_or_else(|| dno_model::device::data_parallel_shards(&device));
    let workload = dno_train::memory::Workload { dtype, ..dno_train::memory::workload(&examples, &cfg, shard_count, gradient_checkpointing)? };
    let estimate = dno_train::memory::estimate(&loaded.config, &cfg, &workload);
    let out = tempfile::tempdir()?;
    let model_fingerprint = Some(dno_train::reference::model_files_fingerprint(&model)?);
    let opts = RunOptions { resume: false, model_fingerprint, stop: Arc::new(AtomicBool::new(false)), shards, gradient_checkpointing, ..Default::default() };
    let load_before = load_average();
    let cpu0 = cpu_seconds();
    let t_all = Instant::now();
    let mut cpu_at_last_step = cpu0;
    let outcome = train(loaded, examples, &cfg, out.path(), &device, opts, |m| {
        cpu_at_last_step = cpu_seconds();
        eprintln!(
            "step {} loss {:.4} grad_norm {:.3} {} tokens in {:.1}s ({:.1} policy tokens/s)",
            m.step,
            m.loss,
            m.grad_norm,
            m.tokens,
            m.tokens as f64 / m.tokens_per_s,
            m.tokens_per_s
        );
    })?;
    let wall_s = t_all.elapsed().as_secs_f64();
    // CPU time of fingerprint + reference pass + all steps (checkpoint/export excluded).
    let cpu_s = cpu_at_last_step - cpu0;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    let train_s: f64 = outcome.metrics.iter().map(|m| m.tokens as f64 / m.tokens_per_s).sum();
    let ref_s = outcome.reference_s;
    // Steady state: steps after the first (which pays one-time allocation/warm-up).
    let steady: Vec<f64> = outcome.metrics.iter().skip(1).map(|m| m.tokens as f64 / m.tokens_per_s).collect();
    let mode = if lora.is_some() { format!("DPO LoRA r={}", lora.unwrap_or(0)) } else { "DPO full".to_string() };
    let mode = format!("{mode}, {dtype}{}", if gradient_checkpointing { " + ckpt" } else { "" });

    println!("model: {} (loaded in {load_s:.1}s), device: {device_spec}", model.display());
    println!("{n_pairs} pairs = {steps} steps x {batch} pairs, {seq_len} tokens per sequence ({prompt_len} prompt)");
    println!();
    println!("| mode | ref pass s | train s | pairs/s | tokens/s (ref+policy) | policy-only tokens/s | steady-state pairs/s | peak RSS MiB |");
    println!("|---|---|---|---|---|---|---|---|");
    let steady_pairs = if steady.is_empty() { f64::NAN } else { (steady.len() * batch) as f64 / steady.iter().sum::<f64>() };
    println!(
        "| {mode} | {ref_s:.1} | {train_s:.1} | {:.3} | {:.1} | {:.1} | {:.3} | {:.0} |",
        (n_pairs * epochs) as f64 / (ref_s + train_s),
        pair_tokens / (ref_s + train_s),
        pair_tokens / train_s,
        steady_pairs,
        peak_rss_mib()
    );
    println!();
    println!(
        "wall time incl. fingerprint, checkpoint and HF export: {wall_s:.1}s; CPU time of reference pass + steps \
         {cpu_s:.1}s on {cores} cores (average {:.2} cores ours); load average before: {load_before}, after: {}",
        cpu_s / (ref_s + train_s),
        load_average()
    );
    println!(
        "CPU-normalised (as if all {cores} cores were ours for the whole run): {:.1} tokens/s, {:.3} pairs/s",
        pair_tokens / (cpu_s / cores) ,
        (n_pairs * epochs) as f64 / (cpu_s / cores)
    );
    println!(
        "final loss (step {}): {:.6}",
        outcome.metrics.last().map(|m| m.step).unwrap_or(0),
        outcome.metrics.last().map(|m| m.loss).unwrap_or(f64::NAN)
    );
    println!(
        "estimated peak MiB (dno train --dry-run, {dtype}, gradient checkpointing {}): {:.0}",
        if gradient_checkpointing { "on" } else { "off" },
        estimate.total() as f64 / (1024.0 * 1024.0)
    );
    Ok(())
}
