//! `dno train` (stage 4): contrastive training against the previous iterate. The reference is
//! the input model M = pi_t (Alg. 1 / Alg. 2); its log-probs are computed once and cached.

use anyhow::{anyhow, bail, Context, Result};
use dno_data::{read_validated, DatasetWriter, MetricRow, PairRow, PromptRow, Provenance};
use dno_model::LoadedModel;
use dno_train::{LoraConfig, RunOptions, TrainConfig, TrainExample};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(clap::Args, Serialize)]
pub struct Args {
    /// The policy to improve, pi_t (GGUF file or HF directory); also the reference.
    #[arg(long)]
    pub model: PathBuf,
    /// Training pairs from `dno pair` (files or shard directories).
    #[arg(long, num_args = 1.., required_unless_present = "prompts")]
    pub pairs: Vec<PathBuf>,
    /// With --loss sft: train on the prompts' `reference` answers instead of pairs.
    #[arg(long, num_args = 1..)]
    pub prompts: Vec<PathBuf>,
    /// Output directory: model/ (HF format), metrics.parquet, checkpoint/, reference cache.
    #[arg(long, short)]
    pub out: PathBuf,
    /// dno (Eq. 8, soft targets), dpo (= DNO-Prct, Eq. 13), ipo, sppo or sft.
    #[arg(long, default_value_t = TrainConfig::default().loss.to_string())]
    pub loss: String,
    /// eta: scales the log-ratios in h (beta of DPO).
    #[arg(long, default_value_t = TrainConfig::default().eta)]
    pub eta: f64,
    /// IPO's tau (target margin 1/(2 tau)).
    #[arg(long, default_value_t = TrainConfig::default().ipo_tau)]
    pub ipo_tau: f64,
    #[arg(long, default_value_t = TrainConfig::default().lr)]
    pub lr: f64,
    #[arg(long, default_value_t = TrainConfig::default().epochs)]
    pub epochs: usize,
    /// Pairs per forward/backward pass.
    #[arg(long, default_value_t = TrainConfig::default().batch_size)]
    pub batch_size: usize,
    /// Micro-batches per optimiser step.
    #[arg(long, default_value_t = TrainConfig::default().grad_accum)]
    pub grad_accum: usize,
    #[arg(long, default_value_t = TrainConfig::default().weight_decay)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = TrainConfig::default().warmup_ratio)]
    pub warmup_ratio: f64,
    /// Overrides --warmup-ratio when > 0.
    #[arg(long, default_value_t = TrainConfig::default().warmup_steps)]
    pub warmup_steps: usize,
    /// cosine, linear or constant.
    #[arg(long, default_value_t = TrainConfig::default().schedule.to_string())]
    pub schedule: String,
    /// Clip the global gradient norm (0 = off).
    #[arg(long, default_value_t = TrainConfig::default().max_grad_norm)]
    pub max_grad_norm: f64,
    #[arg(long, default_value_t = TrainConfig::default().seed)]
    pub seed: u64,
    /// LoRA rank (0 = full fine-tune). Adapters are merged on save.
    #[arg(long, default_value_t = 0)]
    pub lora_rank: usize,
    #[arg(long, default_value_t = 16.0)]
    pub lora_alpha: f64,
    /// Continue LoRA training from a PEFT adapter directory (adapter_config.json +
    /// adapter_model.safetensors, e.g. OUT/adapter of an earlier run): the model is --model with
    /// this adapter; rank, alpha and targets come from its config.
    #[arg(long)]
    pub init_adapter: Option<PathBuf>,
    /// Comma-separated projections to adapt.
    #[arg(long, default_value_t = dno_model::lora::LORA_TARGETS.join(","))]
    pub lora_targets: String,
    /// Checkpoint every N optimiser steps (0 = only on SIGINT and at the end). A rerun of the
    /// same command continues from the last checkpoint.
    #[arg(long, default_value_t = TrainConfig::default().checkpoint_every)]
    pub checkpoint_every: usize,
    /// Max prompt+response tokens per sequence.
    #[arg(long, default_value_t = TrainConfig::default().max_len)]
    pub max_len: usize,
    /// Put pairs of similar length into the same step (sorted by length within groups of 50
    /// steps of the shuffled epoch): less padding, faster steps, at the cost of less random batches.
    #[arg(long)]
    pub group_by_length: bool,
    /// System message for the chat template (a row's own `system` wins).
    #[arg(long)]
    pub system: Option<String>,
    /// Chat template file (Jinja) replacing the model's own, e.g. for a base model whose GGUF
    /// has none (pipelines/chat_templates/gemma.jinja); the trained model is saved with it.
    #[arg(long)]
    pub chat_template: Option<PathBuf>,
    /// cpu, cuda, cuda:N (`--features cuda`), wgpu, wgpu:N or wgpu:cpu (`--features wgpu`). On the CPU each batch is split into one data-parallel shard per core.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Data parallelism across devices, e.g. `cuda:0,cuda:1` (instead of --device): each device
    /// keeps a replica of the policy and optimiser, takes its share of every micro-batch's pairs,
    /// and the gradients are summed across the devices (burn's all_reduce, NCCL, on CUDA; through
    /// the first device elsewhere) before every device applies the same update.
    #[arg(long, value_delimiter = ',', conflicts_with = "device")]
    pub devices: Vec<String>,
    /// Weight and compute precision: f32, bf16 or f16 [default: bf16 on CUDA, f32 elsewhere].
    /// Below f32, training is mixed-precision: f32 master weights and AdamW moments, f32
    /// log-probs and loss.
    #[arg(long)]
    pub dtype: Option<String>,
    /// Data-parallel shards per micro-batch on the device [default: one per core, at most 4, on
    /// the CPU; 1 on a GPU]. Each shard holds a full set of gradients until they are summed.
    #[arg(long, conflicts_with = "devices")]
    pub shards: Option<usize>,
    /// Layer-wise gradient checkpointing (as HF's): keep only each layer's input and recompute the
    /// layer in the backward pass: same results, far less memory, one extra forward pass.
    #[arg(long)]
    pub gradient_checkpointing: bool,
    /// Print the estimated peak memory (weights, gradients, optimiser, activations) for this
    /// model, batch, length and --gradient-checkpointing, then exit without training.
    #[arg(long)]
    pub dry_run: bool,
    /// Accepted for compatibility: a rerun of the same command always continues from
    /// OUT/checkpoint (same data order and optimiser state).
    #[arg(long, hide = true, conflicts_with = "force")]
    pub resume: bool,
    /// Start over: discard OUT/model and OUT/checkpoint (a rerun without it resumes).
    #[arg(long)]
    pub force: bool,
}

