//! The device suite: the same `dno` commands on the device named by `DNO_TEST_DEVICE` (`wgpu` on
//! Mesa's software Vulkan driver in CI, `cuda` on a GPU machine) and on the CPU must agree:
//! sampled log-probs (the model's logits through the CLI), greedy text, temperature / top-p /
//! top-k / min-p samples (drawn on the device there), the losses of two DPO steps, and a LoRA step. Build with the device's feature (`--features wgpu` / `cuda`).
//! Without `DNO_TEST_DEVICE` every test prints SKIPPED and returns; `.ci/run` sets it.

mod common;

use common::{ok, s};
use dno_data::{read_validated, MetricRow, SampleRow};
use std::path::Path;

fn device() -> Option<String> {
    match std::env::var("DNO_TEST_DEVICE") {
        Ok(d) if !d.is_empty() => Some(d),
        _ => {
            eprintln!("SKIPPED: DNO_TEST_DEVICE is not set (e.g. DNO_TEST_DEVICE=wgpu with --features wgpu)");
            None
        }
    }
}

/// A tiny policy (the demo's) and its prompts, SFT-trained for a few steps on the CPU so the
/// device sees non-random weights.
fn setup(p: &Path) -> String {
    ok(&["demo", "init", "--out", s(&p.join("run")), "--iterations", "1", "--prompts-per-iteration", "8", "--sft-prompts", "16", "--eval-prompts", "4", "--hidden", "32"], p);
    ok(&["train", "--loss", "sft", "--model", s(&p.join("run/model")), "--prompts", s(&p.join("run/sft_prompts.parquet")), "--out", s(&p.join("sft")), "--lr", "3e-3", "--epochs", "1", "--batch-size", "8"], p);
    s(&p.join("sft/model")).to_string()
}

fn samples(p: &Path, model: &str, device: &str, out: &str, temperature: &str, k: &str) -> Vec<SampleRow> {
    samples_with(p, model, device, out, &["--temperature", temperature, "-k", k, "--top-p", "1.0"])
}

fn samples_with(p: &Path, model: &str, device: &str, out: &str, sampling: &[&str]) -> Vec<SampleRow> {
    let out = p.join(out);
    let prompts = p.join("run/prompts-iter-1.parquet");
    let mut args = vec!["sample", "--model", model, "--prompts", s(&prompts), "--out", s(&out), "--max-new-tokens", "6", "--seed", "5", "--device", device, "--policy", "pi"];
    args.extend_from_slice(sampling);
    ok(&args, p);
    let (_, mut rows) = read_validated::<SampleRow>(&[out]).unwrap();
    rows.sort_by(|a, b| a.sample_id.cmp(&b.sample_id));
    rows
}

#[test]
fn greedy_text_and_logprobs_match_the_cpu() {
    let Some(dev) = device() else { return };
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let model = setup(p);
    let cpu = samples(p, &model, "cpu", "cpu.parquet", "0", "1");
    let gpu = samples(p, &model, &dev, "dev.parquet", "0", "1");
    assert_eq!(cpu.len(), gpu.len());
    for (a, b) in cpu.iter().zip(&gpu) {
        assert_eq!(a.response, b.response, "greedy text differs on {dev} for {}", a.prompt_id);
        let (la, lb) = (a.logprob.unwrap(), b.logprob.unwrap());
        assert!((la - lb).abs() < 1e-3 * (1.0 + la.abs()), "log-prob {la} on cpu vs {lb} on {dev} ({})", a.prompt_id);
    }
}

/// Temperature sampling draws on the device there (`dno_model::generate::sample_on_device`) and
/// on the host on the CPU, from the same per-sample uniforms: the samples must be the same.
#[test]
fn sampled_tokens_match_the_cpu() {
    let Some(dev) = device() else { return };
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let model = setup(p);
    let cases: [&[&str]; 3] = [
        &["--temperature", "1.0", "-k", "4", "--top-p", "1.0"],
        &["--temperature", "0.7", "-k", "4", "--top-p", "0.95"],
        &["--temperature", "0.9", "-k", "4", "--top-p", "0.9", "--top-k", "5", "--min-p", "0.05"],
    ];
    for (i, case) in cases.iter().enumerate() {
        let cpu = samples_with(p, &model, "cpu", &format!("cpu-{i}.parquet"), case);
        let gpu = samples_with(p, &model, &dev, &format!("dev-{i}.parquet"), case);
        assert_eq!(cpu.len(), gpu.len());
        let same = cpu.iter().zip(&gpu).filter(|(a, b)| a.response == b.response).count();
        assert_eq!(same, cpu.len(), "{case:?}: {same} of {} samples equal on {dev}", cpu.len());
    }
}

