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
}

pub fn run(a: Args) -> Result<()> {
    if a.out.exists() && !a.force {
        bail!("{}: output already exists (pass --force to overwrite it)", a.out.display());
    }
    let device = dno_model::DeviceSpec::Cpu.device()?;
    let lm = dno_model::load_model(&a.model, &device).with_context(|| format!("loading {}", a.model.display()))?;
    // Write next to the destination, then rename: a failed export leaves nothing behind.
    let tmp = a.out.with_file_name(format!(".{}.{}.tmp", a.out.file_name().and_then(|n| n.to_str()).unwrap_or("export"), std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    if let Err(e) = dno_model::save_hf(&lm, &tmp) {
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
