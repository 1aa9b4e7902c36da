//! Parquet I/O: round trips, validation errors that name file/column/row, atomic outputs,
//! shard directories, and the schema docs under `schemas/` matching the code.

use dno_data::*;
use std::path::{Path, PathBuf};

fn prov() -> Provenance {
    Provenance::new("test", &serde_json::json!({"k": 1})).unwrap()
}

fn prompt(id: &str, text: &str) -> PromptRow {
    PromptRow { prompt_id: id.into(), prompt: text.into(), system: None, history: None, reference: Some(format!("ref {id}")), answer: None, constraints: None }
}

fn write_prompts(path: &Path, rows: Vec<PromptRow>) {
    let mut w = DatasetWriter::<PromptRow>::create(path, &prov(), true).unwrap();
    w.write_all(rows).unwrap();
    w.finish().unwrap();
}

fn pref(a: &str, b: &str, p: f64) -> PreferenceRow {
    PreferenceRow { prompt_id: "p".into(), sample_a: a.into(), sample_b: b.into(), p_a: p, judge: "j".into(), p_ab: None, p_ba: None, score_a: None, score_b: None, raw: None }
}

fn err_of<T: Row>(paths: &[PathBuf]) -> String {
    let r = DatasetReader::open(T::DATASET, paths).and_then(|r| {
        r.validate()?;
        r.read_all::<T>()
    });
    format!("{:#}", r.err().expect("expected an error"))
}

#[test]
fn round_trip_with_metadata_and_provenance() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("prompts.parquet");
    let rows: Vec<PromptRow> = (0..10_000).map(|i| prompt(&format!("id{i}"), &format!("héllo {i} 你好 \n\t"))).collect();
    write_prompts(&f, rows.clone());
    let (reader, back) = read_validated::<PromptRow>(&[f.clone()]).unwrap();
    assert_eq!(reader.num_rows(), 10_000);
    assert_eq!(back, rows);
    let md = read_metadata(&f).unwrap();
    assert_eq!(md.get(META_SCHEMA).map(String::as_str), Some("prompts"));
    assert_eq!(md.get(META_VERSION).map(String::as_str), Some("2"));
    let p = read_provenance(&f).unwrap().unwrap();
    assert_eq!(p.stage, "test");
    assert_eq!(p.config["k"], 1);
    // no temp files left behind
    let names: Vec<String> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names, vec!["prompts.parquet".to_string()]);
}

#[test]
fn existing_output_needs_force_and_unfinished_writer_leaves_nothing() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("p.parquet");
    write_prompts(&f, vec![prompt("a", "x")]);
    let e = DatasetWriter::<PromptRow>::create(&f, &prov(), false).err().unwrap();
    assert!(format!("{e}").contains("already exists"), "{e}");
    let g = d.path().join("q.parquet");
    {
        let mut w = DatasetWriter::<PromptRow>::create(&g, &prov(), false).unwrap();
        w.write(prompt("a", "x")).unwrap();
        // dropped without finish(), as when a stage fails midway
    }
    assert!(!g.exists());
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
}

#[test]
fn duplicate_prompt_id_is_rejected_with_row_numbers() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("p.parquet");
    write_prompts(&f, vec![prompt("a", "1"), prompt("b", "2"), prompt("a", "3")]);
    let e = err_of::<PromptRow>(&[f]);
    assert!(e.contains("row 2") && e.contains("duplicate prompt_id 'a'") && e.contains("row 0"), "{e}");
}

#[test]
fn duplicates_across_shards_are_found() {
    let d = tempfile::tempdir().unwrap();
    write_prompts(&d.path().join("part-0.parquet"), vec![prompt("a", "1")]);
    write_prompts(&d.path().join("part-1.parquet"), vec![prompt("a", "2")]);
    let e = err_of::<PromptRow>(&[d.path().to_path_buf()]);
    assert!(e.contains("part-1.parquet") && e.contains("duplicate"), "{e}");
}

#[test]
fn shard_directory_reads_all_parts_in_order() {
    let d = tempfile::tempdir().unwrap();
    write_prompts(&d.path().join("part-00001.parquet"), vec![prompt("b", "2")]);
    write_prompts(&d.path().join("part-00000.parquet"), vec![prompt("a", "1")]);
    std::fs::write(d.path().join(".part-00002.parquet.123.tmp"), b"junk").unwrap();
    let (_, rows) = read_validated::<PromptRow>(&[d.path().to_path_buf()]).unwrap();
    assert_eq!(rows.iter().map(|r| r.prompt_id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
}

#[test]
fn truncated_file_is_rejected() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("p.parquet");
    write_prompts(&f, (0..100).map(|i| prompt(&i.to_string(), "x")).collect());
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    let e = err_of::<PromptRow>(&[f]);
    assert!(e.contains("p.parquet") && e.contains("not a valid Parquet file"), "{e}");
}

#[test]
fn wrong_schema_name_is_rejected() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("p.parquet");
    write_prompts(&f, vec![prompt("a", "x")]);
    let e = err_of::<SampleRow>(&[f]);
    assert!(e.contains("'prompts' file") && e.contains("'samples' file was expected"), "{e}");
}

