//! Issue 2 acceptance through the binary: help, schema, validation errors, atomic outputs,
//! prompts import, config files.

mod common;
use common::*;
use std::path::Path;

#[test]
fn help_lists_every_stage_and_schema_prints() {
    let d = tempfile::tempdir().unwrap();
    let help = ok(&["--help"], d.path());
    for sub in ["sample", "annotate", "pair", "train", "eval", "report", "prompts", "inspect", "schema", "validate", "export"] {
        assert!(help.contains(sub), "--help lacks {sub}: {help}");
    }
    let s = ok(&["schema", "prompts"], d.path());
    assert!(s.contains("`prompt_id` | utf8 | no"), "{s}");
    let j: serde_json::Value = serde_json::from_str(&ok(&["schema", "samples", "--json"], d.path())).unwrap();
    assert_eq!(j["schema"], "samples");
    assert!(fails(&["schema", "nope"], d.path()).contains("unknown schema"));
}

fn import(d: &std::path::Path, name: &str, lines: &[serde_json::Value]) -> std::path::PathBuf {
    let src = d.join(format!("{name}.jsonl"));
    write(&src, &lines.iter().map(|l| l.to_string() + "\n").collect::<String>());
    let out = d.join(format!("{name}.parquet"));
    ok(&["prompts", "import", src.to_str().unwrap(), "--out", out.to_str().unwrap(), "--answer-field", "answer"], d);
    out
}

#[test]
fn bad_inputs_are_rejected_with_one_line_and_no_output() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    // duplicate prompt_id in the JSONL
    write(&p.join("dup.jsonl"), "{\"id\":\"a\",\"prompt\":\"x\"}\n{\"id\":\"a\",\"prompt\":\"y\"}\n");
    let e = fails(&["prompts", "import", "dup.jsonl", "--out", "dup.parquet"], p);
    assert!(e.contains("line 2") && e.contains("duplicate prompt_id 'a'"), "{e}");
    assert!(!p.join("dup.parquet").exists());
    assert!(std::fs::read_dir(p).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".tmp")));

    // a truncated Parquet file
    let good = import(p, "good", &[serde_json::json!({"id": "a", "prompt": "x", "answer": "1"}), serde_json::json!({"id": "b", "prompt": "y", "answer": "2"})]);
    let bytes = std::fs::read(&good).unwrap();
    write_bytes(&p.join("trunc.parquet"), &bytes[..bytes.len() - 20]);
    let e = fails(&["validate", "trunc.parquet", "--schema", "prompts"], p);
    assert!(e.contains("trunc.parquet") && e.contains("not a valid Parquet"), "{e}");

    // a stage given a truncated input writes nothing
    let e = fails(&["pair", "--samples", "trunc.parquet", "--preferences", "trunc.parquet", "--out", "pairs.parquet"], p);
    assert!(e.contains("trunc.parquet"), "{e}");
    assert!(!p.join("pairs.parquet").exists());

    // a prompts file whose schema lacks prompt_id: make one by importing under another field name
    // and checking it as a samples file is not the same thing, so write it via the samples schema check
    let e = fails(&["validate", good.to_str().unwrap(), "--schema", "samples"], p);
    assert!(e.contains("'prompts' file") , "{e}");
    let e = fails(&["inspect", "missing.parquet"], p);
    assert!(e.contains("missing.parquet"), "{e}");
}

fn write_bytes(path: &std::path::Path, b: &[u8]) {
    std::fs::write(path, b).unwrap();
}

#[test]
fn prompts_file_without_prompt_id_or_with_duplicates_is_rejected() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    // written by Python-like tools: no dno metadata, plain columns
    let script = r#"
import sys
try:
    import polars as pl
except ImportError:
    sys.exit(3)
pl.DataFrame({"id": ["a"], "prompt": ["x"]}).write_parquet("noid.parquet")
pl.DataFrame({"prompt_id": ["a", "b", "a"], "prompt": ["x", "y", "z"]}).write_parquet("dupid.parquet")
"#;
    let st = std::process::Command::new(python()).arg("-c").arg(script).current_dir(p).status().expect("python");
    assert!(st.success(), "needs Python with polars (set DNO_PYTHON); exit {st}");
    let e = fails(&["validate", "noid.parquet", "--schema", "prompts"], p);
    assert!(e.contains("noid.parquet") && e.contains("missing column 'prompt_id'"), "{e}");
    let e = fails(&["validate", "dupid.parquet", "--schema", "prompts"], p);
    assert!(e.contains("row 2") && e.contains("duplicate prompt_id 'a'"), "{e}");
}

