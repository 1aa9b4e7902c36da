//! Memory options change nothing but memory: gradient checkpointing gives the same losses,
//! gradient norms and trained weights, for the preference losses and sft, full and LoRA.

mod common;

use burn::tensor::Device;
use common::*;
use dno_train::{train, LossKind, LoraConfig, RunOptions, Schedule, TrainConfig};

fn run(cfg: &TrainConfig, gradient_checkpointing: bool) -> (Vec<(f64, f64)>, Vec<f32>) {
    let device = Device::flex();
    let out = tempfile::tempdir().unwrap();
    let opts = RunOptions { gradient_checkpointing, shards: Some(2), ..Default::default() };
    let o = train(tiny_model(7, &device), pairs(12, 3), cfg, out.path(), &device, opts, |_| {}).unwrap();
    let trained = dno_model::load_model(&out.path().join("model"), &device).unwrap();
    (o.metrics.iter().map(|m| (m.loss, m.grad_norm)).collect(), probe_logits(&trained.model, &device))
}

#[test]
fn gradient_checkpointing_gives_the_same_run() {
    for (loss, lora) in [(LossKind::Dpo, false), (LossKind::Dno, false), (LossKind::Sft, false), (LossKind::Dpo, true)] {
        let cfg = TrainConfig {
            loss,
            eta: 0.5,
            lr: 1e-2,
            batch_size: 4,
            warmup_ratio: 0.0,
            schedule: Schedule::Constant,
            max_len: 32,
            lora: lora.then(|| LoraConfig { rank: 2, alpha: 4.0, targets: vec!["q_proj".into(), "v_proj".into()] }),
            ..TrainConfig::default()
        };
        let (plain, plain_logits) = run(&cfg, false);
        let (ckpt, ckpt_logits) = run(&cfg, true);
        assert_eq!(plain.len(), 3);
        for (step, (a, b)) in plain.iter().zip(&ckpt).enumerate() {
            assert!((a.0 - b.0).abs() <= 1e-5 * (1.0 + a.0.abs()), "{loss} lora={lora} step {step}: loss {} vs {}", a.0, b.0);
            assert!((a.1 - b.1).abs() <= 1e-5 * (1.0 + a.1.abs()), "{loss} lora={lora} step {step}: grad norm {} vs {}", a.1, b.1);
        }
        let moved = max_abs_diff(&plain_logits, &probe_logits(&tiny_model(7, &Device::flex()).model, &Device::flex()));
        assert!(moved > 1e-4, "{loss}: training changed the model");
        // Relative to the logits' scale: the recomputed forward and the per-layer backward sum in
        // another order, and after three lr-1e-2 AdamW steps that rounding reaches ~2e-6 of the
        // logits on some CPUs (1.3e-5 at |logit| 5.5 on an AVX2-only EPYC); a real difference
        // is orders of magnitude larger (training moved them by ~4).
        let diff = max_abs_diff(&plain_logits, &ckpt_logits);
        let scale = plain_logits.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(diff <= 1e-5 * (1.0 + scale), "{loss} lora={lora}: trained logits differ by {diff} (|logit| up to {scale})");
    }
}
