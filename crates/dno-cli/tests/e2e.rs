//! The whole DNO loop through the CLI on a tiny fixture: demo init -> sft -> sample -> annotate ->
//! pair -> train -> sample -> eval -> report. Checks every stage's output schema, the provenance
//! chain (each file's metadata names its inputs' fingerprints), resume of `sample` and `train`
//! after a kill,
//! sharding, and that Python Polars reads every dataset.

mod common;
use common::*;
use std::path::Path;

fn provenance(file: &Path) -> serde_json::Value {
    let md = dno_data::read_metadata(file).unwrap();
    serde_json::from_str(md.get("dno.provenance").expect("provenance")).unwrap()
}

/// The output `file` must list `input` among its inputs with `input`'s current fingerprint.
fn assert_chained(file: &Path, input: &Path) {
    let p = provenance(file);
    let fp = dno_data::fingerprint(input).unwrap().fingerprint;
    let inputs = p["inputs"].as_array().unwrap();
    assert!(
        inputs.iter().any(|i| i["fingerprint"] == fp.as_str()),
        "{} does not name {} ({fp}) among its inputs: {inputs:?}",
        file.display(),
        input.display()
    );
}

fn schema_of(file: &Path) -> String {
    dno_data::read_metadata(file).unwrap().get("dno.schema").cloned().unwrap()
}