/// Write an arbitrary Arrow batch as Parquet (what a user's own tool might produce).
fn write_raw(path: &Path, batch: arrow_array::RecordBatch, kv: Vec<(&str, &str)>) {
    use parquet::file::metadata::KeyValue;
    let props = parquet::file::properties::WriterProperties::builder()
        .set_key_value_metadata(Some(kv.into_iter().map(|(k, v)| KeyValue::new(k.into(), v.to_string())).collect()))
        .build();
    let mut w = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn batch(cols: Vec<(&str, arrow_array::ArrayRef)>) -> arrow_array::RecordBatch {
    arrow_array::RecordBatch::try_from_iter(cols).unwrap()
}

use arrow_array::{ArrayRef, Float64Array, Int64Array, LargeStringArray, StringArray};
use std::sync::Arc;

#[test]
fn missing_column_wrong_type_null_and_version_are_named() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("nokey.parquet");
    write_raw(&f, batch(vec![("prompt", Arc::new(StringArray::from(vec!["x"])) as ArrayRef)]), vec![]);
    let e = err_of::<PromptRow>(&[f]);
    assert!(e.contains("nokey.parquet") && e.contains("missing column 'prompt_id'"), "{e}");

    let f = d.path().join("type.parquet");
    write_raw(
        &f,
        batch(vec![("prompt_id", Arc::new(Int64Array::from(vec![1])) as ArrayRef), ("prompt", Arc::new(StringArray::from(vec!["x"])) as ArrayRef)]),
        vec![],
    );
    let e = err_of::<PromptRow>(&[f]);
    assert!(e.contains("column 'prompt_id' has type Int64") && e.contains("utf8"), "{e}");

    let f = d.path().join("null.parquet");
    write_raw(
        &f,
        batch(vec![
            ("prompt_id", Arc::new(StringArray::from(vec![Some("a"), Some("b")])) as ArrayRef),
            ("prompt", Arc::new(StringArray::from(vec![Some("x"), None])) as ArrayRef),
        ]),
        vec![],
    );
    let e = err_of::<PromptRow>(&[f]);
    assert!(e.contains("row 1: column 'prompt' is null"), "{e}");

    let f = d.path().join("ver.parquet");
    write_raw(
        &f,
        batch(vec![("prompt_id", Arc::new(StringArray::from(vec!["a"])) as ArrayRef), ("prompt", Arc::new(StringArray::from(vec!["x"])) as ArrayRef)]),
        vec![(META_SCHEMA, "prompts"), (META_VERSION, "99")],
    );
    let e = err_of::<PromptRow>(&[f]);
    assert!(e.contains("schema version 99 is not supported"), "{e}");
}

#[test]
fn polars_style_large_strings_and_extra_columns_are_accepted() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("polars.parquet");
    write_raw(
        &f,
        batch(vec![
            ("prompt_id", Arc::new(LargeStringArray::from(vec!["a", "b"])) as ArrayRef),
            ("prompt", Arc::new(LargeStringArray::from(vec!["x", "y"])) as ArrayRef),
            ("category", Arc::new(LargeStringArray::from(vec!["m", "n"])) as ArrayRef),
        ]),
        vec![],
    );
    let (_, rows) = read_validated::<PromptRow>(&[f]).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].prompt, "y");
    assert_eq!(rows[1].reference, None);
}

#[test]
fn probability_outside_unit_interval_is_rejected() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("prefs.parquet");
    let mut w = DatasetWriter::<PreferenceRow>::create(&f, &prov(), false).unwrap();
    w.write_all(vec![pref("a", "b", 0.5), pref("a", "c", 1.5)]).unwrap();
    w.finish().unwrap();
    let e = err_of::<PreferenceRow>(&[f]);
    assert!(e.contains("row 1: column 'p_a' = 1.5 is outside [0, 1]"), "{e}");
    let _ = Float64Array::from(vec![0.0]);
}

#[test]
fn part_store_resumes_and_refuses_other_runs() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out.parquet");
    let mut s = PartStore::open(&out, "run-1", false).unwrap();
    s.save(vec![prompt("a", "1")], &prov()).unwrap();
    s.save(vec![prompt("b", "2")], &prov()).unwrap();
    drop(s);
    let s = PartStore::open(&out, "run-1", false).unwrap();
    let done: Vec<PromptRow> = s.completed().unwrap();
    assert_eq!(done.len(), 2);
    let e = PartStore::open(&out, "run-2", false).err().unwrap();
    assert!(format!("{e}").contains("different inputs or settings"), "{e}");
    let s = PartStore::open(&out, "run-2", true).unwrap();
    assert!(s.completed::<PromptRow>().unwrap().is_empty());
}