static SIGINT: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    SIGINT.store(true, Ordering::SeqCst);
}

/// SIGINT sets the trainer's stop flag: it checkpoints after the current step and exits.
fn stop_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
    }
    let f = flag.clone();
    std::thread::spawn(move || loop {
        if SIGINT.load(Ordering::SeqCst) {
            f.store(true, Ordering::SeqCst);
            eprintln!("interrupt: checkpointing after this step (press Ctrl-C again to abort)");
            #[cfg(unix)]
            unsafe {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
            }
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    });
    flag
}

/// Tokenise prompt (the whole conversation, through the chat template) and response; a response
/// that `ended` is closed with the template's end-of-turn marker (`dno_model::chat::encode_for_training`).
fn encode(lm: &LoadedModel, system: Option<&str>, history: Option<&str>, prompt: &str, response: &str, ended: bool) -> Result<(Vec<u32>, Vec<u32>)> {
    let turns = dno_data::conversation(system, history, prompt)?;
    let messages: Vec<(&str, &str)> = turns.iter().map(|t| (t.role.as_str(), t.content.as_str())).collect();
    dno_model::chat::encode_for_training(&lm.tokenizer, &lm.chat, &messages, response, ended)
}

pub fn run(a: Args) -> Result<()> {
    let _lock = if a.dry_run { None } else { Some(dno_data::lock_output(&a.out)?) };
    // A rerun of the same command continues from OUT/checkpoint (the trainer refuses, naming
    // what differs, when the config, model or examples changed); --force starts over.
    if a.force && !a.dry_run {
        for sub in ["model", "model.tmp", "checkpoint", "checkpoint.old", "checkpoint.tmp"] {
            let p = a.out.join(sub);
            if p.exists() {
                std::fs::remove_dir_all(&p).with_context(|| format!("{}: cannot remove", p.display()))?;
            }
        }
    }
    let model_dir = a.out.join("model");
    if model_dir.exists() && !a.dry_run && dno_train::checkpoint::load_state(&a.out)?.is_none() {
        bail!("{}: a trained model already exists, without a checkpoint to resume (pass --force to retrain)", model_dir.display());
    }
    let loss: dno_math::LossKind = a.loss.parse().map_err(|e| anyhow!("--loss: {e}"))?;
    let cfg = TrainConfig {
        loss,
        eta: a.eta,
        ipo_tau: a.ipo_tau,
        lr: a.lr,
        epochs: a.epochs,
        batch_size: a.batch_size,
        grad_accum: a.grad_accum,
        weight_decay: a.weight_decay,
        warmup_ratio: a.warmup_ratio,
        warmup_steps: a.warmup_steps,
        schedule: a.schedule.parse()?,
        max_grad_norm: a.max_grad_norm,
        seed: a.seed,
        lora: match &a.init_adapter {
            Some(dir) => {
                let (rank, alpha, targets) = dno_model::lora::peft::read_config(dir).context("--init-adapter")?;
                if a.lora_rank > 0 && a.lora_rank != rank {
                    bail!("--lora-rank {} differs from the rank {rank} of --init-adapter {}", a.lora_rank, dir.display());
                }
                Some(LoraConfig { rank, alpha, targets })
            }
            None => (a.lora_rank > 0).then(|| LoraConfig {
                rank: a.lora_rank,
                alpha: a.lora_alpha,
                targets: a.lora_targets.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
            }),
        },
        checkpoint_every: a.checkpoint_every,
        max_len: a.max_len,
        init_adapter: a.init_adapter.clone(),
        group_by_length: a.group_by_length,
    };
    cfg.validate()?;

    // Validate inputs before loading the model.
    let (inputs, pairs, prompts): (Vec<PathBuf>, Vec<PairRow>, Vec<PromptRow>) = if !a.pairs.is_empty() {
        let (r, rows) = read_validated::<PairRow>(&a.pairs)?;
        let old: Vec<&PathBuf> = r.files().iter().zip(r.versions()).filter(|(_, &v)| v < 2).map(|(f, _)| f).collect();
        if let Some(f) = old.first() {
            log::warn!(
                "{} ({} more v1 file(s)): pairs schema v1 records no finish reasons; their responses are all treated as ended (closed with the end-of-turn marker), as before v2",
                f.display(),
                old.len() - 1
            );
        }
        (r.files().to_vec(), rows, vec![])
    } else {
        if loss != dno_math::LossKind::Sft {
            bail!("--prompts is only for --loss sft; preference losses need --pairs");
        }
        let (r, rows) = read_validated::<PromptRow>(&a.prompts)?;
        (r.files().to_vec(), vec![], rows)
    };
    let specs: Vec<dno_model::DeviceSpec> = if a.devices.is_empty() {
        vec![a.device.parse().context("--device")?]
    } else {
        a.devices.iter().map(|d| d.parse().context("--devices")).collect::<Result<_>>()?
    };
    let devices = specs.iter().map(|s| s.device()).collect::<Result<Vec<_>>>()?;
    let device = devices[0].clone();
    let model_fp = dno_train::reference::model_files_fingerprint(&a.model)?;
    let dtype = dno_model::Dtype::resolve(a.dtype.as_deref(), &specs[0]).context("--dtype")?;
    let mut lm = dno_model::load_model_as(&a.model, &device, dtype).with_context(|| format!("loading {}", a.model.display()))?;
    lm.use_chat_template_file(a.chat_template.as_deref())?;
    let mut examples = Vec::new();
    for (i, p) in pairs.iter().enumerate() {
        let sys = p.system.as_deref().or(a.system.as_deref());
        let hist = p.history.as_deref();
        let row = || format!("pairs row {i}");
        let (pt, ct) = encode(&lm, sys, hist, &p.prompt, &p.chosen, p.ended(true).with_context(row)?).with_context(row)?;
        let rejected = if loss == dno_math::LossKind::Sft {
            None
        } else {
            Some(encode(&lm, sys, hist, &p.prompt, &p.rejected, p.ended(false).with_context(row)?).with_context(row)?.1)
        };
        examples.push(TrainExample {
            id: format!("{}|{}|{}", p.chosen_id, p.rejected_id, p.iteration),
            prompt_tokens: pt,
            chosen_tokens: ct,
            rejected_tokens: rejected,
            target: p.target,
            weight: p.weight,
            chosen_winrate: p.chosen_winrate,
            rejected_winrate: p.rejected_winrate,
        });
    }
    for (i, p) in prompts.iter().enumerate() {
        let reference = p.reference.as_deref().ok_or_else(|| anyhow!("prompts row {i} ('{}'): no `reference` to train on", p.prompt_id))?;
        // A reference answer is complete: it ends its turn.
        let (pt, ct) = encode(&lm, p.system.as_deref().or(a.system.as_deref()), p.history.as_deref(), &p.prompt, reference, true)
            .with_context(|| format!("prompts row {i} ('{}')", p.prompt_id))?;
        examples.push(TrainExample {
            id: p.prompt_id.clone(),
            prompt_tokens: pt,
            chosen_tokens: ct,
            rejected_tokens: None,
            target: 1.0,
            weight: 1.0,
            chosen_winrate: 1.0,
            rejected_winrate: 0.0,
        });
    }
    if examples.is_empty() {
        bail!("{}: no training examples", inputs.first().map(|p| p.display().to_string()).unwrap_or_default());
    }

    if a.dry_run {
        // Several devices: each holds a replica (weights, gradients, optimiser) and its share of
        // every micro-batch, so the estimate is one device's: one shard of batch / devices rows.
        let replicated = dno_train::parallel::ShardPlan::new(&device, &devices, None).replicated();
        let (shards, per_device_cfg) = if replicated {
            (1, dno_train::TrainConfig { batch_size: cfg.batch_size.div_ceil(devices.len()), ..cfg.clone() })
        } else {
            (a.shards.unwrap_or_else(|| if devices.len() > 1 { devices.len() } else { dno_model::device::data_parallel_shards(&device) }), cfg.clone())
        };
        let w = dno_train::memory::Workload { dtype, ..dno_train::memory::workload(&examples, &per_device_cfg, shards, a.gradient_checkpointing)? };
        let e = dno_train::memory::estimate(&lm.config, &cfg, &w);
        println!(
            "estimated peak memory{}, {dtype}, {} rows x {} tokens per micro-batch, {} shard(s), gradient checkpointing {}:",
            if replicated { format!(" per device (each of {})", devices.len()) } else { String::new() },
            w.rows,
            w.width,
            w.shards,
            if w.gradient_checkpointing { "on" } else { "off" }
        );
        print!("{}", dno_train::memory::render(&e));
        return Ok(());
    }
    let total = cfg.total_steps(examples.len()) as u64;
    let pb = super::progress(total, "training");
    let mut ticker = super::Ticker::new(30);
    let outcome = dno_train::train(lm, examples, &cfg, &a.out, &device, RunOptions { resume: true, model_fingerprint: Some(model_fp), stop: stop_flag(), devices: if devices.len() > 1 { devices } else { vec![] }, shards: a.shards, gradient_checkpointing: a.gradient_checkpointing }, |m| {
        pb.set_position(m.step as u64);
        let acc = m.reward_accuracy.map(|x| format!(" acc {x:.2}")).unwrap_or_default();
        pb.set_message(format!("loss {:.4}{acc} gnorm {:.2} lr {:.2e} {:.0} tok/s", m.loss, m.grad_norm, m.lr, m.tokens_per_s));
        if pb.is_hidden() && log::max_level() >= log::LevelFilter::Warn && ticker.due() {
            eprintln!("train: step {}/{total}: loss {:.4}{acc} {:.0} tok/s", m.step, m.loss, m.tokens_per_s);
        }
    })?;
    pb.finish_and_clear();

    let mut prov = Provenance::new("train", &a)?;
    prov.add_inputs(&inputs)?;
    prov.add_inputs(std::slice::from_ref(&a.model))?;
    write_metrics(&a.out.join("metrics.parquet"), &outcome.metrics, &prov)?;
    if outcome.interrupted {
        eprintln!("interrupted at step {}/{}; checkpoint saved, rerun the same command to continue", outcome.steps_done, outcome.total_steps);
        std::process::exit(130);
    }
    let last = outcome.metrics.last();
    dno_data::write_atomic(&a.out.join("provenance.json"), serde_json::to_string_pretty(&prov)?.as_bytes())?;
    eprintln!(
        "trained {} steps{} ({}) -> {} | final loss {:.4} | reference log-probs {}",
        outcome.steps_done,
        match outcome.resumed_from {
            Some(s) if s == outcome.total_steps => " (already complete: nothing to do)".to_string(),
            Some(s) => format!(" (resumed from the checkpoint at step {s})"),
            None => String::new(),
        },
        a.loss,
        outcome.model_dir.as_deref().unwrap_or(Path::new("?")).display(),
        last.map(|m| m.loss).unwrap_or(f64::NAN),
        if outcome.reference_cached { "from cache".to_string() } else { format!("computed in {:.1}s", outcome.reference_s) }
    );
    Ok(())
}

fn write_metrics(path: &Path, metrics: &[dno_train::StepMetrics], prov: &Provenance) -> Result<()> {
    let mut w = DatasetWriter::<MetricRow>::create(path, prov, true)?;
    w.write_all(metrics.iter().map(|m| MetricRow {
        step: m.step as i64,
        epoch: m.epoch,
        loss: m.loss,
        reward_accuracy: m.reward_accuracy,
        margin_mean: m.margin_mean,
        chosen_logratio: m.chosen_logratio,
        rejected_logratio: m.rejected_logratio,
        grad_norm: m.grad_norm,
        lr: m.lr,
        tokens: m.tokens as i64,
        tokens_per_s: m.tokens_per_s,
        elapsed_s: m.elapsed_s,
    }))?;
    w.finish()?;
    Ok(())
}
