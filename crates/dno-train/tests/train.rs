//! End-to-end training tests on a tiny random Llama (CPU, flex backend).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use burn::tensor::Device;
use common::*;
use dno_train::batch::{sequence_logps, to_host, PackedBatch};
use dno_train::{train, LossKind, LoraConfig, RunOptions, Schedule, StepMetrics, TrainConfig, TrainExample};

fn base_cfg(loss: LossKind) -> TrainConfig {
    TrainConfig {
        loss,
        eta: 0.5,
        ipo_tau: 0.1,
        lr: 1e-2,
        epochs: 1,
        batch_size: 4,
        grad_accum: 1,
        weight_decay: 0.0,
        warmup_ratio: 0.0,
        warmup_steps: 0,
        schedule: Schedule::Constant,
        max_grad_norm: 1.0,
        seed: 3,
        lora: None,
        checkpoint_every: 0,
        max_len: 32,
        init_adapter: None,
        group_by_length: false,
    }
}

/// Mean un-scaled margin (a − b) of `model` against the reference model over `examples`.
fn mean_margin(model: &dno_model::Llama, reference: &dno_model::Llama, examples: &[TrainExample], device: &Device) -> f64 {
    let mut seqs: Vec<(&[u32], &[u32])> = examples.iter().map(|e| (e.prompt_tokens.as_slice(), e.chosen_tokens.as_slice())).collect();
    for e in examples {
        seqs.push((e.prompt_tokens.as_slice(), e.rejected_tokens.as_deref().unwrap()));
    }
    let batch = PackedBatch::pack(&seqs, 64, 0).unwrap();
    let p = to_host(sequence_logps(model, &batch, device)).unwrap();
    let r = to_host(sequence_logps(reference, &batch, device)).unwrap();
    let n = examples.len();
    (0..n).map(|i| (p[i] - r[i]) - (p[n + i] - r[n + i])).sum::<f64>() / n as f64
}

fn run(
    model_seed: u64,
    examples: &[TrainExample],
    cfg: &TrainConfig,
    out: &std::path::Path,
    resume: bool,
    stop_after: Option<usize>,
) -> dno_train::TrainOutcome {
    let device = Device::flex();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let opts = RunOptions { resume, stop, ..Default::default() };
    train(tiny_model(model_seed, &device), examples.to_vec(), cfg, out, &device, opts, |m: &StepMetrics| {
        if Some(m.step) == stop_after {
            flag.store(true, Ordering::SeqCst);
        }
    })
    .unwrap()
}

/// Training raises the chosen-over-rejected margin, for dpo (Eq. 13) and dno (Eq. 8/11).
#[test]
fn training_raises_chosen_over_rejected_margin() {
    let device = Device::flex();
    let examples = pairs(8, 11);
    for kind in [LossKind::Dpo, LossKind::Dno] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TrainConfig { epochs: 6, ..base_cfg(kind) };
        let out = run(5, &examples, &cfg, dir.path(), false, None);
        assert!(!out.interrupted);
        assert_eq!(out.metrics.len(), 12);
        let first = &out.metrics[0];
        let last = out.metrics.last().unwrap();
        assert!(first.margin_mean.unwrap().abs() < 1e-3, "{kind}: step 1 is at the reference: {first:?}");
        assert!(last.loss < first.loss, "{kind}: loss {} -> {}", first.loss, last.loss);
        assert!(last.margin_mean.unwrap() > first.margin_mean.unwrap() + 0.1, "{kind}: {first:?} -> {last:?}");
        assert_eq!(last.reward_accuracy, Some(1.0), "{kind}: {last:?}");
        // The exported HF model reproduces the raised margin against the input model.
        let trained = dno_model::load_model(&dir.path().join("model"), &device).unwrap();
        let reference = tiny_model(5, &device);
        let margin = mean_margin(&trained.model, &reference.model, &examples, &device);
        assert!(margin > 0.5, "{kind}: exported model's mean margin {margin}");
    }
}

