//! One module per subcommand, each thin: it parses its flags, fills the library crate's options
//! struct (whose `Default` gives the flag defaults) and calls one library function.

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

/// The CLI's [`dno_data::Reporter`]: a progress bar on a terminal; otherwise a progress line at
/// most every `every_s` seconds (unless `--quiet`). Notes go to stderr.
pub struct Report {
    bar: Option<ProgressBar>,
    what: String,
    total: u64,
    ticker: Ticker,
}

impl Report {
    pub fn new(every_s: u64) -> Self {
        Report { bar: None, what: String::new(), total: 0, ticker: Ticker::new(every_s) }
    }
}

impl dno_data::Reporter for Report {
    fn start(&mut self, what: &str, total: u64) {
        self.bar = Some(progress(total, what));
        self.what = what.to_string();
        self.total = total;
    }
    fn progress(&mut self, done: u64, status: &str) {
        let Some(pb) = &self.bar else { return };
        pb.set_position(done);
        pb.set_message(status.to_string());
        if pb.is_hidden() && log::max_level() >= log::LevelFilter::Warn && self.ticker.due() {
            eprintln!("{}: {done}/{} done, {status}", self.what, self.total);
        }
    }
    fn finish(&mut self) {
        if let Some(pb) = self.bar.take() {
            pb.finish_and_clear();
        }
    }
    fn note(&mut self, line: &str) {
        eprintln!("{line}");
    }
}
