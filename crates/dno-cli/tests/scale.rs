//! Scale-out through the CLI: one iteration of the tiny-model loop run by `pipelines/slurm` as job
//! arrays of 3 shards per stage (`--shard I/N` on sample, annotate and eval; pair, train and
//! merge reading the shard directories) equals the unsharded run row for row, under real Slurm
//! when it runs on this machine (`.ci/run` starts it with scripts/start_slurm.sh) and always under
//! `pipelines/slurm/sbatch-shim`. Resubmission skips finished shards; a shard run twice, a
//! missing shard and a foreign file in a shard directory are one-line errors naming the files.
//! Also `make -j` with `SHARDS=3` on pipelines/Makefile.

mod common;
use common::*;
use dno_data::{EvalRow, MetricRow, PairRow, PreferenceRow, Row, SampleRow};
use std::path::{Path, PathBuf};
use std::process::Command;

const K: &str = "4";
const SAMPLE: &str = "--temperature 1.0 --top-p 1.0 --max-new-tokens 4 --seed 3 --batch-prompts 4";
const TRAIN: &str = "--loss dpo --lr 1e-3 --batch-size 8 --shards 2 --seed 0";
const PAIR: &str = "--strategy max-min";

fn rows<T: Row>(p: &Path) -> Vec<T> {
    dno_data::read_validated::<T>(&[p.to_path_buf()]).unwrap_or_else(|e| panic!("{}: {e:#}", p.display())).1
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// The annotate oracle: the command oracle (so each shard keeps its own judgment cache).
fn oracle() -> String {
    format!("--oracle command --command 'python3 {}'", repo().join("crates/dno-cli/tests/data/prefer_shorter.py").display())
}
const EVAL_ORACLE: &str = "--oracle verifier --verify exact";

/// The tiny task and its SFT policy.
fn setup(p: &Path) -> String {
    let s = |x: &str| p.join(x).to_str().unwrap().to_string();
    ok(&["demo", "init", "--out", &s("run"), "--iterations", "1", "--prompts-per-iteration", "12", "--sft-prompts", "32", "--eval-prompts", "12", "--hidden", "32"], p);
    ok(&["train", "--loss", "sft", "--model", &s("run/model"), "--prompts", &s("run/sft_prompts.parquet"), "--out", &s("run/sft"), "--lr", "3e-3", "--epochs", "2", "--batch-size", "8"], p);
    s("run/sft/model")
}

fn run(p: &Path, args: Vec<String>) {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&refs, p);
}

/// The same iteration as pipelines/slurm/iteration.sh, unsharded, into `u/`.
fn unsharded(p: &Path, sft: &str) {
    let s = |x: &str| p.join(x).to_str().unwrap().to_string();
    std::fs::create_dir_all(p.join("u")).unwrap();
    let cmd = |v: &[&str], extra: &str| -> Vec<String> {
        let mut a: Vec<String> = v.iter().map(|x| x.to_string()).collect();
        a.extend(words(extra));
        a
    };
    run(p, cmd(&["sample", "--model", sft, "--prompts", &s("run/prompts-iter-1.parquet"), "--out", &s("u/samples.parquet"), "-k", K, "--policy", "iter-1", "--include-reference"], SAMPLE));
    let mut a = cmd(&["annotate", "--samples", &s("u/samples.parquet"), "--out", &s("u/preferences.parquet"), "--oracle", "command", "--command"], "");
    a.push(format!("python3 {}", repo().join("crates/dno-cli/tests/data/prefer_shorter.py").display()));
    run(p, a);
    run(p, cmd(&["pair", "--samples", &s("u/samples.parquet"), "--preferences", &s("u/preferences.parquet"), "--out", &s("u/pairs.parquet"), "--iteration", "iter-1"], PAIR));
    run(p, cmd(&["train", "--model", sft, "--pairs", &s("u/pairs.parquet"), "--out", &s("u/train")], TRAIN));
    run(p, cmd(&["sample", "--model", &s("u/train/model"), "--prompts", &s("run/eval_prompts.parquet"), "--out", &s("u/eval_samples.parquet"), "-k", "1", "--policy", "iter-1"], SAMPLE));
    run(p, cmd(&["sample", "--model", sft, "--prompts", &s("run/eval_prompts.parquet"), "--out", &s("u/baseline.parquet"), "-k", "1", "--policy", "baseline"], SAMPLE));
    run(p, cmd(&["eval", "--candidate", &s("u/eval_samples.parquet"), "--baseline", &s("u/baseline.parquet"), "--out", &s("u/eval.parquet")], EVAL_ORACLE));
}

