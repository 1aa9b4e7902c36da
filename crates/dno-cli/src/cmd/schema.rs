use anyhow::Result;
use dno_data::Dataset;

#[derive(clap::Args)]
pub struct Args {
    /// prompts | samples | preferences | pairs | eval | metrics
    pub name: Dataset,
    /// Print the Arrow schema as JSON instead of the markdown table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> Result<()> {
    if a.json {
        let cols: Vec<serde_json::Value> = a
            .name
            .columns()
            .iter()
            .map(|c| serde_json::json!({"name": c.name, "type": c.ty.name(), "nullable": c.nullable, "optional": c.optional, "since": c.since, "doc": c.doc}))
            .collect();
        let v = serde_json::json!({"schema": a.name.name(), "version": a.name.version(), "key": a.name.key(), "columns": cols});
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", a.name.markdown());
    }
    Ok(())
}
