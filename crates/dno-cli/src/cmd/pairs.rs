//! `dno pairs import`: a `prompt` / `chosen` / `rejected` preference dataset (TRL's format, plain
//! strings or chat messages; UltraFeedback-binarized) -> a pairs file `dno train` takes directly
//! (offline DPO). The mapping is in `dno_data::import::pairs`.

use super::prompts::{write_rows, Input};
use anyhow::Result;
use dno_data::{import, PairRow, Provenance};
use serde::Serialize;
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Turn a preference dataset into a validated pairs.parquet.
    Import(ImportArgs),
}

#[derive(clap::Args, Serialize)]
pub struct ImportArgs {
    #[command(flatten)]
    pub input: Input,
    /// Output pairs Parquet file.
    #[arg(long, short)]
    pub out: PathBuf,
    /// The `iteration` label of the imported pairs.
    #[arg(long, default_value = "import")]
    pub iteration: String,
    /// Overwrite an existing output.
    #[arg(long)]
    pub force: bool,
}

pub fn run(c: Command) -> Result<()> {
    let Command::Import(a) = c;
    let mut prov = Provenance::new("pairs import", &a)?;
    prov.add_inputs(std::slice::from_ref(&a.input.input))?;
    let rows = write_rows::<PairRow>(&a.input.input, &a.out, &prov, a.force, import::pairs(a.input.records()?, &a.iteration))?;
    eprintln!("wrote {} pairs to {}", rows, a.out.display());
    Ok(())
}
