//! `dno train`'s memory options through the CLI: `--gradient-checkpointing` gives the same
//! losses and gradient norms as a run without it.

mod common;
use common::*;

fn metrics(file: &std::path::Path) -> Vec<dno_data::MetricRow> {
    dno_data::read_validated::<dno_data::MetricRow>(&[file.to_path_buf()]).unwrap().1
}

#[test]
fn gradient_checkpointing_trains_the_same() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let s = |x: &str| p.join(x).to_str().unwrap().to_string();
    ok(&["demo", "init", "--out", &s("run"), "--iterations", "1", "--prompts-per-iteration", "4", "--sft-prompts", "16", "--eval-prompts", "4", "--hidden", "32"], p);
    let train = |out: &str, extra: &[&str]| {
        let mut args = vec!["train", "--loss", "sft", "--model", "run/model", "--prompts", "run/sft_prompts.parquet", "--out", out, "--lr", "3e-3", "--epochs", "2", "--batch-size", "4"];
        args.extend_from_slice(extra);
        ok(&args, p);
        metrics(&p.join(out).join("metrics.parquet"))
    };
    let plain = train("plain", &[]);
    let ckpt = train("ckpt", &["--gradient-checkpointing"]);
    assert_eq!(plain.len(), 8);
    assert_eq!(plain.len(), ckpt.len());
    for (a, b) in plain.iter().zip(&ckpt) {
        assert!((a.loss - b.loss).abs() <= 1e-5 * (1.0 + a.loss.abs()), "step {}: loss {} vs {}", a.step, a.loss, b.loss);
        assert!((a.grad_norm - b.grad_norm).abs() <= 1e-5 * (1.0 + a.grad_norm.abs()), "step {}: grad norm {} vs {}", a.step, a.grad_norm, b.grad_norm);
    }
    assert!(plain.first().unwrap().loss > plain.last().unwrap().loss, "training lowered the loss");
}
