//! `dno merge`: one file from a stage's `--shard I/N` outputs, equal to the unsharded run's
//! output row for row and in the same order (`dno_data::shard`). Every stage also reads a shard
//! directory directly; merging is for tools that want one file, and for eval, whose summary
//! (win-rate, CI, LC) needs all comparisons: it is computed here as an unsharded `dno eval` does.

use dno_eval::stage::{comparison, summary_lines, EVAL_OPTIONS_KEY, SUMMARY_KEY};
use anyhow::{anyhow, bail, Context, Result};
use dno_data::{read_metadata, resolve_inputs, Dataset, DatasetReader, DatasetWriter, EvalRow, PairRow, PreferenceRow, PromptRow, Provenance, Row, SampleRow, META_SCHEMA};
use dno_eval::EvalOptions;
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Serialize)]
pub struct Args {
    /// The shard outputs: a directory of them, or the files.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Output Parquet file.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Overwrite an existing output.
    #[arg(long)]
    pub force: bool,
}

pub fn run(a: Args) -> Result<()> {
    dno_data::check_output(&a.out, a.force)?;
    let files = resolve_inputs(&a.inputs)?;
    let md = read_metadata(&files[0])?;
    let dataset: Dataset = md.get(META_SCHEMA).ok_or_else(|| anyhow!("{}: no dno.schema metadata (not written by dno)", files[0].display()))?.parse()?;
    let reader = DatasetReader::open(dataset, &files)?;
    if reader.shards().is_none() {
        bail!("{}: not a shard output (no dno.shard metadata); dno merge joins the outputs of --shard runs", files[0].display());
    }
    reader.validate()?;
    let mut prov = Provenance::new("merge", &a)?;
    prov.add_inputs(reader.files())?;
    let metas: Vec<_> = reader.files().iter().map(|f| read_metadata(f)).collect::<Result<_>>()?;
    let accounting = merged_accounting(&metas);
    let n = match dataset {
        Dataset::Prompts => write::<PromptRow>(&reader, &a, &prov, accounting, vec![])?,
        Dataset::Samples => write::<SampleRow>(&reader, &a, &prov, accounting, vec![])?,
        Dataset::Preferences => write::<PreferenceRow>(&reader, &a, &prov, accounting, vec![])?,
        Dataset::Pairs => write::<PairRow>(&reader, &a, &prov, accounting, vec![])?,
        Dataset::Eval => {
            let mut opts: Option<EvalOptions> = None;
            for (f, m) in reader.files().iter().zip(&metas) {
                let s = m.get(EVAL_OPTIONS_KEY).ok_or_else(|| anyhow!("{}: no {EVAL_OPTIONS_KEY} metadata (not written by dno eval --shard?)", f.display()))?;
                let o: EvalOptions = serde_json::from_str(s).with_context(|| format!("{}: metadata {EVAL_OPTIONS_KEY} is not valid", f.display()))?;
                match &opts {
                    Some(first) if *first != o => bail!("{}: eval options {s} differ from {}'s; shards of one eval run share them", f.display(), reader.files()[0].display()),
                    _ => opts = Some(o),
                }
            }
            let opts = opts.expect("at least one file");
            let rows: Vec<EvalRow> = reader.read_all()?;
            let comps: Vec<_> = rows.iter().map(comparison).collect();
            let summary = dno_eval::summarize(&comps, &opts).map_err(|e| anyhow!("eval summary: {e:#}"))?;
            let extra = vec![(SUMMARY_KEY, serde_json::to_string(&summary)?), (EVAL_OPTIONS_KEY, serde_json::to_string(&opts)?)];
            let n = write_rows(rows, &a, &prov, accounting, extra)?;
            for l in summary_lines(&summary, &a.out) {
                eprintln!("{l}");
            }
            n
        }
        Dataset::Metrics => bail!("{}: metrics are not sharded", files[0].display()),
    };
    eprintln!("merged {} shards of {dataset}: {n} rows -> {}", reader.files().len(), a.out.display());
    Ok(())
}

fn write<T: Row>(reader: &DatasetReader, a: &Args, prov: &Provenance, accounting: Option<String>, extra: Vec<(&str, String)>) -> Result<u64> {
    write_rows(reader.read_all::<T>()?, a, prov, accounting, extra)
}

fn write_rows<T: Row>(rows: Vec<T>, a: &Args, prov: &Provenance, accounting: Option<String>, extra: Vec<(&str, String)>) -> Result<u64> {
    let mut w = DatasetWriter::<T>::create(&a.out, prov, a.force)?;
    w.write_all(rows)?;
    for (k, v) in extra {
        w.set_metadata(k, v);
    }
    if let Some(acc) = accounting {
        w.set_metadata("dno.accounting", acc);
    }
    w.finish().with_context(|| format!("writing {}", Path::new(&a.out).display()))
}

/// The shards' `dno.accounting` (annotate and eval): counts and seconds summed, the
/// first-position win-rate averaged over judgments, other fields from the first shard.
fn merged_accounting(metas: &[std::collections::BTreeMap<String, String>]) -> Option<String> {
    let accs: Vec<serde_json::Map<String, serde_json::Value>> =
        metas.iter().filter_map(|m| m.get("dno.accounting")).filter_map(|s| serde_json::from_str(s).ok()).collect();
    let first = accs.first()?.clone();
    let mut out = serde_json::Map::new();
    for (k, v) in first {
        let merged = if k == "first_position_win_rate" {
            let (mut sum, mut n) = (0.0, 0.0);
            for acc in &accs {
                if let (Some(p), Some(j)) = (acc.get(&k).and_then(|x| x.as_f64()), acc.get("judgments").and_then(|x| x.as_f64())) {
                    sum += p * j;
                    n += j;
                }
            }
            if n > 0.0 { serde_json::json!(sum / n) } else { serde_json::Value::Null }
        } else if v.is_u64() {
            serde_json::json!(accs.iter().filter_map(|acc| acc.get(&k).and_then(|x| x.as_u64())).sum::<u64>())
        } else if v.is_f64() {
            serde_json::json!(accs.iter().filter_map(|acc| acc.get(&k).and_then(|x| x.as_f64())).sum::<f64>())
        } else {
            v
        };
        out.insert(k, merged);
    }
    Some(serde_json::Value::Object(out).to_string())
}