/// 4 steps straight == 2 steps, stop, resume 2 steps: same metrics and the same final logits.
#[test]
fn resume_reaches_the_same_weights_as_an_uninterrupted_run() {
    let device = Device::flex();
    let examples = pairs(8, 21);
    // batch 1 x accumulation 2 = 4 steps; warm-up + cosine and weight decay exercise the
    // schedule and both optimiser groups across the resume.
    let cfg = TrainConfig {
        batch_size: 1,
        grad_accum: 2,
        warmup_steps: 1,
        schedule: Schedule::Cosine,
        weight_decay: 0.01,
        ..base_cfg(LossKind::Dno)
    };
    let straight = tempfile::tempdir().unwrap();
    let a = run(7, &examples, &cfg, straight.path(), false, None);
    assert_eq!((a.steps_done, a.total_steps, a.interrupted), (4, 4, false));

    let split = tempfile::tempdir().unwrap();
    let b1 = run(7, &examples, &cfg, split.path(), false, Some(2));
    assert!(b1.interrupted);
    assert_eq!(b1.steps_done, 2);
    assert!(b1.model_dir.is_none() && !split.path().join("model").exists());
    assert!(split.path().join("checkpoint/state.json").is_file());
    let b2 = run(7, &examples, &cfg, split.path(), true, None);
    assert!(!b2.interrupted);
    assert!(b2.reference_cached, "resume must reuse the cached reference log-probs");
    assert_eq!(b2.steps_done, 4);
    assert_eq!(b2.metrics.len(), 4, "metrics include the resumed-from part");
    for (x, y) in a.metrics.iter().zip(&b2.metrics) {
        assert_eq!(x.step, y.step);
        assert!((x.loss - y.loss).abs() < 1e-6, "step {}: loss {} vs {}", x.step, x.loss, y.loss);
        assert!((x.grad_norm - y.grad_norm).abs() < 1e-5 * (1.0 + x.grad_norm), "step {}", x.step);
        assert_eq!(x.lr, y.lr);
    }
    let la = probe_logits(&dno_model::load_model(&straight.path().join("model"), &device).unwrap().model, &device);
    let lb = probe_logits(&dno_model::load_model(&split.path().join("model"), &device).unwrap().model, &device);
    let base = probe_logits(&tiny_model(7, &device).model, &device);
    assert!(max_abs_diff(&la, &base) > 1e-3, "training changed the model");
    let d = max_abs_diff(&la, &lb);
    assert!(d < 1e-5, "resumed run differs from the straight run by {d}");

    // Resuming with another config is refused with a clear message.
    let other = TrainConfig { lr: 2e-2, ..cfg.clone() };
    let opts = RunOptions { resume: true, ..Default::default() };
    let err = train(tiny_model(7, &device), examples.clone(), &other, split.path(), &device, opts, |_| {}).unwrap_err();
    assert!(err.to_string().contains("different training config"), "{err}");
}

/// The gradient of a step does not depend on how it is split into micro-batches.
#[test]
fn gradient_accumulation_matches_one_big_batch() {
    let examples = pairs(8, 5);
    let mut first_steps = Vec::new();
    for (batch_size, grad_accum) in [(4, 1), (2, 2), (1, 4)] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TrainConfig { batch_size, grad_accum, ..base_cfg(LossKind::Dpo) };
        let out = run(9, &examples, &cfg, dir.path(), false, None);
        assert_eq!(out.total_steps, 2);
        first_steps.push(out.metrics[0].clone());
    }
    for m in &first_steps[1..] {
        let r = &first_steps[0];
        assert!((m.loss - r.loss).abs() < 1e-5, "{} vs {}", m.loss, r.loss);
        assert!((m.grad_norm - r.grad_norm).abs() < 1e-4 * r.grad_norm, "{} vs {}", m.grad_norm, r.grad_norm);
        assert_eq!(m.tokens, r.tokens);
    }
}

