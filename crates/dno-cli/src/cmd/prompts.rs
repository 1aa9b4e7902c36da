//! `dno prompts import`: JSONL or CSV -> prompts.parquet, streamed, with column mapping.

use anyhow::{bail, Context, Result};
use dno_data::{DatasetWriter, PromptRow, Provenance};
use serde::Serialize;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Turn a JSONL or CSV file into a validated prompts.parquet.
    Import(ImportArgs),
}

#[derive(clap::Args, Serialize)]
pub struct ImportArgs {
    /// Input file: `.jsonl`/`.json` (one object per line) or `.csv`.
    pub input: PathBuf,
    /// Output prompts Parquet file.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Field holding the user turn.
    #[arg(long, default_value = "prompt")]
    pub prompt_field: String,
    /// Field holding a unique id; by default `prompt_id` or `id` when present, else the 0-based row number.
    #[arg(long)]
    pub id_field: Option<String>,
    /// Field holding a gold/teacher answer (the `reference` column).
    #[arg(long)]
    pub reference_field: Option<String>,
    /// Field holding ground truth for verifiers (the `answer` column).
    #[arg(long)]
    pub answer_field: Option<String>,
    /// Field holding instruction-following constraints (the `constraints` column): a JSON array,
    /// or a string holding one (see schemas/constraints.md); validated on import.
    #[arg(long)]
    pub constraints_field: Option<String>,
    /// Field holding a system message.
    #[arg(long)]
    pub system_field: Option<String>,
    /// Input format; guessed from the extension when omitted.
    #[arg(long, value_parser = ["jsonl", "csv"])]
    pub format: Option<String>,
    /// Overwrite an existing output.
    #[arg(long)]
    pub force: bool,
}

pub fn run(c: Command) -> Result<()> {
    match c {
        Command::Import(a) => import(a),
    }
}

fn value_to_string(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// One input record as field -> value, plus its line number for error messages.
type Record = (u64, HashMap<String, Option<String>>);

fn jsonl_records(path: &Path) -> Result<Box<dyn Iterator<Item = Result<Record>>>> {
    let f = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let path = path.to_path_buf();
    let it = BufReader::new(f).lines().enumerate().filter_map(move |(i, line)| {
        let n = i as u64 + 1;
        let line = match line {
            Ok(l) => l,
            Err(e) => return Some(Err(anyhow::anyhow!("{}: line {n}: {e}", path.display()))),
        };
        if line.trim().is_empty() {
            return None;
        }
        Some(match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&line) {
            Ok(obj) => Ok((n, obj.iter().map(|(k, v)| (k.clone(), value_to_string(v))).collect())),
            Err(e) => Err(anyhow::anyhow!("{}: line {n}: not a JSON object: {e}", path.display())),
        })
    });
    Ok(Box::new(it))
}

fn csv_records(path: &Path) -> Result<Box<dyn Iterator<Item = Result<Record>>>> {
    let mut rdr = csv::ReaderBuilder::new().flexible(false).from_path(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let headers: Vec<String> = rdr.headers().with_context(|| format!("{}: cannot read CSV header", path.display()))?.iter().map(String::from).collect();
    let path = path.to_path_buf();
    let it = rdr.into_records().map(move |r| {
        let r = r.map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let line = r.position().map(|p| p.line()).unwrap_or(0);
        Ok((line, headers.iter().cloned().zip(r.iter().map(|s| Some(s.to_string()))).collect()))
    });
    Ok(Box::new(it))
}

fn import(a: ImportArgs) -> Result<()> {
    let format = match &a.format {
        Some(f) => f.clone(),
        None => match a.input.extension().and_then(|e| e.to_str()) {
            Some("csv") => "csv".into(),
            Some("jsonl" | "json" | "ndjson") => "jsonl".into(),
            _ => bail!("{}: cannot tell the format from the extension; pass --format jsonl|csv", a.input.display()),
        },
    };
    let mut prov = Provenance::new("prompts import", &a)?;
    prov.add_inputs(std::slice::from_ref(&a.input))?;
    let records = if format == "csv" { csv_records(&a.input)? } else { jsonl_records(&a.input)? };
    let mut writer = DatasetWriter::<PromptRow>::create(&a.out, &prov, a.force)?;
    let mut seen: HashMap<String, u64> = HashMap::new();
    let input = a.input.display().to_string();
    let get = |rec: &HashMap<String, Option<String>>, field: &Option<String>, n: u64, what: &str| -> Result<Option<String>> {
        match field {
            None => Ok(None),
            Some(f) => match rec.get(f) {
                Some(v) => Ok(v.clone()),
                None => bail!("{input}: line {n}: missing field '{f}' (given by --{what}-field)"),
            },
        }
    };
    for (row, rec) in records.enumerate() {
        let (n, rec) = rec?;
        let prompt = match rec.get(&a.prompt_field) {
            Some(Some(p)) => p.clone(),
            Some(None) => bail!("{input}: line {n}: field '{}' is null", a.prompt_field),
            None => bail!("{input}: line {n}: missing field '{}' (set --prompt-field)", a.prompt_field),
        };
        let id = match &a.id_field {
            Some(f) => match rec.get(f) {
                Some(Some(v)) => v.clone(),
                _ => bail!("{input}: line {n}: missing or null id field '{f}'"),
            },
            None => match rec.get("prompt_id").or_else(|| rec.get("id")) {
                Some(Some(v)) => v.clone(),
                _ => row.to_string(),
            },
        };
        if let Some(first) = seen.insert(id.clone(), n) {
            bail!("{input}: line {n}: duplicate prompt_id '{id}' (first on line {first})");
        }
        let constraints = get(&rec, &a.constraints_field, n, "constraints")?;
        if let Some(c) = &constraints {
            if let Err(e) = dno_oracle::constraints::parse(c) {
                bail!("{input}: line {n}: prompt '{id}': field '{}': {e:#}", a.constraints_field.as_deref().unwrap_or(""));
            }
        }
        writer.write(PromptRow {
            prompt_id: id,
            prompt,
            system: get(&rec, &a.system_field, n, "system")?,
            reference: get(&rec, &a.reference_field, n, "reference")?,
            answer: get(&rec, &a.answer_field, n, "answer")?,
            constraints,
        })?;
    }
    if writer.rows_written() == 0 {
        bail!("{input}: no prompts found");
    }
    let rows = writer.finish()?;
    eprintln!("wrote {} prompts to {}", rows, a.out.display());
    Ok(())
}
