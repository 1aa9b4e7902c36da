//! `dno annotate` end to end, through the built binary: verifier, command oracle, LLM judge
//! against dno-oracle's fake server (with faults), kill-and-rerun, failures, bad input.

mod common;

use common::{dno_cmd as dno, run_ok, s, write_samples};
use dno_data::{read_metadata, read_validated, PreferenceRow, SampleRow};
use dno_oracle::fake_server::{Fault, FakeConfig, FakeServer, Reply};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};



fn sample(pid: &str, idx: i32, response: &str, answer: Option<&str>, reference: bool) -> SampleRow {
    SampleRow {
        prompt_id: pid.into(),
        sample_id: if reference { format!("{pid}-ref") } else { format!("{pid}-s{idx}") },
        prompt: format!("question {pid}"),
        system: None,
        history: None,
        answer: answer.map(String::from),
        constraints: None,
        response: response.into(),
        source: if reference { "reference" } else { "policy" }.into(),
        policy: "test".into(),
        sample_index: if reference { -1 } else { idx },
        seed: 0,
        response_tokens: 0,
        finish_reason: "stop".into(),
        logprob: None,
        repetitive: false,
    }
}


fn prefs(path: &Path) -> Vec<PreferenceRow> {
    read_validated::<PreferenceRow>(&[path.to_path_buf()]).unwrap().1
}

fn accounting(path: &Path) -> serde_json::Value {
    let md = read_metadata(path).unwrap();
    serde_json::from_str(md.get("dno.accounting").expect("dno.accounting metadata")).unwrap()
}

fn by_pair(rows: &[PreferenceRow]) -> HashMap<(String, String), &PreferenceRow> {
    let mut m = HashMap::new();
    for r in rows {
        assert!(m.insert((r.sample_a.clone(), r.sample_b.clone()), r).is_none(), "pair {} vs {} twice", r.sample_a, r.sample_b);
    }
    m
}

/// `n` prompts with `k` policy samples carrying fake-server quality markers `<<q=j>>`.
fn quality_samples(n: usize, k: usize) -> Vec<SampleRow> {
    let mut rows = Vec::new();
    for p in 0..n {
        for j in 0..k {
            rows.push(sample(&format!("p{p}"), j as i32, &format!("answer {j} to prompt {p} <<q={}>>", j), None, false));
        }
    }
    rows
}