/// A pair packed into one row (prompt ++ chosen ++ rejected, shared prompt) scores each response
/// exactly as its own row does, also with pairs of different lengths and padding in one batch.
#[test]
fn shared_prompt_rows_score_like_separate_rows() {
    let device = Device::flex();
    let model = tiny_model(5, &device).model;
    let mut examples = pairs(6, 11);
    examples[1].rejected_tokens.as_mut().unwrap().truncate(1);
    examples[2].prompt_tokens.truncate(1);
    examples[3].chosen_tokens.extend([3, 4, 5, 6, 7, 8, 9]);
    let packed: Vec<(&[u32], &[u32], Option<&[u32]>)> =
        examples.iter().map(|e| (e.prompt_tokens.as_slice(), e.chosen_tokens.as_slice(), e.rejected_tokens.as_deref())).collect();
    let mut separate: Vec<(&[u32], &[u32])> = examples.iter().map(|e| (e.prompt_tokens.as_slice(), e.chosen_tokens.as_slice())).collect();
    separate.extend(examples.iter().map(|e| (e.prompt_tokens.as_slice(), e.rejected_tokens.as_deref().unwrap())));
    let shared = PackedBatch::pack_pairs(&packed, 64, 0, usize::MAX).unwrap();
    assert!(shared.has_shared_prompts() && shared.rows == 6);
    let a = to_host(sequence_logps(&model, &shared, &device)).unwrap();
    let b = to_host(sequence_logps(&model, &PackedBatch::pack(&separate, 64, 0).unwrap(), &device)).unwrap();
    // share_limit 0 keeps every pair whose attention would grow as two rows.
    let split = PackedBatch::pack_pairs(&packed, 64, 0, 0).unwrap();
    assert!(split.rows > 6);
    let c = to_host(sequence_logps(&model, &split, &device)).unwrap();
    assert_eq!(a.len(), 12);
    for k in 0..12 {
        assert!((a[k] - b[k]).abs() < 1e-4, "sequence {k}: packed {} vs separate {}", a[k], b[k]);
        assert!((c[k] - b[k]).abs() < 1e-4, "sequence {k}: split {} vs separate {}", c[k], b[k]);
    }
    assert!(a.iter().all(|x| x.is_finite() && *x < 0.0));

    // Truncation keeping different prompt lengths: a shared row scores both responses after the
    // shorter prompt suffix, exactly like separate rows with that prompt.
    let e = &examples[3]; // prompt 2 tokens, chosen 4 + 7 tokens, rejected 3
    let max_len = 12; // chosen keeps 1 prompt token, rejected keeps both
    let (p, c, r) = (&e.prompt_tokens[..], &e.chosen_tokens[..], e.rejected_tokens.as_deref().unwrap());
    let row = PackedBatch::pack_pairs(&[(p, c, Some(r))], max_len, 0, usize::MAX).unwrap();
    assert_eq!(row.segments, vec![(1, 11, 3)]);
    let got = to_host(sequence_logps(&model, &row, &device)).unwrap();
    let suffix = &p[p.len() - 1..];
    let want = to_host(sequence_logps(&model, &PackedBatch::pack(&[(suffix, c), (suffix, r)], 64, 0).unwrap(), &device)).unwrap();
    for k in 0..2 {
        assert!((got[k] - want[k]).abs() < 1e-4, "truncated pair, sequence {k}: {} vs {}", got[k], want[k]);
    }
}

/// Data-parallel shards (one per core on the CPU) change only the summation order: the same
/// losses, gradient norms and updates as one shard, for every loss.
#[test]
fn data_parallel_shards_match_one_shard() {
    let examples = pairs(8, 5);
    let lora = LoraConfig { rank: 4, alpha: 8.0, targets: vec!["q_proj".into(), "down_proj".into()] };
    let configs = [
        base_cfg(LossKind::Dpo),
        base_cfg(LossKind::Dno),
        base_cfg(LossKind::Sft),
        TrainConfig { lora: Some(lora), ..base_cfg(LossKind::Dpo) },
    ];
    for cfg in configs {
        let loss = if cfg.lora.is_some() { "dpo+lora".to_string() } else { cfg.loss.to_string() };
        let mut runs = Vec::new();
        // 1, 2, 3 shards on the training device; then a device list (the multi-GPU path).
        for shards in [1, 2, 3, 0] {
            let dir = tempfile::tempdir().unwrap();
            let device = Device::flex();
            let opts = match shards {
                0 => RunOptions { devices: vec![Device::flex(), Device::flex()], ..Default::default() },
                n => RunOptions { shards: Some(n), ..Default::default() },
            };
            let out = train(tiny_model(9, &device), examples.clone(), &cfg, dir.path(), &device, opts, |_| {}).unwrap();
            assert_eq!(out.total_steps, 2);
            runs.push(out.metrics);
        }
        for (k, m) in runs.iter().enumerate().skip(1) {
            for (a, b) in m.iter().zip(&runs[0]) {
                assert!((a.loss - b.loss).abs() < 1e-5, "{loss} shards #{k} step {}: loss {} vs {}", a.step, a.loss, b.loss);
                assert!((a.grad_norm - b.grad_norm).abs() < 1e-4 * b.grad_norm, "{loss} shards #{k}: {} vs {}", a.grad_norm, b.grad_norm);
                assert_eq!((a.tokens, a.reward_accuracy), (b.tokens, b.reward_accuracy));
            }
        }
    }
}