/// pipelines/slurm/iteration.sh with SHARDS=3 into `run_dir`, submitted with `sbatch`; blocks
/// until the last job ends. Returns the combined output.
fn submit(p: &Path, run_dir: &Path, sft: &str, sbatch: &str) -> String {
    let s = |x: &str| p.join(x).to_str().unwrap().to_string();
    let o = Command::new("bash")
        .arg(repo().join("pipelines/slurm/iteration.sh"))
        .current_dir(p)
        .env("RUN", run_dir)
        .env("ITER", "1")
        .env("MODEL", sft)
        .env("PROMPTS", s("run/prompts-iter-1.parquet"))
        .env("EVAL_PROMPTS", s("run/eval_prompts.parquet"))
        .env("SHARDS", "3")
        .env("K", K)
        .env("SAMPLE_FLAGS", format!("--include-reference {SAMPLE}"))
        .env("EVAL_SAMPLE_FLAGS", SAMPLE)
        .env("ORACLE", oracle())
        .env("EVAL_ORACLE", EVAL_ORACLE)
        .env("PAIR_FLAGS", PAIR)
        .env("TRAIN_FLAGS", TRAIN)
        .env("DNO", env!("CARGO_BIN_EXE_dno"))
        .env("SBATCH", sbatch)
        .env("SBATCH_SHIM_DIR", p.join("shim-state"))
        .env("WAIT", "1")
        .output()
        .expect("bash");
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    if !o.status.success() {
        let logs: String = std::fs::read_dir(run_dir.join("iter-1"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("slurm-"))
                    .map(|e| format!("--- {}\n{}", e.path().display(), std::fs::read_to_string(e.path()).unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        panic!("iteration.sh with {sbatch} failed:\n{text}\n{logs}");
    }
    text
}

/// Training metrics without their timings (`metrics` is read without `validate`, whose key check
/// handles string keys only).
fn no_timing(file: &Path) -> Vec<(i64, u64, u64, u64)> {
    let m: Vec<MetricRow> = dno_data::DatasetReader::open(dno_data::Dataset::Metrics, &[file.to_path_buf()]).unwrap().read_all().unwrap();
    assert!(!m.is_empty(), "{}: no steps", file.display());
    m.iter().map(|r| (r.step, r.loss.to_bits(), r.grad_norm.to_bits(), r.lr.to_bits())).collect()
}

fn meta(file: &Path, key: &str) -> serde_json::Value {
    serde_json::from_str(dno_data::read_metadata(file).unwrap().get(key).unwrap_or_else(|| panic!("{}: no {key}", file.display()))).unwrap()
}

/// Every output of the sharded iteration in `d` equals the unsharded one in `u`.
fn assert_equal_to_unsharded(p: &Path, d: &Path) {
    let u = p.join("u");
    for (dir, n) in [("samples", 3), ("preferences", 3), ("eval_samples", 3), ("eval", 3)] {
        let files: Vec<String> = std::fs::read_dir(d.join(dir)).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|f| f.ends_with(".parquet")).collect();
        assert_eq!(files.len(), n, "{dir}: {files:?}");
        for f in &files {
            let m = meta(&d.join(dir).join(f), "dno.shard");
            assert_eq!(m["count"], 3, "{dir}/{f}");
        }
    }
    // Read back as directories: row for row and in the same order as the unsharded outputs.
    assert_eq!(rows::<SampleRow>(&d.join("samples")), rows::<SampleRow>(&u.join("samples.parquet")));
    assert_eq!(rows::<PreferenceRow>(&d.join("preferences")), rows::<PreferenceRow>(&u.join("preferences.parquet")));
    assert_eq!(rows::<PairRow>(&d.join("pairs.parquet")), rows::<PairRow>(&u.join("pairs.parquet")));
    assert_eq!(no_timing(&d.join("train/metrics.parquet")), no_timing(&u.join("train/metrics.parquet")));
    assert_eq!(rows::<SampleRow>(&d.join("eval_samples")), rows::<SampleRow>(&u.join("eval_samples.parquet")));
    assert_eq!(rows::<EvalRow>(&d.join("eval.parquet")), rows::<EvalRow>(&u.join("eval.parquet")));
    assert_eq!(meta(&d.join("eval.parquet"), "dno.eval_summary"), meta(&u.join("eval.parquet"), "dno.eval_summary"));
    // Each annotate shard kept its own judgment cache, and together they hold every judgment once.
    let mut cached = 0;
    for i in 0..3 {
        let c = d.join(format!("preferences/part-{i:05}.parquet.cache.jsonl"));
        cached += std::fs::read_to_string(&c).unwrap_or_else(|_| panic!("{} missing", c.display())).lines().count();
    }
    assert_eq!(cached, rows::<PreferenceRow>(&u.join("preferences.parquet")).len());
}

/// Whether a Slurm controller answers here.
fn slurm_running() -> bool {
    Command::new("sinfo").arg("-h").output().map(|o| o.status.success() && !o.stdout.is_empty()).unwrap_or(false)
}

#[test]
fn sharded_iteration_under_slurm_equals_the_unsharded_run() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let sft = setup(p);
    unsharded(p, &sft);

    // Under the sbatch shim (always), then under real Slurm.
    let shim = repo().join("pipelines/slurm/sbatch-shim");
    let shim_run = p.join("shim");
    submit(p, &shim_run, &sft, shim.to_str().unwrap());
    assert_equal_to_unsharded(p, &shim_run.join("iter-1"));

    if slurm_running() {
        let slurm_run = p.join("slurm");
        submit(p, &slurm_run, &sft, "sbatch");
        assert_equal_to_unsharded(p, &slurm_run.join("iter-1"));
        println!("scale: ran the sharded iteration under real Slurm (sbatch) and the shim");
    } else if std::env::var("DNO_SLURM").as_deref() == Ok("required") {
        panic!("DNO_SLURM=required, but no Slurm controller answers (sinfo); run scripts/start_slurm.sh");
    } else {
        println!("scale: SKIPPED the real-Slurm run (no controller answers `sinfo`; scripts/start_slurm.sh starts one); ran under the sbatch shim only");
    }

    // Resubmission: every finished shard and step is skipped; a deleted shard is redone alone.
    let it = shim_run.join("iter-1");
    let part = it.join("samples/part-00001.parquet");
    let stamp = |f: &Path| std::fs::metadata(f).unwrap().modified().unwrap();
    let before = (stamp(&part), stamp(&it.join("pairs.parquet")), stamp(&it.join("eval.parquet")));
    let redo = it.join("preferences/part-00002.parquet");
    let redo_rows = rows::<PreferenceRow>(&redo);
    std::fs::remove_file(&redo).unwrap();
    submit(p, &shim_run, &sft, shim.to_str().unwrap());
    assert_eq!(before, (stamp(&part), stamp(&it.join("pairs.parquet")), stamp(&it.join("eval.parquet"))), "finished work was redone");
    assert_eq!(rows::<PreferenceRow>(&redo), redo_rows);
    let logs: String = std::fs::read_dir(&it).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with("slurm-")).map(|e| std::fs::read_to_string(e.path()).unwrap()).collect();
    assert!(logs.contains("shard 1/3: ") && logs.contains("validates; skipped"), "{logs}");

    // A shard run twice (e.g. on two machines), a missing shard, a foreign file: one error line each.
    let samples = it.join("samples");
    let pair = |p_: &Path| fails(&["pair", "--samples", s(&samples), "--preferences", s(&it.join("preferences")), "--out", s(&p_.join("x.parquet"))], p_);
    let twice = samples.join("part-00000-again.parquet");
    std::fs::copy(samples.join("part-00000.parquet"), &twice).unwrap();
    let e = pair(p);
    assert!(e.contains("part-00000.parquet") && e.contains("part-00000-again.parquet") && e.contains("run twice"), "{e}");
    std::fs::remove_file(&twice).unwrap();
    let foreign = samples.join("part-x.parquet");
    std::fs::copy(p.join("u/samples.parquet"), &foreign).unwrap();
    let e = pair(p);
    assert!(e.contains("part-x.parquet") && e.contains("not a shard output"), "{e}");
    std::fs::remove_file(&foreign).unwrap();
    let aside = p.join("part-00002.parquet");
    std::fs::rename(samples.join("part-00002.parquet"), &aside).unwrap();
    let e = pair(p);
    assert!(e.contains("shard 2/3 missing"), "{e}");
    // One shard file on its own is fine (a stage run as shard 2 of 3 reads just that).
    ok(&["validate", "--shard", "2/3", s(&aside)], p);
    let e = fails(&["validate", "--shard", "1/3", s(&aside)], p);
    assert!(e.contains("expected shard 1/3"), "{e}");
}

