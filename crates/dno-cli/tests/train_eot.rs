//! Finish reasons from samples to training: `dno pair` copies each response's finish reason into
//! the pairs file, and `dno train` closes only ended responses with the chat template's
//! end-of-turn text (`<|im_end|>\n`, 2 tokens, for fixtures/tiny-qwen2's ChatML template),
//! reads version-1 pairs files (no finish reasons) as all ended with one warning, and rejects an
//! unknown finish reason with one error line.

mod common;
use common::*;
use dno_data::{DatasetWriter, MetricRow, PairRow, PreferenceRow, Provenance, SampleRow};
use std::path::{Path, PathBuf};

fn prov() -> Provenance {
    Provenance::new("test", &serde_json::json!({})).unwrap()
}

fn tiny_qwen2() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tiny-qwen2")
}

fn pair(chosen_finish: &str, rejected_finish: &str) -> PairRow {
    PairRow {
        prompt_id: "p".into(),
        prompt: "What is the capital of France?".into(),
        system: None,
        history: None,
        chosen: "Paris is the capital.".into(),
        rejected: "The capital of France is".into(),
        chosen_id: "c".into(),
        rejected_id: "r".into(),
        target: 1.0,
        chosen_winrate: 1.0,
        rejected_winrate: 0.0,
        weight: 1.0,
        chosen_score: None,
        rejected_score: None,
        chosen_source: "policy".into(),
        rejected_source: "policy".into(),
        chosen_finish_reason: Some(chosen_finish.into()),
        rejected_finish_reason: Some(rejected_finish.into()),
        strategy: "max-min".into(),
        iteration: "iter-1".into(),
    }
}

fn write_pairs(path: &Path, rows: Vec<PairRow>) {
    let mut w = DatasetWriter::<PairRow>::create(path, &prov(), false).unwrap();
    w.write_all(rows).unwrap();
    w.finish().unwrap();
}

/// Rewrites a pairs file as schema version 1 wrote it: without the finish-reason columns.
fn as_version_1(src: &Path, dst: &Path) {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ArrowWriter;
    use parquet::file::metadata::KeyValue;
    use parquet::file::properties::WriterProperties;
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(src).unwrap()).unwrap().build().unwrap();
    let batches: Vec<_> = reader.map(|b| b.unwrap()).collect();
    let schema = batches[0].schema();
    let keep: Vec<usize> = (0..schema.fields().len()).filter(|&i| !schema.field(i).name().ends_with("_finish_reason")).collect();
    assert_eq!(keep.len(), schema.fields().len() - 2);
    let kv = vec![KeyValue::new("dno.schema".into(), "pairs".to_string()), KeyValue::new("dno.schema_version".into(), "1".to_string())];
    let props = WriterProperties::builder().set_key_value_metadata(Some(kv)).build();
    let projected = batches[0].project(&keep).unwrap();
    let mut w = ArrowWriter::try_new(std::fs::File::create(dst).unwrap(), projected.schema(), Some(props)).unwrap();
    for b in &batches {
        w.write(&b.project(&keep).unwrap()).unwrap();
    }
    w.close().unwrap();
}

/// Trains one DPO step on `pairs`; returns the step's token count and dno's stderr.
fn train_tokens(pairs: &Path, out: &Path) -> (i64, String) {
    let o = dno_cmd()
        .args(["train", "--model", s(&tiny_qwen2()), "--pairs", s(pairs), "--out", s(out), "--loss", "dpo", "--lr", "1e-4", "--batch-size", "1", "--epochs", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "dno train failed: {err}");
    let (_, m) = dno_data::read_validated::<MetricRow>(&[out.join("metrics.parquet")]).unwrap();
    assert_eq!(m.len(), 1);
    (m[0].tokens, err)
}

#[test]
fn train_closes_only_ended_responses_and_reads_version_1_pairs() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let mut tokens = Vec::new();
    for (name, c, r) in [("ll", "length", "length"), ("sl", "stop", "length"), ("ss", "stop", "stop"), ("rs", "reference", "stop_string")] {
        let f = p.join(format!("{name}.parquet"));
        write_pairs(&f, vec![pair(c, r)]);
        let (t, err) = train_tokens(&f, &p.join(format!("out-{name}")));
        assert!(!err.contains("records no finish reasons"), "{err}");
        tokens.push(t);
    }
    // Each ended response carries "<|im_end|>" + "\n" (2 tokens) that a truncated one lacks.
    assert_eq!(tokens[1] - tokens[0], 2, "{tokens:?}");
    assert_eq!(tokens[2] - tokens[0], 4, "{tokens:?}");
    assert_eq!(tokens[3], tokens[2], "reference and stop_string responses ended too");

    // A version-1 file (no finish-reason columns) reads as all ended, with one warning.
    let v1 = p.join("v1.parquet");
    as_version_1(&p.join("ll.parquet"), &v1);
    let (t, err) = train_tokens(&v1, &p.join("out-v1"));
    assert_eq!(t, tokens[2]);
    assert_eq!(err.matches("records no finish reasons").count(), 1, "{err}");
    let o = ok(&["validate", s(&v1)], p);
    assert!(o.contains("ok: 1 rows"), "{o}");

    // An unknown finish reason is one error line naming the row and the column.
    let bad = p.join("bad.parquet");
    write_pairs(&bad, vec![pair("stop", "eos")]);
    let e = fails(&["train", "--model", s(&tiny_qwen2()), "--pairs", s(&bad), "--out", s(&p.join("out-bad")), "--loss", "dpo"], p);
    assert!(e.contains("pairs row 0") && e.contains("rejected_finish_reason 'eos'"), "{e}");
}