#[test]
fn whole_loop_through_the_cli() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let s = |x: &str| p.join(x).to_str().unwrap().to_string();
    ok(&["demo", "init", "--out", &s("run"), "--iterations", "1", "--prompts-per-iteration", "12", "--sft-prompts", "32", "--eval-prompts", "12", "--hidden", "32"], p);
    ok(&["train", "--loss", "sft", "--model", &s("run/model"), "--prompts", &s("run/sft_prompts.parquet"), "--out", &s("run/sft"), "--lr", "3e-3", "--epochs", "2", "--batch-size", "8"], p);
    let sft = s("run/sft/model");
    assert!(p.join("run/sft/model/config.json").exists());
    assert_eq!(schema_of(&p.join("run/sft/metrics.parquet")), "metrics");

    let sample_args = |model: &str, prompts: &str, out: &str, k: &str| -> Vec<String> {
        ["sample", "--model", model, "--prompts", prompts, "--out", out, "-k", k, "--temperature", "1.0", "--top-p", "1.0", "--max-new-tokens", "4", "--seed", "3", "--batch-prompts", "4"]
            .iter()
            .map(|x| x.to_string())
            .collect()
    };
    let run = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(&refs, p)
    };
    let mut a = sample_args(&sft, &s("run/prompts-iter-1.parquet"), &s("it1/samples.parquet"), "4");
    a.push("--include-reference".into());
    run(a.clone());
    assert_eq!(schema_of(&p.join("it1/samples.parquet")), "samples");
    assert_chained(&p.join("it1/samples.parquet"), &p.join("run/prompts-iter-1.parquet"));
    let (_, rows) = dno_data::read_validated::<dno_data::SampleRow>(&[p.join("it1/samples.parquet")]).unwrap();
    assert_eq!(rows.len(), 12 * 5);
    assert_eq!(rows.iter().filter(|r| r.source == "reference").count(), 12);

    // Same command, same ids and text (deterministic); shards union to the same set.
    a[6] = s("it1/again.parquet");
    run(a.clone());
    let (_, again) = dno_data::read_validated::<dno_data::SampleRow>(&[p.join("it1/again.parquet")]).unwrap();
    assert_eq!(rows, again);
    std::fs::create_dir_all(p.join("shards")).unwrap();
    for i in 0..3 {
        let mut b = a.clone();
        b[6] = s(&format!("shards/part-{i}.parquet"));
        b.push("--shard".into());
        b.push(format!("{i}/3"));
        run(b);
    }
    let (_, sharded) = dno_data::read_validated::<dno_data::SampleRow>(&[p.join("shards")]).unwrap();
    let mut x: Vec<String> = sharded.iter().map(|r| r.sample_id.clone()).collect();
    let mut y: Vec<String> = rows.iter().map(|r| r.sample_id.clone()).collect();
    x.sort();
    y.sort();
    assert_eq!(x, y, "union of shards must equal the unsharded output");
    assert_eq!(sharded, rows, "a shard directory reads back in the unsharded order");

    ok(&["annotate", "--samples", &s("it1/samples.parquet"), "--out", &s("it1/prefs.parquet"), "--oracle", "verifier", "--verify", "exact"], p);
    assert_chained(&p.join("it1/prefs.parquet"), &p.join("it1/samples.parquet"));
    ok(&["pair", "--samples", &s("it1/samples.parquet"), "--preferences", &s("it1/prefs.parquet"), "--out", &s("it1/pairs.parquet"), "--strategy", "max-min"], p);
    assert_chained(&p.join("it1/pairs.parquet"), &p.join("it1/prefs.parquet"));
    ok(&["train", "--model", &sft, "--pairs", &s("it1/pairs.parquet"), "--out", &s("it1/train"), "--loss", "dpo", "--lr", "1e-3", "--batch-size", "8"], p);
    assert_chained(&p.join("it1/train/metrics.parquet"), &p.join("it1/pairs.parquet"));
    run(sample_args(&s("it1/train/model"), &s("run/eval_prompts.parquet"), &s("it1/eval_samples.parquet"), "1"));
    run(sample_args(&sft, &s("run/eval_prompts.parquet"), &s("base.parquet"), "1"));
    std::fs::create_dir_all(p.join("runs/iter-1")).unwrap();
    ok(&["eval", "--candidate", &s("it1/eval_samples.parquet"), "--baseline", &s("base.parquet"), "--out", &s("runs/iter-1/eval.parquet"), "--oracle", "verifier", "--verify", "exact"], p);
    assert_eq!(schema_of(&p.join("runs/iter-1/eval.parquet")), "eval");
    assert_chained(&p.join("runs/iter-1/eval.parquet"), &p.join("it1/eval_samples.parquet"));
    assert_chained(&p.join("runs/iter-1/eval.parquet"), &p.join("base.parquet"));
    let md = ok(&["report", &s("runs")], p);
    assert!(md.contains("iter-1"), "{md}");
    assert!(std::fs::read_to_string(p.join("runs/report/winrate.svg")).unwrap().contains("<svg"));

    // Every dataset reads in Python Polars with the documented columns.
    let files = [
        ("prompts", "run/sft_prompts.parquet"),
        ("samples", "it1/samples.parquet"),
        ("preferences", "it1/prefs.parquet"),
        ("pairs", "it1/pairs.parquet"),
        ("eval", "runs/iter-1/eval.parquet"),
        ("metrics", "it1/train/metrics.parquet"),
    ];
    let mut script = String::from("import json, polars as pl\n");
    for (name, f) in files {
        let ds: dno_data::Dataset = name.parse().unwrap();
        let cols: Vec<&str> = ds.columns().iter().map(|c| c.name).collect();
        let n = dno_data::DatasetReader::open(ds, &[p.join(f)]).unwrap().num_rows();
        script.push_str(&format!(
            "df = pl.read_parquet({f:?}); assert df.columns == {cols:?}, ({name:?}, df.columns); assert df.height == {n}, ({name:?}, df.height)\nmeta = pl.read_parquet_metadata({f:?}); assert meta['dno.schema'] == {name:?}; json.loads(meta['dno.provenance'])\n"
        ));
    }
    script.push_str("print('polars ok')\n");
    let o = std::process::Command::new(python()).arg("-c").arg(&script).current_dir(p).output().expect("python");
    assert!(o.status.success(), "Polars could not read the outputs (needs DNO_PYTHON with polars): {}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn killed_sample_run_resumes_without_duplicates() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let s = |x: &str| p.join(x).to_str().unwrap().to_string();
    ok(&["demo", "init", "--out", &s("run"), "--iterations", "1", "--prompts-per-iteration", "200", "--sft-prompts", "4", "--eval-prompts", "4", "--hidden", "32"], p);
    let args = ["sample", "--model", &s("run/model"), "--prompts", &s("run/prompts-iter-1.parquet"), "--out", &s("out.parquet"), "-k", "3", "--max-new-tokens", "6", "--batch-prompts", "2", "--temperature", "1.0"];
    // Reference run, uninterrupted.
    let mut full = args.to_vec();
    full[6] = &*Box::leak(s("full.parquet").into_boxed_str());
    ok(&full, p);
    // Kill a run once some batches are saved, then rerun the same command.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_dno")).args(args).current_dir(p).spawn().unwrap();
    let parts = p.join("out.parquet.parts");
    let t0 = std::time::Instant::now();
    while t0.elapsed().as_secs() < 60 {
        let n = std::fs::read_dir(&parts).map(|r| r.filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("part-")).count()).unwrap_or(0);
        if n >= 3 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let killed_early = !p.join("out.parquet").exists();
    let out = ok(&args, p);
    let _ = out;
    let (_, a) = dno_data::read_validated::<dno_data::SampleRow>(&[p.join("out.parquet")]).unwrap();
    let (_, b) = dno_data::read_validated::<dno_data::SampleRow>(&[p.join("full.parquet")]).unwrap();
    assert_eq!(a.len(), 600);
    // Equal to the uninterrupted run, except that the log-probs may differ in f32's last bits: with
    // continuous batching the rerun batches its prompts with other neighbours (matmul shapes differ).
    let close = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-5 * x.abs().max(1.0),
        (x, y) => x == y,
    };
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert!(close(x.logprob, y.logprob), "{}: logprob {:?} vs {:?}", x.sample_id, x.logprob, y.logprob);
        let strip = |r: &dno_data::SampleRow| dno_data::SampleRow { logprob: None, ..r.clone() };
        assert_eq!(strip(x), strip(y), "resumed output must equal the uninterrupted one");
    }
    assert!(!parts.exists(), "part files are removed once the output is complete");
    assert!(killed_early, "the run finished before it could be killed; the test did not exercise resume");
}