#[test]
fn merge_and_shard_edge_cases() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let sft = setup(p);
    let s_ = |x: &str| p.join(x).to_str().unwrap().to_string();
    let prompts = s_("run/prompts-iter-1.parquet");
    let base = |out: &str| -> Vec<String> {
        let mut a = words("sample -k 2 --max-new-tokens 3 --batch-prompts 3");
        a.extend(["--model".into(), sft.clone(), "--prompts".into(), prompts.clone(), "--out".into(), s_(out)]);
        a
    };
    run(p, base("full.parquet"));
    // 5 shards of 12 prompts, each annotated as its own shard; merge gives the unsharded file.
    for i in 0..5 {
        let mut a = base(&format!("sh/part-{i}.parquet"));
        a.extend(["--shard".into(), format!("{i}/5")]);
        run(p, a);
        ok(&["annotate", "--samples", &s_("sh"), "--shard", &format!("{i}/5"), "--out", &s_(&format!("pref/part-{i}.parquet")), "--oracle", "verifier", "--verify", "exact"], p);
    }
    ok(&["merge", &s_("sh"), "--out", &s_("merged.parquet")], p);
    assert_eq!(rows::<SampleRow>(&p.join("merged.parquet")), rows::<SampleRow>(&p.join("full.parquet")));
    ok(&["annotate", "--samples", &s_("full.parquet"), "--out", &s_("prefs.parquet"), "--oracle", "verifier", "--verify", "exact"], p);
    ok(&["merge", &s_("pref"), "--out", &s_("prefs-merged.parquet")], p);
    assert_eq!(rows::<PreferenceRow>(&p.join("prefs-merged.parquet")), rows::<PreferenceRow>(&p.join("prefs.parquet")));
    // Unsharded annotate over the shard directory: the unsharded order too.
    ok(&["annotate", "--samples", &s_("sh"), "--out", &s_("prefs-from-dir.parquet"), "--oracle", "verifier", "--verify", "exact"], p);
    assert_eq!(rows::<PreferenceRow>(&p.join("prefs-from-dir.parquet")), rows::<PreferenceRow>(&p.join("prefs.parquet")));
    // Annotate shards of another N than the samples' read the whole directory and filter.
    for i in 0..2 {
        ok(&["annotate", "--samples", &s_("sh"), "--shard", &format!("{i}/2"), "--out", &s_(&format!("pref2/part-{i}.parquet")), "--oracle", "verifier", "--verify", "exact"], p);
    }
    assert_eq!(rows::<PreferenceRow>(&p.join("pref2")), rows::<PreferenceRow>(&p.join("prefs.parquet")));
    // A shard with no prompts writes an empty output (so a job array never fails on it).
    let mut a = base("empty.parquet");
    a.extend(["--shard".into(), "999/1000".into()]);
    run(p, a);
    let e = fails(&["merge", &s_("full.parquet"), "--out", &s_("m2.parquet")], p);
    assert!(e.contains("not a shard output"), "{e}");
    let e = fails(&["annotate", "--samples", &s_("sh"), "--shard", "5/5", "--out", &s_("bad.parquet"), "--oracle", "verifier"], p);
    assert!(e.contains("0 <= I < N"), "{e}");
}

