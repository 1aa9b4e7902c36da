//! `dno export`: any supported model (GGUF file or HF directory) -> an HF directory that
//! transformers and `dno` both load, so that any GGUF can be trained on.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// A GGUF file or an HF directory.
    #[arg(long)]
    pub model: PathBuf,
    /// Output HF directory.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Replace an existing output directory.
    #[arg(long)]
    pub force: bool,
    /// Precision of the written weights: f32, bf16 or f16 (config.json's torch_dtype).
    #[arg(long, default_value_t = dno_model::ExportOptions::default().dtype.to_string())]
    pub dtype: String,
    /// Largest safetensors file in bytes, or e.g. 5GB, 200MB; bigger models are sharded with a
    /// model.safetensors.index.json (transformers' max_shard_size).
    #[arg(long, default_value_t = dno_model::ExportOptions::default().max_shard_bytes.to_string())]
    pub max_shard_size: String,
}

pub fn run(a: Args) -> Result<()> {
    if a.out.exists() && !a.force {
        bail!("{}: output already exists (pass --force to overwrite it)", a.out.display());
    }
    let dtype: dno_model::Dtype = a.dtype.parse().context("--dtype")?;
    let opts = dno_model::ExportOptions { dtype, max_shard_bytes: dno_model::export::parse_size(&a.max_shard_size).context("--max-shard-size")? };
    let device = dno_model::DeviceSpec::Cpu.device()?;
    let lm = dno_model::load_model_as(&a.model, &device, dtype).with_context(|| format!("loading {}", a.model.display()))?;
    // Write next to the destination, then rename: a failed export leaves nothing behind.
    let tmp = a.out.with_file_name(format!(".{}.{}.tmp", a.out.file_name().and_then(|n| n.to_str()).unwrap_or("export"), std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    if let Err(e) = dno_model::save_hf_with(&lm, &tmp, opts) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e.context(format!("exporting to {}", a.out.display())));
    }
    if a.out.exists() {
        std::fs::remove_dir_all(&a.out).with_context(|| format!("{}: cannot replace", a.out.display()))?;
    }
    std::fs::rename(&tmp, &a.out).with_context(|| format!("cannot rename {} to {}", tmp.display(), a.out.display()))?;
    eprintln!(
        "exported {} ({} layers, hidden {}, vocab {}) -> {}",
        a.model.display(),
        lm.config.num_hidden_layers,
        lm.config.hidden_size,
        lm.config.vocab_size,
        a.out.display()
    );
    Ok(())
}