/// LoRA: only adapters train; the merged export computes the same logits as base + adapters.
#[test]
fn lora_merged_and_unmerged_logits_agree() {
    let device = Device::flex();
    let examples = pairs(8, 31);
    let targets = vec!["q_proj".to_string(), "v_proj".to_string(), "down_proj".to_string()];
    let cfg = TrainConfig {
        lr: 5e-2,
        lora: Some(LoraConfig { rank: 4, alpha: 8.0, targets: targets.clone() }),
        ..base_cfg(LossKind::Dpo)
    };
    let dir = tempfile::tempdir().unwrap();
    let out = run(13, &examples, &cfg, dir.path(), false, None);
    assert_eq!(out.steps_done, 2);

    // Unmerged: a fresh base with the adapters the run wrote (a completed run keeps no
    // checkpoint tensors; its adapters are `adapter/`, in PEFT's format).
    let t: Vec<&str> = targets.iter().map(String::as_str).collect();
    let fresh = tiny_model(13, &device).model.attach_lora(4, 8.0, &t, &device).unwrap();
    let unmerged = dno_model::lora::peft::load_into(fresh, &dir.path().join("adapter")).unwrap();
    assert!(unmerged.has_lora());
    let l_unmerged = probe_logits(&unmerged, &device);
    let l_base = probe_logits(&tiny_model(13, &device).model, &device);
    assert!(max_abs_diff(&l_unmerged, &l_base) > 1e-4, "adapters were trained");
    // Base weights are frozen.
    let e0 = tiny_model(13, &device).model.embed_tokens.val().into_data().try_to_vec::<f32>().unwrap();
    let e1 = unmerged.embed_tokens.val().into_data().try_to_vec::<f32>().unwrap();
    assert_eq!(e0, e1, "LoRA training must not touch the base weights");

    let l_merged = probe_logits(&unmerged.clone().merge_lora(), &device);
    let d = max_abs_diff(&l_unmerged, &l_merged);
    assert!(d < 1e-5, "in-memory merge differs by {d}");
    let exported = dno_model::load_model(&dir.path().join("model"), &device).unwrap();
    assert!(!exported.model.has_lora());
    let d = max_abs_diff(&l_unmerged, &probe_logits(&exported.model, &device));
    assert!(d < 1e-4, "exported merged model differs by {d}");
}

/// sft trains on the chosen response only and needs no rejected responses or reference.
#[test]
fn sft_lowers_the_chosen_nll() {
    let examples: Vec<TrainExample> = pairs(8, 41).into_iter().map(|e| TrainExample { rejected_tokens: None, ..e }).collect();
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig { epochs: 4, ..base_cfg(LossKind::Sft) };
    let out = run(17, &examples, &cfg, dir.path(), false, None);
    let (first, last) = (&out.metrics[0], out.metrics.last().unwrap());
    assert!(first.margin_mean.is_none() && first.chosen_logratio.is_none());
    assert!(last.loss < 0.8 * first.loss, "sft loss {} -> {}", first.loss, last.loss);
    assert!(!dir.path().join(dno_train::reference::CACHE_FILE).exists());
}