/// Eight preference pairs "a+b=" (addends from `addends(i)`), the true sum chosen over the sum off
/// by `off`, imported from a TRL-style JSONL file; returns the pairs file.
fn sum_pairs(p: &Path, addends: impl Fn(i64) -> (i64, i64), off: i64) -> std::path::PathBuf {
    let jsonl: String = (0..8)
        .map(|i| {
            let (a, b) = addends(i);
            format!("{{\"prompt\": \"{a}+{b}=\", \"chosen\": \"{}\", \"rejected\": \"{}\"}}\n", a + b, a + b + off)
        })
        .collect();
    std::fs::write(p.join("prefs.jsonl"), jsonl).unwrap();
    ok(&["pairs", "import", s(&p.join("prefs.jsonl")), "--out", s(&p.join("pairs.parquet"))], p);
    p.join("pairs.parquet")
}

fn metrics(dir: &Path) -> Vec<MetricRow> {
    read_validated::<MetricRow>(&[dir.join("metrics.parquet")]).unwrap().1
}

#[test]
fn two_dpo_steps_and_a_lora_step_match_the_cpu() {
    let Some(dev) = device() else { return };
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let model = setup(p);
    // The same preference pairs for both devices (an imported TRL-style file: the task's true
    // sums chosen over carry-dropping ones).
    let pairs = sum_pairs(p, |i| (17 + 3 * i, 35 + 2 * i), -10);
    for (name, extra) in [("full", vec![]), ("lora", vec!["--lora-rank", "4"])] {
        let mut runs = Vec::new();
        for device in ["cpu", dev.as_str()] {
            let out = p.join(format!("train-{name}-{}", device.replace(':', "_")));
            let mut args = vec!["train", "--model", &model, "--pairs", s(&pairs), "--out", s(&out), "--loss", "dpo", "--lr", "1e-3", "--batch-size", "2", "--device", device, "--shards", "1"];
            args.extend(extra.iter().copied());
            ok(&args, p);
            runs.push(metrics(&out));
        }
        let (cpu, gpu) = (&runs[0], &runs[1]);
        assert!(cpu.len() >= 2, "{name}: need two steps, got {}", cpu.len());
        for (a, b) in cpu.iter().zip(gpu).take(if name == "lora" { 1 } else { 2 }) {
            assert!((a.loss - b.loss).abs() < 1e-4, "{name} step {}: loss {} on cpu vs {} on {dev}", a.step, a.loss, b.loss);
            assert!((a.grad_norm - b.grad_norm).abs() < 1e-3 * (1.0 + a.grad_norm), "{name} step {}: grad norm {} vs {}", a.step, a.grad_norm, b.grad_norm);
        }
    }
}

/// Replicated data parallelism (`--devices`): each device keeps its own copy of the policy and
/// optimiser and the gradients are summed across them every step. On wgpu the two devices are
/// `wgpu` and `wgpu:cpu`, two burn devices on the same software adapter in CI
/// (`DNO_TEST_DEVICES` names others, e.g. `cuda:0,cuda:1`). Uneven shares (3 pairs over 2
/// devices) and two micro-batches per step; losses, gradient norms and the trained weights (read
/// through greedy log-probs on the CPU) must match one CPU device's run.
#[test]
fn replicated_training_on_two_devices_matches_one() {
    let Some(dev) = device() else { return };
    let devices = match std::env::var("DNO_TEST_DEVICES") {
        Ok(d) if !d.is_empty() => d,
        _ if dev == "wgpu" => "wgpu,wgpu:cpu".to_string(),
        _ => {
            eprintln!("SKIPPED: set DNO_TEST_DEVICES (e.g. cuda:0,cuda:1) for multi-device training on {dev}");
            return;
        }
    };
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let model = setup(p);
    let pairs = sum_pairs(p, |i| (21 + 2 * i, 38 + 3 * i), 10);
    let run = |name: &str, placement: &[&str]| {
        let out = p.join(name);
        let mut args = vec!["train", "--model", &model, "--pairs", s(&pairs), "--out", s(&out), "--loss", "dpo", "--lr", "1e-3", "--batch-size", "3", "--grad-accum", "2"];
        args.extend_from_slice(placement);
        ok(&args, p);
        out
    };
    let one = run("one", &["--device", "cpu", "--shards", "1"]);
    let many = run("many", &["--devices", &devices]);
    let (a, b) = (metrics(&one), metrics(&many));
    assert_eq!(a.len(), 2, "8 pairs at 6 per step: two steps");
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert!((x.loss - y.loss).abs() < 1e-4, "step {}: loss {} on one device vs {} on {devices}", x.step, x.loss, y.loss);
        assert!((x.grad_norm - y.grad_norm).abs() < 1e-3 * (1.0 + x.grad_norm), "step {}: grad norm {} vs {}", x.step, x.grad_norm, y.grad_norm);
    }
    let (ta, tb) = (samples(p, s(&one.join("model")), "cpu", "one.parquet", "0", "1"), samples(p, s(&many.join("model")), "cpu", "many.parquet", "0", "1"));
    for (x, y) in ta.iter().zip(&tb) {
        let (la, lb) = (x.logprob.unwrap(), y.logprob.unwrap());
        assert!((la - lb).abs() < 1e-3 * (1.0 + la.abs()), "trained weights differ: log-prob {la} vs {lb} ({})", x.prompt_id);
    }
}
