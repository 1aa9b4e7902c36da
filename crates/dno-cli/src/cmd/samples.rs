//! `dno samples import`: responses made outside `dno` (any JSONL, JSON, CSV or Parquet with
//! `prompt_id`, `prompt`, `response`) -> a samples file `annotate`, `pair` and `eval` read.
//! Defaults for the bookkeeping columns are in `dno_data::import::samples`.

use super::prompts::{write_rows, Input};
use anyhow::Result;
use dno_data::{import, Provenance, SampleRow};
use serde::Serialize;
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Turn external responses into a validated samples.parquet.
    Import(ImportArgs),
}

#[derive(clap::Args, Serialize)]
pub struct ImportArgs {
    #[command(flatten)]
    pub input: Input,
    /// Output samples Parquet file.
    #[arg(long, short)]
    pub out: PathBuf,
    /// The `policy` of records without a `policy` field.
    #[arg(long, default_value = import::DEFAULT_POLICY)]
    pub policy: String,
    /// Overwrite an existing output.
    #[arg(long)]
    pub force: bool,
}

pub fn run(c: Command) -> Result<()> {
    let Command::Import(a) = c;
    let mut prov = Provenance::new("samples import", &a)?;
    prov.add_inputs(std::slice::from_ref(&a.input.input))?;
    let rows = write_rows::<SampleRow>(&a.input.input, &a.out, &prov, a.force, import::samples(a.input.records()?, &a.policy))?;
    eprintln!("wrote {} samples to {}", rows, a.out.display());
    Ok(())
}
