use anyhow::{bail, Result};

#[derive(clap::Args)]
pub struct Args {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub rest: Vec<String>,
}

pub fn run(_a: Args) -> Result<()> {
    bail!("dno export: not yet implemented in this build")
}
