use anyhow::{anyhow, Context, Result};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// A Parquet file written by dno (or any Parquet file).
    pub file: PathBuf,
    /// How many rows to print.
    #[arg(short = 'n', long, default_value_t = 5)]
    pub rows: usize,
    /// Truncate printed cell values to this many characters.
    #[arg(long, default_value_t = 80)]
    pub width: usize,
}

pub fn run(a: Args) -> Result<()> {
    let f = std::fs::File::open(&a.file).with_context(|| format!("{}: cannot open", a.file.display()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(f)
        .map_err(|e| anyhow!("{}: not a valid Parquet file (truncated or corrupt?): {e}", a.file.display()))?;
    let md = builder.metadata().clone();
    let schema = builder.schema().clone();
    let kv = dno_data::read_metadata(&a.file)?;
    println!("file: {}", a.file.display());
    println!(
        "schema: {} (version {})",
        kv.get(dno_data::META_SCHEMA).map(String::as_str).unwrap_or("(not a dno file)"),
        kv.get(dno_data::META_VERSION).map(String::as_str).unwrap_or("-")
    );
    println!("rows: {}  row groups: {}", md.file_metadata().num_rows(), md.num_row_groups());
    println!("columns:");
    for f in schema.fields() {
        println!("  {:<20} {:<12} {}", f.name(), f.data_type().to_string(), if f.is_nullable() { "nullable" } else { "non-null" });
    }
    for (k, v) in &kv {
        if k == "ARROW:schema" || k == dno_data::META_SCHEMA || k == dno_data::META_VERSION {
            continue;
        }
        let pretty = serde_json::from_str::<serde_json::Value>(v).ok().and_then(|j| serde_json::to_string_pretty(&j).ok()).unwrap_or(v.clone());
        println!("{k}:");
        for line in pretty.lines() {
            println!("  {line}");
        }
    }
    if a.rows > 0 {
        let mut reader = builder.with_batch_size(a.rows).build().map_err(|e| anyhow!("{}: {e}", a.file.display()))?;
        if let Some(batch) = reader.next() {
            let batch = batch.map_err(|e| anyhow!("{}: cannot read data (truncated or corrupt?): {e}", a.file.display()))?;
            println!("first {} rows:", batch.num_rows().min(a.rows));
            let opts = FormatOptions::default().with_null("null");
            let fmts: Vec<ArrayFormatter> =
                batch.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &opts)).collect::<Result<_, _>>()?;
            for i in 0..batch.num_rows().min(a.rows) {
                println!("  [{i}]");
                for (f, fmt) in schema.fields().iter().zip(&fmts) {
                    let mut s = fmt.value(i).to_string().replace('\n', "\\n");
                    if s.chars().count() > a.width {
                        s = s.chars().take(a.width).collect::<String>() + "...";
                    }
                    println!("    {:<18} {s}", f.name());
                }
            }
        }
    }
    Ok(())
}
