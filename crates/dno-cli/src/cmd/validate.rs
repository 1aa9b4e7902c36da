//! `dno validate FILE...`: the full validation every stage runs on its inputs, on demand.

use anyhow::{anyhow, Result};
use dno_data::{read_metadata, resolve_inputs, Dataset, DatasetReader, META_SCHEMA};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Parquet files or shard directories.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// The schema to check against; by default the one named in the first file's metadata.
    #[arg(long)]
    pub schema: Option<Dataset>,
}

pub fn run(a: Args) -> Result<()> {
    let files = resolve_inputs(&a.inputs)?;
    let dataset = match a.schema {
        Some(d) => d,
        None => {
            let md = read_metadata(&files[0])?;
            let name = md.get(META_SCHEMA).ok_or_else(|| anyhow!("{}: no dno.schema metadata; pass --schema NAME", files[0].display()))?;
            name.parse()?
        }
    };
    let reader = DatasetReader::open(dataset, &files)?;
    reader.validate()?;
    println!("ok: {} rows of {} (schema v{}) in {} file(s)", reader.num_rows(), dataset, dataset.version(), files.len());
    Ok(())
}