/// `make -j 3 SHARDS=3` on pipelines/Makefile: shards of each stage run in parallel and merge into
/// the files the next stage reads; the result equals `SHARDS=1`.
#[test]
fn makefile_shards_equal_the_unsharded_pipeline() {
    if Command::new("make").arg("--version").output().is_err() {
        assert!(std::env::var("CI").is_err(), "make is not installed");
        println!("SKIPPED: make is not installed");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let sft = setup(p);
    let make = |run: &str, shards: &str| {
        let o = Command::new("make")
            .args(["-j", "3", "-f"])
            .arg(repo().join("pipelines/Makefile"))
            .arg(format!("RUN={}", p.join(run).display()))
            .arg(format!("MODEL={sft}"))
            .arg(format!("PROMPTS={}", p.join("run/prompts-iter-1.parquet").display()))
            .arg(format!("EVAL_PROMPTS={}", p.join("run/eval_prompts.parquet").display()))
            .arg(format!("DNO={}", env!("CARGO_BIN_EXE_dno")))
            .args(["T=1", "K=3", "MAX_NEW=4", "TEMPERATURE=1.0", "TOP_P=1.0", "ORACLE=--oracle verifier --verify exact", "STRATEGY=max-min"])
            .args(["LR=1e-3", "TRAIN_FLAGS=--shards 2", "SAMPLE_FLAGS=--batch-prompts 4"])
            .arg(format!("SHARDS={shards}"))
            .current_dir(p)
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success(), "make SHARDS={shards} failed:\n{text}");
        assert!(!text.contains("overriding recipe"), "{text}");
        text
    };
    make("one", "1");
    let log = make("three", "3");
    assert!(log.contains("--shard 2/3"), "{log}");
    let (a, b) = (p.join("one/iter-1"), p.join("three/iter-1"));
    assert!(b.join("samples.parquet.shards/part-00002.parquet").exists());
    assert_eq!(rows::<SampleRow>(&a.join("samples.parquet")), rows::<SampleRow>(&b.join("samples.parquet")));
    assert_eq!(rows::<PreferenceRow>(&a.join("preferences.parquet")), rows::<PreferenceRow>(&b.join("preferences.parquet")));
    assert_eq!(rows::<PairRow>(&a.join("pairs.parquet")), rows::<PairRow>(&b.join("pairs.parquet")));
    assert_eq!(rows::<EvalRow>(&a.join("eval.parquet")), rows::<EvalRow>(&b.join("eval.parquet")));
    assert_eq!(meta(&a.join("eval.parquet"), "dno.eval_summary"), meta(&b.join("eval.parquet"), "dno.eval_summary"));
}

/// The Kubernetes Indexed Job manifests: valid Jobs whose scripts pass `--shard
/// $JOB_COMPLETION_INDEX/$N` and only flags dno has (scripts/check_k8s.py; kubectl's client
/// dry-run needs an API server, which CI lacks).
#[test]
fn k8s_manifests_are_indexed_jobs_with_real_flags() {
    let dir = repo().join("pipelines/k8s");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "yaml")).collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    let py = python();
    let has_yaml = Command::new(&py).args(["-c", "import yaml"]).output().map(|o| o.status.success()).unwrap_or(false);
    if !has_yaml {
        assert!(std::env::var("CI").is_err(), "{py} has no PyYAML (.ci/run installs it into the CI venv)");
        println!("SKIPPED: {py} has no PyYAML (pip install pyyaml, or set DNO_PYTHON)");
        return;
    }
    let o = Command::new(&py).arg(repo().join("scripts/check_k8s.py")).arg(env!("CARGO_BIN_EXE_dno")).args(&files).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(out.matches("ok: ").count(), files.len(), "{out}");
    assert_eq!(out.matches("(Indexed)").count(), 3, "{out}");
}