#[test]
fn bad_examples_and_configs_are_clear_errors() {
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let go = |examples: Vec<TrainExample>, cfg: TrainConfig| {
        train(tiny_model(1, &device), examples, &cfg, dir.path(), &device, RunOptions::default(), |_| {})
            .unwrap_err()
            .to_string()
    };
    let mut ex = pairs(2, 1);
    ex[1].chosen_tokens.push(VOCAB as u32 + 5);
    assert!(go(ex, base_cfg(LossKind::Dpo)).contains("outside the model's vocabulary"));
    let mut ex = pairs(2, 1);
    ex[0].rejected_tokens = None;
    assert!(go(ex, base_cfg(LossKind::Dno)).contains("needs rejected_tokens"));
    let mut ex = pairs(2, 1);
    ex[1].id = ex[0].id.clone();
    assert!(go(ex, base_cfg(LossKind::Dpo)).contains("duplicate example id"));
    let mut ex = pairs(2, 1);
    ex[0].target = 1.5;
    assert!(go(ex, base_cfg(LossKind::Dno)).contains("target"));
    assert!(go(pairs(2, 1), TrainConfig { lr: -1.0, ..base_cfg(LossKind::Dpo) }).contains("lr"));
    assert!(go(vec![], base_cfg(LossKind::Dpo)).contains("no training examples"));
}

/// A stop raised before training (e.g. SIGINT during the reference pass) returns at once,
/// interrupted, without a reference cache, checkpoint or export.
#[test]
fn stop_during_reference_pass_returns_interrupted() {
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let opts = RunOptions { resume: false, stop: Arc::new(AtomicBool::new(true)), ..Default::default() };
    let out = train(tiny_model(2, &device), pairs(4, 2), &base_cfg(LossKind::Dpo), dir.path(), &device, opts, |_| {}).unwrap();
    assert!(out.interrupted);
    assert_eq!(out.steps_done, 0);
    assert!(out.metrics.is_empty() && out.model_dir.is_none());
    assert!(!dir.path().join(dno_train::reference::CACHE_FILE).exists());
    assert!(!dir.path().join("checkpoint").exists());
}

/// The model-file fingerprint (the reference cache key) changes with a file's header, a sampled
/// block, its size or its modification time, and with config.json; the same bytes and times
/// give the same fingerprint.
#[test]
fn model_files_fingerprint_follows_the_files() {
    use dno_train::reference::model_files_fingerprint;
    let d = tempfile::tempdir().unwrap();
    let st = d.path().join("model.safetensors");
    let cfg = d.path().join("config.json");
    let t0 = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    // Larger than the whole-file limit (16 MiB), so it is sampled.
    let mut bytes = vec![0u8; 17 << 20];
    bytes[..8].copy_from_slice(&100u64.to_le_bytes());
    let put = |bytes: &[u8], cfg_text: &str, mtime| {
        std::fs::write(&st, bytes).unwrap();
        std::fs::write(&cfg, cfg_text).unwrap();
        for f in [&st, &cfg] {
            std::fs::File::options().write(true).open(f).unwrap().set_modified(mtime).unwrap();
        }
        model_files_fingerprint(d.path()).unwrap()
    };
    let base = put(&bytes, "{}", t0);
    assert_eq!(base, put(&bytes, "{}", t0), "same bytes and times, same fingerprint");
    assert_eq!(base, model_files_fingerprint(d.path()).unwrap());
    let mut header = bytes.clone();
    header[50] = 1;
    assert_ne!(base, put(&header, "{}", t0), "header byte");
    let mut block = bytes.clone();
    block[(17 << 20) / 64 * 10 + 5] = 1;
    assert_ne!(base, put(&block, "{}", t0), "sampled block");
    assert_ne!(base, put(&bytes[..bytes.len() - 1], "{}", t0), "size");
    assert_ne!(base, put(&bytes, "{\"a\":1}", t0), "config.json");
    assert_ne!(base, put(&bytes, "{}", t0 + std::time::Duration::from_nanos(1)), "rewritten (mtime)");
    assert_eq!(base, put(&bytes, "{}", t0));
}
