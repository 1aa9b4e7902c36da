//! `dno validate FILE...`: the full validation every stage runs on its inputs, on demand.

use anyhow::{anyhow, Result};
use dno_data::{read_metadata, resolve_inputs, Dataset, DatasetReader, Shard, META_SCHEMA};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Parquet files or shard directories.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// The schema to check against; by default the one named in the first file's metadata.
    #[arg(long)]
    pub schema: Option<Dataset>,
    /// Also require the files to be the output of `--shard I/N` (what a scheduler checks before
    /// skipping a finished shard).
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
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
    let reader = DatasetReader::open(dataset, &a.inputs)?;
    if let Some(want) = a.shard.as_deref().map(Shard::parse).transpose()? {
        let set = reader.shards().ok_or_else(|| anyhow!("{}: not a shard output (no dno.shard metadata), expected shard {want}", files[0].display()))?;
        for (i, f) in reader.files().iter().enumerate() {
            if set.shard_of_file(i) != want {
                return Err(anyhow!("{}: shard {}, expected shard {want}", f.display(), set.shard_of_file(i)));
            }
        }
    }
    reader.validate()?;
    println!("ok: {} rows of {} (schema v{}) in {} file(s)", reader.num_rows(), dataset, dataset.version(), files.len());
    Ok(())
}
