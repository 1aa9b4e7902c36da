//! `dno report RUN_DIR...`: the per-iteration table and plot from every eval file of one or more
//! runs; each run is one series in the plot (x = iteration, π₁ at 0).

use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// Run directory holding `iter-<t>/eval.parquet` files (or eval files given directly).
    #[arg(required = true, num_args = 1..)]
    pub inputs: Vec<PathBuf>,
    /// Where to write report.md and winrate.svg (default: RUN_DIR/report).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

use dno_eval::stage::SUMMARY_KEY;

/// Eval files of a run, ordered by iteration: `iter-<t>/eval*.parquet` sorted by t.
fn find_eval_files(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut found = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort_by_key(|p| iteration_number(p).unwrap_or(u64::MAX));
    for p in entries {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&p)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("eval") && n.ends_with(".parquet")))
                .filter(|f| dno_data::read_metadata(f).is_ok_and(|m| m.get(dno_data::META_SCHEMA).is_some_and(|s| s == "eval")))
                .collect();
            files.sort();
            for f in files {
                let label = p.file_name().and_then(|n| n.to_str()).unwrap_or("?").to_string();
                let stem = f.file_stem().and_then(|n| n.to_str()).unwrap_or("eval");
                found.push((if stem == "eval" { label } else { format!("{label}/{}", stem.trim_start_matches("eval").trim_start_matches(['-', '_'])) }, f));
            }
        }
    }
    Ok(found)
}

fn iteration_number(p: &Path) -> Option<u64> {
    let name = p.file_name()?.to_str()?;
    let digits: String = name.chars().rev().take_while(|c| c.is_ascii_digit()).collect::<Vec<_>>().into_iter().rev().collect();
    digits.parse().ok()
}

pub fn load_summary(file: &Path) -> Result<dno_eval::EvalSummary> {
    let md = dno_data::read_metadata(file)?;
    let s = md.get(SUMMARY_KEY).ok_or_else(|| anyhow!("{}: no '{SUMMARY_KEY}' metadata (not written by dno eval?)", file.display()))?;
    serde_json::from_str(s).with_context(|| format!("{}: metadata '{SUMMARY_KEY}' is not a valid summary", file.display()))
}

pub fn run(a: Args) -> Result<()> {
    // (table label, run = plot series, iteration, file)
    let mut files: Vec<(String, String, u32, PathBuf)> = Vec::new();
    let several = a.inputs.len() > 1;
    for input in &a.inputs {
        if input.is_dir() {
            let name = input.file_name().and_then(|n| n.to_str()).unwrap_or("run").to_string();
            for (i, (label, f)) in find_eval_files(input)?.into_iter().enumerate() {
                let iteration = f.parent().and_then(iteration_number).map_or(i as u32 + 1, |t| t as u32);
                // Several eval files of one iteration (`eval-greedy.parquet`) are separate series.
                let stem = label.split_once('/').map(|(_, s)| format!("/{s}")).unwrap_or_default();
                let run = format!("{name}{stem}");
                files.push((if several { format!("{name}/{label}") } else { label }, run, iteration, f));
            }
        } else {
            let label = input.parent().and_then(|d| d.file_name()).and_then(|n| n.to_str()).unwrap_or("eval").to_string();
            let iteration = input.parent().and_then(iteration_number).map_or(files.len() as u32 + 1, |t| t as u32);
            files.push((label, "eval".to_string(), iteration, input.clone()));
        }
    }
    if files.is_empty() {
        bail!("{}: no iter-*/eval*.parquet files found", a.inputs[0].display());
    }
    let mut entries = Vec::new();
    for (label, run, iteration, f) in &files {
        entries.push(dno_eval::ReportEntry::new(label.clone(), run.clone(), *iteration, load_summary(f)?));
    }
    let out = a.out.clone().unwrap_or_else(|| if a.inputs[0].is_dir() { a.inputs[0].join("report") } else { PathBuf::from("report") });
    let files = dno_eval::render_report(&entries, &out)?;
    print!("{}", files.markdown);
    eprintln!("report: {} and {}", files.markdown_path.display(), files.svg_path.display());
    Ok(())
}