#[test]
fn verifier_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let samples = dir.path().join("samples.parquet");
    let inputs = vec![
        sample("a", 0, "I think it is 42.", Some("42"), false),
        sample("a", 1, "It is 41.", Some("42"), false),
        sample("a", 2, "Surely 42", Some("42"), false),
        sample("a", 0, "#### 42", Some("42"), true),
        sample("b", 0, "7 apples", Some("#### 7"), false),
        sample("b", 1, "8 apples", Some("#### 7"), false),
    ];
    write_samples(&samples, inputs.clone());
    let out = dir.path().join("prefs.parquet");
    run_ok(&["annotate", "--samples", s(&samples), "--out", s(&out), "--oracle", "verifier", "--verify", "last-number"]);
    let rows = prefs(&out);
    // a: 4 candidates -> 6 pairs; b: 2 -> 1.
    assert_eq!(rows.len(), 7);
    let m = by_pair(&rows);
    let p = |a: &str, b: &str| m[&(a.to_string(), b.to_string())].p_a;
    assert_eq!(p("a-s0", "a-s1"), 1.0);
    assert_eq!(p("a-s0", "a-s2"), 0.5);
    assert_eq!(p("a-s1", "a-s2"), 0.0);
    assert_eq!(p("a-s1", "a-ref"), 0.0);
    assert_eq!(p("b-s0", "b-s1"), 1.0);
    let r = m[&("a-s1".to_string(), "a-ref".to_string())];
    assert_eq!((r.score_a, r.score_b), (Some(0.0), Some(1.0)));
    assert_eq!(r.judge, "verifier:last-number");
    // Provenance and accounting.
    let prov = dno_data::read_provenance(&out).unwrap().unwrap();
    assert_eq!(prov.stage, "annotate");
    assert_eq!(prov.config["oracle"]["verify"], "last-number");
    assert_eq!(prov.inputs.len(), 1);
    let acc = accounting(&out);
    assert_eq!(acc["judgments"], 7);
    assert_eq!(acc["failed_judgments"], 0);

    // An existing output is not replaced without --force.
    let again = dno().args(["annotate", "--samples", s(&samples), "--out", s(&out), "--oracle", "verifier"]).output().unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));

    // --compare vs-reference: every policy sample against the reference only (prompt b has none).
    let out2 = dir.path().join("prefs_ref.parquet");
    run_ok(&["annotate", "--samples", s(&samples), "--out", s(&out2), "--oracle", "verifier", "--compare", "vs-reference"]);
    let rows = prefs(&out2);
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r.sample_b == "a-ref"));
    assert_eq!(dno_data::read_provenance(&out2).unwrap().unwrap().config["compare"], "vs-reference");

    // The old spelling `--pairs` (now the pairs file of `dno train`) still works, with a warning.
    let out2b = dir.path().join("prefs_ref_old.parquet");
    let o = run_ok(&["annotate", "--samples", s(&samples), "--out", s(&out2b), "--oracle", "verifier", "--pairs", "vs-reference"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--pairs is deprecated") && err.contains("--compare"), "{err}");
    let old: Vec<(String, String, f64)> = prefs(&out2b).into_iter().map(|r| (r.sample_a, r.sample_b, r.p_a)).collect();
    let new: Vec<(String, String, f64)> = rows.iter().map(|r| (r.sample_a.clone(), r.sample_b.clone(), r.p_a)).collect();
    assert_eq!(old, new);
    assert_eq!(dno_data::read_provenance(&out2b).unwrap().unwrap().config["compare"], "vs-reference");
    let both = dno()
        .args(["annotate", "--samples", s(&samples), "--out", s(&dir.path().join("both.parquet")), "--oracle", "verifier"])
        .args(["--pairs", "all", "--compare", "all"])
        .output()
        .unwrap();
    assert_eq!(both.status.code(), Some(2), "{}", String::from_utf8_lossy(&both.stderr));
    let help = String::from_utf8_lossy(&run_ok(&["annotate", "--help"]).stdout).to_string();
    assert!(help.contains("--compare <SPEC>") && help.contains("--command-batch <") && !help.contains("--pairs") && !help.contains("--batch-size"), "{help}");

    // A verifier run on a prompt without an answer is refused up front.
    let noans = dir.path().join("noans.parquet");
    write_samples(&noans, vec![sample("x", 0, "1", None, false), sample("x", 1, "2", None, false)]);
    let o = dno().args(["annotate", "--samples", s(&noans), "--out", s(&dir.path().join("x.parquet")), "--oracle", "verifier"]).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("'x'") && err.contains("answer"), "{err}");

    // Policy samples and references in two files (a prompt's candidates are not contiguous in the
    // input): grouped in memory, the same preferences as from one file.
    let (pol, refs) = (dir.path().join("policy.parquet"), dir.path().join("refs.parquet"));
    let (ref_rows, pol_rows): (Vec<_>, Vec<_>) = inputs.into_iter().partition(|r| r.source == "reference");
    write_samples(&pol, pol_rows);
    write_samples(&refs, ref_rows);
    let out3 = dir.path().join("prefs_split.parquet");
    run_ok(&["annotate", "--samples", s(&pol), s(&refs), "--out", s(&out3), "--oracle", "verifier"]);
    let split = prefs(&out3);
    assert_eq!(split.len(), 7);
    let m3 = by_pair(&split);
    for (k, r) in &m {
        assert_eq!(m3[k].p_a, r.p_a, "{k:?}");
    }
}