/// `n` preference pairs on the demo task (chosen: the right sum, rejected: a wrong one).
fn write_pairs(path: &Path, n: usize) {
    let prov = dno_data::Provenance::new("test", &serde_json::json!({})).unwrap();
    let mut w = dno_data::DatasetWriter::<dno_data::PairRow>::create(path, &prov, true).unwrap();
    w.write_all((0..n).map(|i| dno_data::PairRow {
        prompt_id: format!("p{i}"),
        prompt: format!("{i}+{}=", i % 7),
        system: None,
        history: None,
        chosen: format!("{}", i + i % 7),
        rejected: format!("{}", i + i % 7 + 10),
        chosen_id: format!("c{i}"),
        rejected_id: format!("r{i}"),
        target: 1.0,
        chosen_winrate: 1.0,
        rejected_winrate: 0.0,
        weight: 1.0,
        chosen_score: None,
        rejected_score: None,
        chosen_source: "policy".into(),
        rejected_source: "policy".into(),
        chosen_finish_reason: Some("stop".into()),
        rejected_finish_reason: Some("stop".into()),
        strategy: "max-min".into(),
        iteration: "iter-1".into(),
    }))
    .unwrap();
    w.finish().unwrap();
}

/// `dno train` killed with SIGKILL after a checkpoint, then the identical command rerun:
/// the resumed model equals an uninterrupted run's, bit for bit. A changed setting is refused
/// with a message naming it; --force starts over.
#[test]
fn killed_train_run_resumes_to_the_same_weights() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let s = |x: &str| p.join(x).to_str().unwrap().to_string();
    ok(&["demo", "init", "--out", &s("run"), "--iterations", "1", "--prompts-per-iteration", "4", "--sft-prompts", "4", "--eval-prompts", "4", "--hidden", "32"], p);
    write_pairs(&p.join("pairs.parquet"), 40);
    let (model, pairs) = (s("run/model"), s("pairs.parquet"));
    let args = |out: &str| -> Vec<String> {
        ["train", "--model", &model, "--pairs", &pairs, "--out", out, "--loss", "dpo", "--lr", "1e-3", "--batch-size", "1", "--epochs", "3", "--checkpoint-every", "1"]
            .iter()
            .map(|x| x.to_string())
            .collect()
    };
    let run = |a: &[String]| ok(&a.iter().map(String::as_str).collect::<Vec<_>>(), p);
    run(&args(&s("full")));

    let out = p.join("out");
    let mut child = dno_cmd().args(args(&s("out"))).current_dir(p).stderr(std::process::Stdio::null()).spawn().unwrap();
    let t0 = std::time::Instant::now();
    while t0.elapsed().as_secs() < 120 && !out.join("checkpoint/state.json").exists() {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("checkpoint/state.json")).expect("a checkpoint was written")).unwrap();
    let (step, total) = (state["step"].as_u64().unwrap(), state["total_steps"].as_u64().unwrap());
    assert!(step >= 1 && step < total, "killed at step {step}/{total}: the test did not exercise resume");
    assert!(!out.join("model").exists());

    let o = dno(&args(&s("out")).iter().map(String::as_str).collect::<Vec<_>>(), p);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("resumed from the checkpoint at step {step}")), "{stderr}");
    let weights = |dir: &str| std::fs::read(p.join(dir).join("model/model.safetensors")).unwrap();
    assert!(weights("full") == weights("out"), "the resumed model differs from the uninterrupted run's");
    // The steps done before the kill were not redone: their metrics, timings included, are the
    // killed run's; then one line per later step.
    let metrics: Vec<serde_json::Value> =
        std::fs::read_to_string(out.join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(metrics.len() as u64, total, "one metrics line per step, none repeated");
    assert_eq!(&metrics[..step as usize], state["metrics"].as_array().unwrap().as_slice());

    // The same command again only re-exports; other settings are refused, naming them.
    run(&args(&s("out")));
    assert!(weights("full") == weights("out"));
    let mut other = args(&s("out"));
    other[10] = "2e-3".into();
    let refs: Vec<&str> = other.iter().map(String::as_str).collect();
    let e = fails(&refs, p);
    assert!(e.contains("different training config") && e.contains("lr 0.001 in the checkpoint, 0.002 now") && e.contains("--force"), "{e}");
    write_pairs(&p.join("pairs.parquet"), 41);
    let e = fails(&args(&s("out")).iter().map(String::as_str).collect::<Vec<_>>(), p);
    assert!(e.contains("training examples differ (40 in the checkpoint, 41 now)"), "{e}");
    // --force starts over with the new settings.
    other.push("--force".into());
    run(&other);
    assert!(weights("full") != weights("out"));
}

