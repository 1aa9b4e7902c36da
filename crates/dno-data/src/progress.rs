//! How a long stage reports as it runs. The stages live in library crates and never draw
//! anything themselves: the `dno` CLI passes a [`Reporter`] that draws a progress bar on a
//! terminal (or prints periodic lines otherwise) and prints the notes on stderr; a library caller
//! may pass [`Silent`].

/// Progress and user-facing notes of a running stage.
pub trait Reporter {
    /// Work of `total` units (prompts, items, comparisons) starts; `what` names the stage.
    fn start(&mut self, what: &str, total: u64);
    /// `done` units are finished; `status` is a short summary ("12 samples, 3.1 tok/s").
    fn progress(&mut self, done: u64, status: &str);
    /// The work is over (the bar, if any, is cleared).
    fn finish(&mut self);
    /// A line for the user (resume notices, end-of-stage summaries).
    fn note(&mut self, line: &str);
}

/// A [`Reporter`] that reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Reporter for Silent {
    fn start(&mut self, _: &str, _: u64) {}
    fn progress(&mut self, _: u64, _: &str) {}
    fn finish(&mut self) {}
    fn note(&mut self, _: &str) {}
}
