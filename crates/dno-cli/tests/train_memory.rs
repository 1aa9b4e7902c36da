//! `dno train`'s memory options through the CLI: `--gradient-checkpointing` gives the same
//! losses and gradient norms as a run without it; `--group-by-length` orders steps by length.

mod common;
use common::*;

/// (step, loss, grad_norm) per optimiser step, from the run's `metrics.jsonl`.
fn metrics(file: &std::path::Path) -> Vec<(u64, f64, f64)> {
    let text = std::fs::read_to_string(file).unwrap();
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap(), v["grad_norm"].as_f64().unwrap())
        })
        .collect()
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
        metrics(&p.join(out).join("metrics.jsonl"))
    };
    let plain = train("plain", &[]);
    let ckpt = train("ckpt", &["--gradient-checkpointing"]);
    assert_eq!(plain.len(), 8);
    assert_eq!(plain.len(), ckpt.len());
    for (a, b) in plain.iter().zip(&ckpt) {
        assert_eq!(a.0, b.0);
        assert!((a.1 - b.1).abs() <= 1e-5 * (1.0 + a.1.abs()), "step {}: loss {} vs {}", a.0, a.1, b.1);
        assert!((a.2 - b.2).abs() <= 1e-5 * (1.0 + a.2.abs()), "step {}: grad norm {} vs {}", a.0, a.2, b.2);
    }
    assert!(plain.first().unwrap().1 > plain.last().unwrap().1, "training lowered the loss");
}

/// MiB of `name` in `dno train --dry-run`'s table.
fn mib(table: &str, name: &str) -> f64 {
    let line = table.lines().find(|l| l.trim_start().starts_with(name)).unwrap_or_else(|| panic!("no {name} line in {table}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn dry_run_prints_the_memory_estimate_and_trains_nothing() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let s = |x: &str| p.join(x).to_str().unwrap().to_string();
    ok(&["demo", "init", "--out", &s("run"), "--iterations", "1", "--prompts-per-iteration", "4", "--sft-prompts", "16", "--eval-prompts", "4", "--hidden", "32"], p);
    let dry = |extra: &[&str]| {
        let mut args = vec!["train", "--loss", "sft", "--model", "run/model", "--prompts", "run/sft_prompts.parquet", "--out", "dry", "--batch-size", "4", "--dry-run"];
        args.extend_from_slice(extra);
        ok(&args, p)
    };
    let plain = dry(&[]);
    assert!(plain.contains("4 rows x") && plain.contains("gradient checkpointing off"), "{plain}");
    let parts: f64 = ["weights", "gradients", "optimizer", "activations"].iter().map(|n| mib(&plain, n)).sum();
    assert!((parts - mib(&plain, "total")).abs() < 0.5, "{plain}");
    assert!(mib(&plain, "weights") > 0.0 && mib(&plain, "activations") > 0.0, "{plain}");
    let ckpt = dry(&["--gradient-checkpointing"]);
    assert!(mib(&ckpt, "activations") < mib(&plain, "activations"), "{plain}\n{ckpt}");
    assert_eq!(mib(&ckpt, "weights"), mib(&plain, "weights"));
    assert!(!p.join("dry/model").exists() && !p.join("dry/checkpoint").exists(), "a dry run trains nothing");
}

/// `--group-by-length` puts examples of similar length into the same step: over one epoch the
/// steps' real token counts fall (longest first) where the plain shuffled order's do not, and
/// the epoch still visits every example once (same total tokens).
#[test]
fn group_by_length_orders_steps_by_length() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let s = |x: &str| p.join(x).to_str().unwrap().to_string();
    ok(&["demo", "init", "--out", &s("run"), "--iterations", "1", "--prompts-per-iteration", "4", "--sft-prompts", "32", "--eval-prompts", "4", "--hidden", "32"], p);
    let tokens = |out: &str, extra: &[&str]| -> Vec<u64> {
        let mut args = vec!["train", "--loss", "sft", "--model", "run/model", "--prompts", "run/sft_prompts.parquet", "--out", out, "--lr", "1e-3", "--epochs", "1", "--batch-size", "4"];
        args.extend_from_slice(extra);
        ok(&args, p);
        let text = std::fs::read_to_string(p.join(out).join("metrics.jsonl")).unwrap();
        text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["tokens"].as_u64().unwrap()).collect()
    };
    let plain = tokens("plain", &[]);
    let grouped = tokens("grouped", &["--group-by-length"]);
    assert_eq!(plain.len(), 8);
    assert_eq!(plain.iter().sum::<u64>(), grouped.iter().sum::<u64>(), "{plain:?} vs {grouped:?}");
    assert!(grouped.windows(2).all(|w| w[0] >= w[1]), "grouped steps longest first: {grouped:?}");
    assert!(plain.windows(2).any(|w| w[0] < w[1]), "the plain order is not already sorted: {plain:?}");
    assert_ne!(plain, grouped);
}