#[test]
fn command_oracle_per_batch_and_persistent() {
    let dir = tempfile::tempdir().unwrap();
    let samples = dir.path().join("samples.parquet");
    let mut rows = Vec::new();
    for p in 0..5 {
        for j in 0..3 {
            rows.push(sample(&format!("p{p}"), j, &"x".repeat(1 + j as usize * (p % 3)), None, false));
        }
    }
    write_samples(&samples, rows.clone());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/prefer_shorter.py");
    let cmd = format!("python3 {}", script.display());
    let out = dir.path().join("prefs.parquet");
    run_ok(&["annotate", "--samples", s(&samples), "--out", s(&out), "--oracle", "command", "--command", &cmd, "--command-batch", "4"]);
    let len: HashMap<String, usize> = rows.iter().map(|r| (r.sample_id.clone(), r.response.len())).collect();
    let check = |path: &Path| {
        let got = prefs(path);
        assert_eq!(got.len(), 15);
        by_pair(&got);
        for r in &got {
            let (a, b) = (len[&r.sample_a], len[&r.sample_b]);
            let want = if a < b { 1.0 } else if a > b { 0.0 } else { 0.5 };
            assert_eq!(r.p_a, want, "{} vs {}", r.sample_a, r.sample_b);
            assert_eq!(r.judge, "command");
        }
    };
    check(&out);
    assert_eq!(accounting(&out)["calls"], 15);
    assert!(dir.path().join("prefs.parquet.cache.jsonl").exists(), "default cache beside the output");

    // Persistent process, separate cache: the same answers. The old spelling `--batch-size` (now
    // only the training batch of `dno train`) still sets the command batch, with a warning.
    let out2 = dir.path().join("prefs2.parquet");
    let o = run_ok(&[
        "annotate", "--samples", s(&samples), "--out", s(&out2), "--oracle", "command", "--command", &cmd, "--persistent", "--batch-size", "2",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--batch-size is deprecated") && err.contains("--command-batch"), "{err}");
    check(&out2);
    assert_eq!(dno_data::read_provenance(&out2).unwrap().unwrap().config["oracle"]["command_batch"], 2);

    // Rerun with --force: everything comes from the cache.
    run_ok(&["annotate", "--samples", s(&samples), "--out", s(&out), "--oracle", "command", "--command", &cmd, "--force"]);
    check(&out);
    let acc = accounting(&out);
    assert_eq!(acc["calls"], 0);
    assert_eq!(acc["cache_hits"], 15);

    // A misbehaving program: failures, no output, non-zero exit, one line.
    let bad = dir.path().join("bad.parquet");
    let o = dno()
        .args(["annotate", "--samples", s(&samples), "--out", s(&bad), "--oracle", "command", "--command", "echo '{\"p_a\": 3}'"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap_or("");
    assert!(last.starts_with("error:") && last.contains("Rerun"), "{err}");
    assert!(!bad.exists());

    // A program that closes its input unread (a broken pipe for `dno`, forced by requests larger
    // than the pipe buffer): an error, not a silent death by SIGPIPE.
    let big = dir.path().join("big.parquet");
    write_samples(&big, vec![sample("b", 0, &"y".repeat(200_000), None, false), sample("b", 1, "z", None, false)]);
    for _ in 0..2 {
        let o = dno()
            .args(["annotate", "--samples", s(&big), "--out", s(&bad), "--oracle", "command", "--command", "exec 0<&-; sleep 0.2"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.lines().last().unwrap_or("").contains("judgments failed"), "{err}");
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

#[test]
fn judge_against_fake_server_with_faults() {
    let rt = runtime();
    let server = rt
        .block_on(FakeServer::start(FakeConfig {
            fault_rate: 0.3,
            faults: vec![
                Fault::RateLimited { retry_after_secs: 0.01 },
                Fault::ServerError,
                Fault::TruncatedJson,
                Fault::Garbage,
                Fault::Disconnect,
                Fault::WrongFormat,
                Fault::Status(503),
            ],
            seed: 7,
            ..FakeConfig::default()
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let samples = dir.path().join("samples.parquet");
    write_samples(&samples, quality_samples(6, 3));
    let out = dir.path().join("prefs.parquet");
    let secret = "sk-test-SECRET-0123456789";
    let args = [
        "annotate", "--samples", s(&samples), "--out", s(&out), "--oracle", "judge", "--base-url", &server.base_url, "--api-model",
        "fake-judge", "--api-key-env", "DNO_TEST_JUDGE_KEY", "--retry-backoff", "0.01", "--concurrency", "4", "--max-retries", "8",
    ];

    // Dry run: calls and tokens, nothing written, nothing sent.
    let dry = dno().args(args).arg("--dry-run").env("DNO_TEST_JUDGE_KEY", secret).output().unwrap();
    assert!(dry.status.success(), "{}", String::from_utf8_lossy(&dry.stderr));
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(text.contains("18 pairs -> 36 calls"), "{text}");
    assert!(!out.exists() && !dir.path().join("prefs.parquet.cache.jsonl").exists());
    assert_eq!(server.requests(), 0);

    let o = dno().args(args).env("DNO_TEST_JUDGE_KEY", secret).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{stderr}");
    assert!(server.stats.faults.load(std::sync::atomic::Ordering::Relaxed) > 0, "faults were injected");
    let rows = prefs(&out);
    assert_eq!(rows.len(), 18, "every judgment exactly once");
    by_pair(&rows);
    for r in &rows {
        // Candidate j has quality j: the higher index wins, in both orders.
        assert_eq!(r.p_a, 0.0, "{} vs {}", r.sample_a, r.sample_b);
        assert_eq!((r.p_ab, r.p_ba), (Some(0.0), Some(0.0)));
        assert_eq!(r.judge, "judge:fake-judge:pairwise");
        assert!(r.raw.as_deref().unwrap().contains("[[B]]"));
    }
    let acc = accounting(&out);
    // One call per order, plus the re-asks after unparsable (WrongFormat) answers.
    assert_eq!(acc["calls"].as_u64().unwrap(), 36 + acc["parse_retries"].as_u64().unwrap());
    assert!(acc["retries"].as_u64().unwrap() + acc["parse_retries"].as_u64().unwrap() > 0);
    assert_eq!(acc["first_position_win_rate"], 0.5);
    assert!(stderr.contains("annotate accounting"));

    // The key went to the server and nowhere else.
    assert_eq!(server.stats.last_authorization.lock().unwrap().as_deref(), Some(format!("Bearer {secret}").as_str()));
    let mut everything = stderr.into_bytes();
    everything.extend(o.stdout);
    everything.extend(std::fs::read(&out).unwrap());
    everything.extend(std::fs::read(dir.path().join("prefs.parquet.cache.jsonl")).unwrap());
    assert!(!String::from_utf8_lossy(&everything).contains("SECRET"));

    // Score mode (the paper's batched 6-point annotation): one call per prompt.
    let out2 = dir.path().join("scores.parquet");
    let before = server.requests();
    let mut a2: Vec<&str> = args.to_vec();
    a2[4] = s(&out2);
    a2.extend(["--mode", "score"]);
    run_ok(&a2);
    let rows = prefs(&out2);
    assert_eq!(rows.len(), 18);
    for r in &rows {
        let q = |id: &str| id.rsplit("-s").next().unwrap().parse::<f64>().unwrap();
        assert_eq!((r.score_a, r.score_b), (Some(q(&r.sample_a)), Some(q(&r.sample_b))));
        assert_eq!(r.p_a, 0.0);
    }
    assert!(server.requests() - before >= 6);
    let acc = accounting(&out2);
    assert_eq!(acc["calls"].as_u64().unwrap(), 6 + acc["parse_retries"].as_u64().unwrap());
}

fn cache_lines(p: &Path) -> usize {
    std::fs::read_to_string(p).map(|t| t.lines().filter(|l| !l.trim().is_empty()).count()).unwrap_or(0)
}

#[test]
fn kill_and_rerun_pays_only_for_what_is_missing() {
    let rt = runtime();
    let server = rt.block_on(FakeServer::start(FakeConfig { latency_ms: 40, ..FakeConfig::default() })).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let samples = dir.path().join("samples.parquet");
    write_samples(&samples, quality_samples(8, 4)); // 8 x 6 pairs x 2 orders = 96 calls
    let out = dir.path().join("prefs.parquet");
    let cache = dir.path().join("prefs.parquet.cache.jsonl");
    let args = [
        "annotate", "--samples", s(&samples), "--out", s(&out), "--oracle", "judge", "--base-url", &server.base_url, "--concurrency", "2",
    ];
    let mut child = dno().args(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let t0 = Instant::now();
    while cache_lines(&cache) < 20 {
        assert!(t0.elapsed() < Duration::from_secs(60), "no progress");
        assert!(child.try_wait().unwrap().is_none(), "finished before it could be killed");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!out.exists(), "no output from a killed run");
    let tmp_files = || -> Vec<PathBuf> {
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).filter(|p| p.to_str().unwrap().ends_with(".tmp")).collect()
    };
    // Rows stream into a hidden temp file; a SIGKILL leaves it (and the cache) behind.
    assert!(tmp_files().len() <= 1, "{:?}", tmp_files());
    let cached = cache_lines(&cache);
    assert!(cached < 96);

    let before = server.requests();
    run_ok(&args);
    let rerun_requests = server.requests() - before;
    assert!(tmp_files().is_empty(), "the rerun removes the killed run's temp file: {:?}", tmp_files());
    let rows = prefs(&out);
    assert_eq!(rows.len(), 48, "each judgment exactly once");
    by_pair(&rows);
    assert!(rows.iter().all(|r| r.p_a == 0.0));
    let acc = accounting(&out);
    assert_eq!(acc["calls"].as_u64().unwrap(), rerun_requests);
    assert!(rerun_requests < 96, "the rerun made fewer calls ({rerun_requests})");
    assert!(acc["cache_hits"].as_u64().unwrap() >= cached as u64);
    assert_eq!(acc["calls"].as_u64().unwrap() + acc["cache_hits"].as_u64().unwrap(), 96);
}

#[test]
fn failed_judgments_block_output_and_rerun_retries_only_them() {
    let rt = runtime();
    // Every request about prompt p1 gets an answer without a verdict.
    let bad = FakeServer::start(FakeConfig {
        override_fn: Some(Arc::new(|req: &serde_json::Value| {
            req.to_string().contains("question p1").then(|| Reply::Fault(Fault::WrongFormat))
        })),
        ..FakeConfig::default()
    });
    let server = rt.block_on(bad).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let samples = dir.path().join("samples.parquet");
    write_samples(&samples, quality_samples(3, 3)); // 9 pairs, 18 calls; p1: 3 pairs, 6 calls
    let out = dir.path().join("prefs.parquet");
    let args = ["annotate", "--samples", s(&samples), "--out", s(&out), "--oracle", "judge", "--base-url", &server.base_url];
    let o = dno().args(args).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    let last = err.lines().last().unwrap();
    assert!(last.contains("3 of 9 judgments failed") && last.contains("p1") && last.contains("Rerun"), "{err}");
    assert!(!out.exists());

    // --allow-failures keeps the 6 good judgments.
    let partial = dir.path().join("partial.parquet");
    let mut a2 = args.to_vec();
    a2[4] = s(&partial);
    let shared_cache = dir.path().join("prefs.parquet.cache.jsonl");
    a2.extend(["--allow-failures", "--cache", s(&shared_cache)]);
    run_ok(&a2);
    let rows = prefs(&partial);
    assert_eq!(rows.len(), 6);
    assert!(rows.iter().all(|r| r.prompt_id != "p1"));
    assert_eq!(accounting(&partial)["failed_judgments"], 3);

    // A healthy server: the rerun asks only p1's 6 orders.
    let good = rt.block_on(FakeServer::start(FakeConfig::default())).unwrap();
    let mut a3 = args.to_vec();
    a3[8] = &good.base_url;
    run_ok(&a3);
    assert_eq!(good.requests(), 6);
    assert_eq!(prefs(&out).len(), 9);
}

#[test]
fn bad_input_is_one_line_and_writes_nothing() {
    use arrow_array::{Int32Array, RecordBatch, StringArray};
    let dir = tempfile::tempdir().unwrap();
    let samples = dir.path().join("samples.parquet");
    // A samples file without the `response` column.
    let schema = Arc::new(arrow_schema::Schema::new(vec![
        arrow_schema::Field::new("prompt_id", arrow_schema::DataType::Utf8, false),
        arrow_schema::Field::new("sample_id", arrow_schema::DataType::Utf8, false),
        arrow_schema::Field::new("prompt", arrow_schema::DataType::Utf8, false),
        arrow_schema::Field::new("sample_index", arrow_schema::DataType::Int32, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec!["p0", "p0"])),
            Arc::new(StringArray::from(vec!["s0", "s1"])),
            Arc::new(StringArray::from(vec!["q", "q"])),
            Arc::new(Int32Array::from(vec![0, 1])),
        ],
    )
    .unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&samples).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let out = dir.path().join("prefs.parquet");
    let o = dno().args(["annotate", "--samples", s(&samples), "--out", s(&out), "--oracle", "verifier"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("samples.parquet") && err.contains("'response'"), "{err}");
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(files.len(), 1, "nothing but the input: {files:?}");

    // A bad flag value: one line too.
    let o = dno()
        .args(["annotate", "--samples", s(&samples), "--out", s(&out), "--oracle", "verifier", "--compare", "random:0"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stderr).trim().lines().count(), 1);
}

#[test]
fn null_content_and_wrong_shape_are_retried_and_lose_nothing() {
    // A judge that fails 30% of requests in mixed ways; none of them is a judge that answered
    // without a verdict, so every failure must go through --max-retries (not the parse re-asks).
    let rt = runtime();
    let server = rt
        .block_on(FakeServer::start(FakeConfig {
            fault_rate: 0.3,
            faults: vec![
                Fault::RateLimited { retry_after_secs: 0.01 },
                Fault::ServerError,
                Fault::Slow { ms: 3000 },
                Fault::TruncatedJson,
                Fault::Disconnect,
                Fault::NullContent,
                Fault::WrongShape,
            ],
            seed: 11,
            ..FakeConfig::default()
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let samples = dir.path().join("samples.parquet");
    write_samples(&samples, quality_samples(20, 4)); // 20 x 6 pairs = 120 judgments, 240 calls
    let out = dir.path().join("prefs.parquet");
    let o = dno()
        .args([
            "annotate", "--samples", s(&samples), "--out", s(&out), "--oracle", "judge", "--base-url", &server.base_url, "--concurrency", "8",
            "--max-retries", "12", "--retry-backoff", "0.01", "--timeout", "1",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let rows = prefs(&out);
    assert_eq!(rows.len(), 120, "0 judgments lost");
    by_pair(&rows);
    assert!(rows.iter().all(|r| r.p_a == 0.0 && r.raw.as_deref().unwrap().contains("[[B]]")), "no empty answer was kept");
    let acc = accounting(&out);
    assert_eq!(acc["failed_judgments"], 0);
    assert_eq!(acc["failed_calls"], 0);
    assert_eq!(acc["parse_retries"], 0, "null content / wrong shape are failed requests, not unparsable verdicts");
    assert_eq!(acc["calls"], 240);
    assert!(acc["retries"].as_u64().unwrap() >= server.stats.faults.load(std::sync::atomic::Ordering::Relaxed) / 2);
    assert!(server.stats.faults.load(std::sync::atomic::Ordering::Relaxed) >= 40, "about 30% of the requests got a fault");
}

#[test]
fn judge_flags_new_and_old_spellings() {
    let rt = runtime();
    let server = rt.block_on(FakeServer::start(FakeConfig::default())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let samples = dir.path().join("samples.parquet");
    write_samples(&samples, quality_samples(1, 2));
    let body = || server.stats.last_body.lock().unwrap().clone().unwrap();
    for (i, [t, m, sys]) in [["--judge-temperature", "--judge-max-tokens", "--judge-system"], ["--temperature", "--max-tokens", "--system"]]
        .into_iter()
        .enumerate()
    {
        let out = dir.path().join(format!("prefs{i}.parquet"));
        let temp = format!("0.{}", i + 3);
        let max = format!("{}", 7 + i);
        let system = format!("be fair {i}");
        run_ok(&[
            "annotate", "--samples", s(&samples), "--out", s(&out), "--oracle", "judge", "--base-url", &server.base_url, t, &temp, m, &max, sys,
            &system,
        ]);
        let b = body();
        assert_eq!(b["temperature"].as_f64(), Some(temp.parse().unwrap()), "{t}: {b}");
        assert_eq!(b["max_tokens"].as_u64(), Some(max.parse().unwrap()), "{m}: {b}");
        assert_eq!(b["messages"][0]["role"], "system", "{sys}: {b}");
        assert_eq!(b["messages"][0]["content"], system.as_str(), "{sys}: {b}");
        assert_eq!(prefs(&out).len(), 1);
    }
    // The old spellings are hidden aliases.
    for cmd in ["annotate", "eval"] {
        let help = String::from_utf8_lossy(&run_ok(&[cmd, "--help"]).stdout).to_string();
        assert!(help.contains("--judge-temperature") && help.contains("--judge-max-tokens") && help.contains("--judge-system"), "{help}");
        assert!(!help.contains("--temperature <") && !help.contains("--max-tokens <") && !help.contains("--system <"), "{help}");
    }
}

#[test]
fn round_robin_over_three_judges_one_dying() {
    let rt = runtime();
    let cfg = |die: Option<u64>| FakeConfig { latency_ms: 5, die_after_requests: die, ..FakeConfig::default() };
    let servers: Vec<FakeServer> =
        [None, Some(10), None].into_iter().map(|d| rt.block_on(FakeServer::start(cfg(d))).unwrap()).collect();
    let urls = servers.iter().map(|s| s.base_url.clone()).collect::<Vec<_>>().join(",");
    let dir = tempfile::tempdir().unwrap();
    let samples = dir.path().join("samples.parquet");
    write_samples(&samples, quality_samples(8, 3)); // 24 judgments, 48 calls
    let out = dir.path().join("prefs.parquet");
    let o = dno()
        .args([
            "annotate", "--samples", s(&samples), "--out", s(&out), "--oracle", "judge", "--base-url", &urls, "--concurrency", "4", "--max-retries",
            "4", "--retry-backoff", "0.01", "--timeout", "2",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let rows = prefs(&out);
    assert_eq!(rows.len(), 24);
    by_pair(&rows);
    assert!(rows.iter().all(|r| r.p_a == 0.0));
    let ok: Vec<u64> = servers.iter().map(|s| s.stats.ok.load(std::sync::atomic::Ordering::SeqCst)).collect();
    assert_eq!(ok[1], 10, "the dying server answered until it died: {ok:?}");
    assert_eq!(ok.iter().sum::<u64>(), 48, "every request answered exactly once: {ok:?}");
    assert!(ok[0] >= 12 && ok[2] >= 12, "the live servers shared the rest: {ok:?}");
    let acc = accounting(&out);
    assert_eq!((acc["calls"].as_u64(), acc["failed_calls"].as_u64()), (Some(48), Some(0)));
    assert!(stderr.contains("out of the rotation"), "{stderr}");
}