/// The reference log-probs are cached under the input model's file fingerprint: a rerun reads
/// them back, and a changed model file (same size) recomputes them.
#[test]
fn changed_model_file_invalidates_the_reference_cache() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let s = |x: &str| p.join(x).to_str().unwrap().to_string();
    ok(&["demo", "init", "--out", &s("run"), "--iterations", "1", "--prompts-per-iteration", "4", "--sft-prompts", "4", "--eval-prompts", "4", "--hidden", "32"], p);
    write_pairs(&p.join("pairs.parquet"), 4);
    let args = ["train", "--model", &s("run/model"), "--pairs", &s("pairs.parquet"), "--out", &s("t"), "--batch-size", "4", "--force"];
    let stderr = |a: &[&str]| {
        let o = dno(a, p);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    assert!(stderr(&args).contains("reference log-probs computed"));
    assert!(stderr(&args).contains("reference log-probs from cache"));
    // Rewrite one weight in place: same size, same header, another model.
    let st = p.join("run/model/model.safetensors");
    let mut bytes = std::fs::read(&st).unwrap();
    let lowest_byte_of_last_f32 = bytes.len() - 4;
    bytes[lowest_byte_of_last_f32] ^= 1;
    std::fs::write(&st, bytes).unwrap();
    assert!(stderr(&args).contains("reference log-probs computed"), "a changed model must not reuse the cache");
}

#[test]
fn empty_prompts_and_overflow_are_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let s = |x: &str| p.join(x).to_str().unwrap().to_string();
    ok(&["demo", "init", "--out", &s("run"), "--iterations", "1", "--prompts-per-iteration", "2", "--sft-prompts", "2", "--eval-prompts", "2", "--hidden", "32"], p);
    write(&p.join("long.jsonl"), &format!("{{\"id\":\"long\",\"prompt\":\"{}\"}}\n", "1+".repeat(100)));
    ok(&["prompts", "import", "long.jsonl", "--out", "long.parquet"], p);
    let e = fails(&["sample", "--model", &s("run/model"), "--prompts", "long.parquet", "--out", "o.parquet", "--max-new-tokens", "4"], p);
    assert!(e.contains("prompt 'long'") && e.contains("context window"), "{e}");
    assert!(!p.join("o.parquet").exists());
    ok(&["sample", "--model", &s("run/model"), "--prompts", "long.parquet", "--out", "t.parquet", "--max-new-tokens", "4", "-k", "1", "--on-overflow", "truncate"], p);
    // a shard with no prompts is an empty shard output (so a job array does not fail on it)
    ok(&["sample", "--model", &s("run/model"), "--prompts", &s("run/eval_prompts.parquet"), "--out", "e.parquet", "--shard", "0/1000"], p);
    assert_eq!(dno_data::read_validated::<dno_data::SampleRow>(&[p.join("e.parquet")]).unwrap().1.len(), 0);
    let e = fails(&["sample", "--model", &s("run/model"), "--prompts", &s("run/eval_prompts.parquet"), "--out", "e2.parquet", "--shard", "1000/1000"], p);
    assert!(e.contains("0 <= I < N"), "{e}");
    // a server that is down
    let e = fails(&["sample", "--engine", "openai", "--api-model", "m", "--base-url", "http://127.0.0.1:9/v1", "--prompts", &s("run/eval_prompts.parquet"), "--out", "srv.parquet", "--max-retries", "0", "--timeout", "2"], p);
    assert!(e.contains("127.0.0.1:9") || e.to_lowercase().contains("connect"), "{e}");
    assert!(!p.join("srv.parquet").exists());
}
