//! Converts a model (HF dir or .gguf) to an HF directory with f32 safetensors.
//! cargo run --release -p dno-model --example export_hf -- MODEL OUT_DIR

use anyhow::{Context, Result};
use burn::tensor::Device;
use std::path::PathBuf;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let src = PathBuf::from(args.next().context("usage: export_hf MODEL OUT_DIR")?);
    let out = PathBuf::from(args.next().context("usage: export_hf MODEL OUT_DIR")?);
    let lm = dno_model::load_model(&src, &Device::flex())?;
    dno_model::save_hf(&lm, &out)?;
    println!("wrote {}", out.display());
    Ok(())
}