#[test]
fn config_file_keys_mirror_flags() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    write(&p.join("in.jsonl"), "{\"q\":\"what?\",\"key\":\"k1\",\"gold\":\"42\"}\n");
    write(&p.join("dno.toml"), "[prompts.import]\nprompt-field = \"q\"\nid_field = \"key\"\nanswer-field = \"gold\"\n");
    ok(&["--config", "dno.toml", "prompts", "import", "in.jsonl", "--out", "p.parquet"], p);
    let s = ok(&["inspect", "p.parquet"], p);
    assert!(s.contains("k1") && s.contains("42") && s.contains("what?"), "{s}");
    // existing output needs --force
    let e = fails(&["--config", "dno.toml", "prompts", "import", "in.jsonl", "--out", "p.parquet"], p);
    assert!(e.contains("already exists") && e.contains("--force"), "{e}");
    ok(&["--config", "dno.toml", "prompts", "import", "in.jsonl", "--out", "p.parquet", "--force"], p);
    // a bad config is a clear error
    write(&p.join("bad.toml"), "k = 5\n");
    let o = dno(&["--config", "bad.toml", "prompts", "import", "in.jsonl", "--out", "q.parquet"], p);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("bad.toml"));
}

/// Command-line flags win over the config file however they are spelt (`-k 2`, `--k=2`, `-o`),
/// and the file fills in what the command line leaves out.
#[test]
fn command_line_wins_over_config_file_short_or_long() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    ok(&["demo", "init", "--out", "run", "--iterations", "1", "--prompts-per-iteration", "3", "--sft-prompts", "2", "--eval-prompts", "2", "--hidden", "32"], p);
    write(&p.join("dno.toml"), "[sample]\nk = 3\nmax-new-tokens = 2\nout = \"from-file.parquet\"\n");
    let base = ["--config", "dno.toml", "sample", "--model", "run/model", "--prompts", "run/prompts-iter-1.parquet"];
    let per_prompt = |f: &str| dno_data::read_validated::<dno_data::SampleRow>(&[p.join(f)]).unwrap().1.len() / 3;
    ok(&base, p);
    assert_eq!(per_prompt("from-file.parquet"), 3, "the file's k and out apply");
    ok(&[&base[..], &["-k", "2", "-o", "short.parquet"]].concat(), p);
    assert_eq!(per_prompt("short.parquet"), 2, "-k on the command line wins over k in the file");
    ok(&[&base[..], &["--k=1", "--out", "long.parquet"]].concat(), p);
    assert_eq!(per_prompt("long.parquet"), 1);
    // A key that is no flag of the subcommand is a clear usage error naming the file.
    write(&p.join("typo.toml"), "[sample]\ntemprature = 0.5\n");
    let o = dno(&["--config", "typo.toml", "sample", "--model", "run/model", "--prompts", "run/prompts-iter-1.parquet", "-o", "x.parquet"], p);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("typo.toml") && e.contains("sample.temprature"), "{e}");
}

/// `name -> default` of every flag in `dno SUB --help`.
fn help_defaults(sub: &str) -> std::collections::HashMap<String, String> {
    let help = ok(&[sub, "--help"], Path::new("."));
    let mut out = std::collections::HashMap::new();
    let mut flag = None;
    for line in help.lines() {
        let t = line.trim_start();
        if t.starts_with('-') {
            flag = t.split([' ', ',']).find(|w| w.starts_with("--")).map(|w| w.trim_start_matches("--").to_string());
        }
        if let (Some(f), Some(i)) = (&flag, line.find("[default: ")) {
            out.insert(f.clone(), line[i + 10..].split(']').next().unwrap().to_string());
        }
    }
    out
}

