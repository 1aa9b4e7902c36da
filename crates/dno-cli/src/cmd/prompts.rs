//! `dno prompts import`: JSONL, JSON, CSV or Parquet -> prompts.parquet, streamed, with column
//! mapping. The record shapes (plain prompts, chat `messages`, Alpaca / UltraFeedback
//! `instruction`) are in `dno_data::import`.

use anyhow::{bail, Context, Result};
use dno_data::import::{self, Format, PromptFields};
use dno_data::{DatasetWriter, PromptRow, Provenance};
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Turn a JSONL, JSON, CSV or Parquet file (or a directory of Parquet shards) into a validated prompts.parquet.
    Import(ImportArgs),
    /// Print each prompt as the model sees it (the chat template's text and token ids), one JSON object per line.
    Render(RenderArgs),
}

#[derive(clap::Args, Serialize)]
pub struct RenderArgs {
    /// The model whose chat template and tokenizer render the prompts (a GGUF file or an HF directory).
    #[arg(long)]
    pub model: PathBuf,
    /// Prompts (files or shard directories).
    #[arg(long, required = true, num_args = 1..)]
    pub prompts: Vec<PathBuf>,
    /// System message for prompts without their own (as in `dno sample`).
    #[arg(long)]
    pub system: Option<String>,
    /// Chat template file (Jinja) replacing the model's own (as in `dno sample`).
    #[arg(long)]
    pub chat_template: Option<PathBuf>,
}

/// Input file and format, shared by the import commands.
#[derive(clap::Args, Serialize)]
pub struct Input {
    /// Input: `.jsonl`, `.json` (an array, or one object per line), `.csv`, `.parquet`, or a directory of Parquet shards.
    pub input: PathBuf,
    /// Input format; guessed from the extension when omitted.
    #[arg(long, value_parser = ["jsonl", "json", "csv", "parquet"])]
    pub format: Option<String>,
}

impl Input {
    pub fn records(&self) -> Result<import::Records> {
        let format = self.format.as_deref().map(str::parse::<Format>).transpose()?;
        import::records(&self.input, format)
    }
}

#[derive(clap::Args, Serialize)]
pub struct ImportArgs {
    #[command(flatten)]
    pub input: Input,
    /// Output prompts Parquet file.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Field holding the user turn (a string, or a list of {role, content} turns); default `prompt`.
    #[arg(long)]
    pub prompt_field: Option<String>,
    /// Field holding a chat conversation ({role, content} turns, the last one the user's); default `messages`.
    #[arg(long)]
    pub messages_field: Option<String>,
    /// Field holding a unique id; by default `prompt_id` or `id` when present, else the 0-based record number.
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
    /// Field holding a system message; by default `system` when present.
    #[arg(long)]
    pub system_field: Option<String>,
    /// Overwrite an existing output.
    #[arg(long)]
    pub force: bool,
}

pub fn run(c: Command) -> Result<()> {
    match c {
        Command::Import(a) => import(a),
        Command::Render(a) => render(a),
    }
}

fn render(a: RenderArgs) -> Result<()> {
    use std::io::Write;
    let (_, prompts) = dno_data::read_validated::<PromptRow>(&a.prompts)?;
    let mut lm = dno_model::load_model(&a.model, &"cpu".parse::<dno_model::DeviceSpec>()?.device()?)
        .with_context(|| format!("loading {}", a.model.display()))?;
    lm.use_chat_template_file(a.chat_template.as_deref())?;
    let mut out = std::io::stdout().lock();
    for p in &prompts {
        let text = dno_sample::render_prompt(&lm.chat, p.system.as_deref().or(a.system.as_deref()), p.history.as_deref(), &p.prompt)
            .with_context(|| format!("prompt '{}': chat template", p.prompt_id))?;
        let ids = lm.tokenizer.encode(&text, false)?;
        writeln!(out, "{}", serde_json::json!({"prompt_id": p.prompt_id, "text": text, "ids": ids}))?;
    }
    Ok(())
}

/// Writes `rows` to `out` atomically (nothing is left behind on the first bad record).
pub fn write_rows<T: dno_data::Row>(input: &Path, out: &Path, prov: &Provenance, force: bool, rows: impl Iterator<Item = Result<T>>) -> Result<u64> {
    let mut writer = DatasetWriter::<T>::create(out, prov, force)?;
    for r in rows {
        writer.write(r?)?;
    }
    if writer.rows_written() == 0 {
        bail!("{}: no records found", input.display());
    }
    writer.finish()
}

fn import(a: ImportArgs) -> Result<()> {
    let mut prov = Provenance::new("prompts import", &a)?;
    prov.add_inputs(std::slice::from_ref(&a.input.input))?;
    let fields = PromptFields {
        prompt: a.prompt_field.clone(),
        messages: a.messages_field.clone(),
        id: a.id_field.clone(),
        system: a.system_field.clone(),
        reference: a.reference_field.clone(),
        answer: a.answer_field.clone(),
        constraints: a.constraints_field.clone(),
        check_constraints: Some(|c| dno_oracle::constraints::parse(c).map(|_| ())),
    };
    let rows = write_rows::<PromptRow>(&a.input.input, &a.out, &prov, a.force, import::prompts(a.input.records()?, &fields))?;
    eprintln!("wrote {} prompts to {}", rows, a.out.display());
    Ok(())
}