#[test]
fn schema_docs_match_code() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
    for ds in Dataset::ALL {
        let path = dir.join(format!("{}.md", ds.name()));
        let doc = std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("{} is missing; regenerate with `dno schema {ds} > {}`", path.display(), path.display()));
        assert_eq!(doc, ds.markdown(), "{} disagrees with the code; regenerate it with `dno schema {ds}`", path.display());
    }
}

#[test]
fn stable_hash_and_shards_are_stable() {
    assert_eq!(stable_hash(&["a", "b"]), stable_hash(&["a", "b"]));
    assert_ne!(stable_hash(&["ab"]), stable_hash(&["a", "b"]));
    // pinned: shard assignment must never change between releases
    assert_eq!(stable_hash(&["prompt-1"]), 888_298_369_278_151_746u64, "update only with a schema version bump");
    let counts = (0..1000).fold([0u32; 4], |mut c, i| {
        c[shard_of(&format!("p{i}"), 4) as usize] += 1;
        c
    });
    assert!(counts.iter().all(|&c| c > 200), "{counts:?}");
}

/// Pairs schema v2 added `chosen_finish_reason` / `rejected_finish_reason`: a version-1 file
/// without them still reads (as `None`), a version-2 file (or one without dno metadata) must
/// have them, and a null in a v2 file is named.
#[test]
fn pairs_version_1_files_without_finish_reasons_still_read() {
    let d = tempfile::tempdir().unwrap();
    let cols = |finish: Option<Vec<Option<&str>>>| {
        let mut v: Vec<(&str, ArrayRef)> = Vec::new();
        for c in Dataset::Pairs.columns() {
            let a: ArrayRef = match (c.name, c.ty) {
                ("chosen_finish_reason" | "rejected_finish_reason", _) => match &finish {
                    Some(f) => Arc::new(StringArray::from(f.clone())),
                    None => continue,
                },
                ("history", _) => continue,
                ("chosen_id", _) => Arc::new(StringArray::from(vec!["c1", "c2"])),
                (_, schema::ColType::Utf8) => Arc::new(StringArray::from(vec!["x", "y"])),
                (_, schema::ColType::Float64) => Arc::new(Float64Array::from(vec![1.0, 0.5])),
                other => panic!("unexpected pairs column {other:?}"),
            };
            v.push((c.name, a));
        }
        batch(v)
    };
    let v1 = d.path().join("v1.parquet");
    write_raw(&v1, cols(None), vec![(META_SCHEMA, "pairs"), (META_VERSION, "1")]);
    let (r, rows) = read_validated::<PairRow>(&[v1]).unwrap();
    assert_eq!(r.versions(), &[1]);
    assert_eq!((rows[0].chosen_finish_reason.clone(), rows[1].rejected_finish_reason.clone()), (None, None));
    assert!(rows[0].ended(true).unwrap() && rows[1].ended(false).unwrap());

    let v2 = d.path().join("v2.parquet");
    write_raw(&v2, cols(None), vec![(META_SCHEMA, "pairs"), (META_VERSION, "2")]);
    let e = err_of::<PairRow>(&[v2]);
    assert!(e.contains("missing column 'chosen_finish_reason' (required by the pairs schema v2"), "{e}");
    let bare = d.path().join("bare.parquet");
    write_raw(&bare, cols(None), vec![]);
    assert!(err_of::<PairRow>(&[bare]).contains("missing column 'chosen_finish_reason'"));

    let null = d.path().join("null.parquet");
    write_raw(&null, cols(Some(vec![Some("stop"), None])), vec![(META_SCHEMA, "pairs"), (META_VERSION, "2")]);
    let e = err_of::<PairRow>(&[null]);
    assert!(e.contains("row 1: column 'chosen_finish_reason' is null"), "{e}");

    let ok = d.path().join("ok.parquet");
    write_raw(&ok, cols(Some(vec![Some("length"), Some("stop_string")])), vec![(META_SCHEMA, "pairs"), (META_VERSION, "2")]);
    let (_, rows) = read_validated::<PairRow>(&[ok]).unwrap();
    assert_eq!(rows[0].chosen_finish_reason.as_deref(), Some("length"));
    assert!(!rows[0].ended(true).unwrap() && rows[1].ended(true).unwrap());
    let mut bad = rows[0].clone();
    bad.rejected_finish_reason = Some("eos".into());
    assert!(bad.ended(false).unwrap_err().to_string().contains("rejected_finish_reason 'eos'"));

    let v3 = d.path().join("v3.parquet");
    write_raw(&v3, cols(Some(vec![Some("stop"), Some("stop")])), vec![(META_SCHEMA, "pairs"), (META_VERSION, "3")]);
    assert!(err_of::<PairRow>(&[v3]).contains("pairs schema version 3 is not supported (this dno reads versions 1 to 2)"));
}
