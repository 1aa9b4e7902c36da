//! One module per subcommand. Each stage reads and writes Parquet through `dno-data`.

pub mod annotate;
pub mod demo;
pub mod eval;
pub mod export;
pub mod inspect;
pub mod merge;
pub mod pair;
pub mod pairs;
pub mod prompts;
pub mod report;
pub mod sample;
pub mod samples;
pub mod schema;
pub mod train;
pub mod validate;

/// `--chat-template FILE`: replaces the model's chat template with the file's.
pub fn use_chat_template(lm: &mut dno_model::LoadedModel, path: Option<&std::path::Path>) -> anyhow::Result<()> {
    use anyhow::Context;
    let Some(path) = path else { return Ok(()) };
    let src = std::fs::read_to_string(path).with_context(|| format!("--chat-template: reading {}", path.display()))?;
    lm.set_chat_template(src).with_context(|| format!("--chat-template {}", path.display()))
}

/// The prompt side of a chat: the system message, the earlier turns (`history`) and the final user
/// turn, rendered by the model's chat template with the assistant's generation prompt.
pub fn render_prompt(chat: &dno_model::ChatTemplate, system: Option<&str>, history: Option<&str>, prompt: &str) -> anyhow::Result<String> {
    let turns = dno_data::conversation(system, history, prompt)?;
    let messages: Vec<(&str, &str)> = turns.iter().map(|t| (t.role.as_str(), t.content.as_str())).collect();
    chat.render_messages(&messages, true)
}

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// Exit codes (stable; documented in the README).
pub const EXIT_ERROR: i32 = 1;
pub const EXIT_USAGE: i32 = 2;

pub fn exit_code(_e: &anyhow::Error) -> i32 {
    EXIT_ERROR
}

/// A progress bar on a terminal; hidden (and replaced by periodic log lines) otherwise.
pub fn progress(len: u64, what: &str) -> ProgressBar {
    let pb = if std::io::stderr().is_terminal() && log::max_level() >= log::LevelFilter::Warn {
        ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    pb.set_style(
        ProgressStyle::with_template(&format!("{what} {{bar:30}} {{pos}}/{{len}} {{msg}} [{{elapsed_precise}} < {{eta_precise}}]"))
            .expect("valid template"),
    );
    pb
}

/// Periodic log lines for non-terminal runs: logs at most every `every` seconds.
pub struct Ticker {
    last: std::time::Instant,
    every: std::time::Duration,
}

impl Ticker {
    pub fn new(every_s: u64) -> Self {
        Ticker { last: std::time::Instant::now(), every: std::time::Duration::from_secs(every_s) }
    }
    pub fn due(&mut self) -> bool {
        if self.last.elapsed() >= self.every {
            self.last = std::time::Instant::now();
            true
        } else {
            false
        }
    }
}