fn sample(id: &str, response: &str, finish: &str) -> SampleRow {
    SampleRow {
        prompt_id: "p".into(),
        sample_id: id.into(),
        prompt: "question".into(),
        system: None,
        history: None,
        constraints: None,
        answer: None,
        response: response.into(),
        source: if finish == "reference" { "reference" } else { "policy" }.into(),
        policy: "test".into(),
        sample_index: 0,
        seed: 0,
        response_tokens: 0,
        finish_reason: finish.into(),
        logprob: None,
        repetitive: false,
    }
}

#[test]
fn pair_copies_finish_reasons_and_marks_replayed_version_1_pairs() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let samples = p.join("samples.parquet");
    write_samples(&samples, vec![sample("a", "best", "stop"), sample("b", "worst, cut", "length"), sample("g", "gold", "reference")]);
    let pref = |a: &str, b: &str, p_a: f64| PreferenceRow {
        prompt_id: "p".into(),
        sample_a: a.into(),
        sample_b: b.into(),
        p_a,
        judge: "j".into(),
        p_ab: None,
        p_ba: None,
        score_a: None,
        score_b: None,
        raw: None,
    };
    let prefs = p.join("prefs.parquet");
    let mut w = DatasetWriter::<PreferenceRow>::create(&prefs, &prov(), false).unwrap();
    w.write_all(vec![pref("a", "b", 1.0), pref("g", "b", 1.0), pref("a", "g", 0.5)]).unwrap();
    w.finish().unwrap();
    let out = p.join("pairs.parquet");
    ok(&["pair", "--samples", s(&samples), "--preferences", s(&prefs), "--out", s(&out), "--strategy", "soft"], p);
    let (_, rows) = dno_data::read_validated::<PairRow>(&[out.clone()]).unwrap();
    assert_eq!(rows.len(), 2);
    for r in &rows {
        let want = |id: &str| match id {
            "a" => "stop",
            "b" => "length",
            _ => "reference",
        };
        assert_eq!(r.chosen_finish_reason.as_deref(), Some(want(&r.chosen_id)));
        assert_eq!(r.rejected_finish_reason.as_deref(), Some(want(&r.rejected_id)));
        assert_eq!(r.rejected_id, "b");
    }
    assert_eq!(dno_data::read_metadata(&out).unwrap()["dno.schema_version"], "2");

    // Replaying a version-1 file: its pairs get finish reason `unknown` (train reads it as ended).
    let v1 = p.join("v1.parquet");
    as_version_1(&out, &v1);
    let out2 = p.join("pairs2.parquet");
    let o = dno_cmd()
        .current_dir(p)
        .args(["pair", "--samples", s(&samples), "--preferences", s(&prefs), "--out", s(&out2), "--strategy", "soft", "--iteration", "iter-2"])
        .args(["--replay", &format!("{}:0.5", s(&v1))])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("version-1 pairs file"), "{err}");
    let (_, rows) = dno_data::read_validated::<PairRow>(&[out2]).unwrap();
    let replayed: Vec<&PairRow> = rows.iter().filter(|r| r.iteration != "iter-2").collect();
    assert!(!replayed.is_empty());
    assert!(replayed.iter().all(|r| r.chosen_finish_reason.as_deref() == Some("unknown") && r.rejected_finish_reason.as_deref() == Some("unknown")));
    assert!(replayed.iter().all(|r| r.ended(true).unwrap() && r.ended(false).unwrap()));
}