/// Every default is the library's: `--help` shows `SamplingParams::default()`,
/// `TrainConfig::default()`, `PairingConfig::default()`, `ClientConfig::default()`, one seed, and
/// those are the paper's sampling settings (K = 5, T = 0.7, top-p 0.95).
#[test]
fn flag_defaults_are_the_library_defaults() {
    let num = |m: &std::collections::HashMap<String, String>, f: &str| -> f64 {
        m.get(f).unwrap_or_else(|| panic!("no default for --{f} in {m:?}")).parse().unwrap()
    };
    let sample = help_defaults("sample");
    let sp = dno_model::SamplingParams::default();
    assert_eq!((sp.temperature, sp.top_p, sp.max_new_tokens), (0.7, 0.95, 512));
    assert_eq!(num(&sample, "k"), 5.0);
    assert_eq!(sample["temperature"].parse::<f32>().unwrap(), sp.temperature);
    assert_eq!(sample["top-p"].parse::<f32>().unwrap(), sp.top_p);
    assert_eq!(num(&sample, "top-k"), sp.top_k as f64);
    assert_eq!(sample["min-p"].parse::<f32>().unwrap(), sp.min_p);
    assert_eq!(num(&sample, "max-new-tokens"), sp.max_new_tokens as f64);
    assert_eq!(num(&sample, "max-batch"), sp.max_batch as f64);
    let client = dno_oracle::ClientConfig::default();
    assert_eq!(num(&sample, "timeout"), client.timeout_secs);
    assert_eq!(num(&sample, "concurrency"), client.max_concurrency as f64);
    assert_eq!(num(&sample, "max-retries"), client.max_retries as f64);

    let train = help_defaults("train");
    let tc = dno_train::TrainConfig::default();
    assert_eq!(train["loss"], "dpo");
    assert_eq!(train["loss"], tc.loss.to_string());
    assert_eq!(train["schedule"], tc.schedule.to_string());
    for (f, v) in [("eta", tc.eta), ("ipo-tau", tc.ipo_tau), ("lr", tc.lr), ("weight-decay", tc.weight_decay), ("warmup-ratio", tc.warmup_ratio), ("max-grad-norm", tc.max_grad_norm)] {
        assert_eq!(num(&train, f), v, "--{f}");
    }
    for (f, v) in [("epochs", tc.epochs), ("batch-size", tc.batch_size), ("grad-accum", tc.grad_accum), ("warmup-steps", tc.warmup_steps), ("checkpoint-every", tc.checkpoint_every), ("max-len", tc.max_len)] {
        assert_eq!(num(&train, f), v as f64, "--{f}");
    }

    let pair = help_defaults("pair");
    let pc = dno_math::pairing::PairingConfig::default();
    assert_eq!(pair["strategy"], pc.strategy.to_string());
    assert_eq!(pair["basis"], pc.basis.to_string());
    assert_eq!(num(&pair, "score-threshold"), pc.score_positive_threshold);
    assert_eq!(num(&pair, "winrate-margin"), pc.winrate_margin_student);
    assert_eq!(num(&pair, "winrate-margin-reference"), pc.winrate_margin_reference);

    // One seed default for every stage.
    assert_eq!(tc.seed, dno_math::rng::DEFAULT_SEED);
    for (sub, m) in [("sample", &sample), ("train", &train), ("pair", &pair), ("annotate", &help_defaults("annotate")), ("eval", &help_defaults("eval"))] {
        assert_eq!(num(m, "seed"), dno_math::rng::DEFAULT_SEED as f64, "dno {sub} --seed");
    }
}

#[test]
fn prompts_import_csv_and_100k_jsonl_round_trip_exactly() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    write(&p.join("in.csv"), "id,prompt,gold\na,\"hello, world\",1\nb,\"multi\nline\",2\n");
    ok(&["prompts", "import", "in.csv", "--out", "csv.parquet", "--answer-field", "gold"], p);
    assert!(ok(&["validate", "csv.parquet"], p).contains("ok: 2 rows"));

    let n = 100_000;
    let mut text = String::new();
    for i in 0..n {
        let v = serde_json::json!({"id": format!("q{i}"), "prompt": format!("What is {i}+{i}? é你好 \"quoted\"\n\ttab"), "answer": (2 * i).to_string()});
        text.push_str(&v.to_string());
        text.push('\n');
    }
    write(&p.join("big.jsonl"), &text);
    ok(&["prompts", "import", "big.jsonl", "--out", "big.parquet", "--answer-field", "answer"], p);
    let script = r#"
import json, sys, polars as pl
df = pl.read_parquet("big.parquet")
rows = [json.loads(l) for l in open("big.jsonl", encoding="utf-8")]
assert df.height == len(rows), (df.height, len(rows))
assert df["prompt_id"].to_list() == [r["id"] for r in rows]
assert df["prompt"].to_list() == [r["prompt"] for r in rows]
assert df["answer"].to_list() == [r["answer"] for r in rows]
assert df["reference"].null_count() == df.height
print("roundtrip ok", df.height)
"#;
    let o = std::process::Command::new(python()).arg("-c").arg(script).current_dir(p).output().expect("python");
    assert!(o.status.success(), "polars round trip failed: {}", String::from_utf8_lossy(&o.stderr));
}
