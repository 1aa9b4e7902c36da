//! Preference oracles for `dno`.
//!
//! An *oracle* answers "how likely is response `a` to be preferred over response `b` for this
//! prompt?" (the P(y ≻ y' | x) of the DNO paper, §2/§4). This crate ships three kinds:
//!
//! * [`judge::Judge`] — an LLM judge behind any OpenAI-compatible chat-completions server, either
//!   *pairwise* (each pair asked in both orders, averaged) or *score* (the DNO paper's App. C
//!   batched annotation: all candidates of a prompt scored in one call on a 6-point additive
//!   rubric, pairs derived from the score differences);
//! * [`verifier::Verifier`] — compares each candidate with a known answer (maths, code tests...),
//!   or checks the prompt's instruction-following [`constraints`] (`--verify constraints`);
//! * [`command::CommandOracle`] — any user program speaking a JSONL protocol (see `PROTOCOL.md`).
//!
//! [`annotate::run`] drives an oracle over a stream of [`Item`]s with bounded concurrency, an
//! on-disk answer [`cache::Cache`] (which is also the resume mechanism) and deterministic output
//! order. [`client::Client`] is the shared OpenAI-compatible HTTP client (also used by
//! `dno sample --engine openai`). [`stage`] is the annotate stage over Parquet samples (and what
//! `dno eval` shares with it). With the `fake-server` feature (tests and benchmarks only),
//! `fake_server` is a small in-process OpenAI-compatible server with fault injection.
//!
//! The data types here are plain structs; Parquet lives in `dno-data`.

pub mod annotate;
pub mod cache;
pub mod client;
pub mod command;
pub mod constraints;
#[cfg(feature = "fake-server")]
pub mod fake_server;
pub mod judge;
pub mod pairs;
pub mod stage;
pub mod template;
pub mod verifier;

pub use annotate::{
    estimate, run, run_blocking, run_with_sink, CandidateScore, Estimate, ItemResult, Oracle, Progress, RunOptions, RunOutput,
};
pub use cache::Cache;
pub use client::{Accounting, Client, ClientConfig};
pub use command::{CommandConfig, CommandOracle};
pub use judge::{Judge, JudgeConfig, JudgeMode};
pub use pairs::{select_pairs, PairSpec};
pub use verifier::{VerifyMode, Verifier};

use serde::{Deserialize, Serialize};

/// One response to a prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// Stable identifier of the sample (unique within its item).
    pub sample_id: String,
    /// The response text shown to the oracle.
    pub text: String,
    /// True for the gold/teacher response (the paper's y_gold); used by `--compare vs-reference`.
    pub is_reference: bool,
}

/// One prompt with all its candidate responses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub prompt_id: String,
    pub prompt: String,
    /// Known correct answer (needed by the verifier, passed to command oracles and judge templates).
    pub answer: Option<String>,
    /// The prompt's instruction-following constraints as JSON (`--verify constraints`; see
    /// [`constraints`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<String>,
    pub candidates: Vec<Candidate>,
}

/// One answered comparison `a` vs `b`.
///
/// `p_a` is P(a ≻ b) in `[0, 1]` (½ = tie). Every other field is for audit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judgment {
    pub prompt_id: String,
    pub sample_a: String,
    pub sample_b: String,
    /// P(a ≻ b). Pairwise judge: mean of `p_ab` and `p_ba`. Score judge: 1 / ½ / 0 from the
    /// scores. Verifier: 1 / ½ / 0 from correctness. Command: the program's `p_a`.
    pub p_a: f64,
    /// Oracle name, e.g. `judge:gpt-4o:pairwise`, `verifier:last-number`, `command`.
    pub judge: String,
    /// Pairwise judge only: P(a wins) when `a` was shown first.
    pub p_ab: Option<f64>,
    /// Pairwise judge only: P(a wins) when `b` was shown first.
    pub p_ba: Option<f64>,
    /// Pairwise judge only: mean probability that the response shown *first* won, over the two
    /// orders: `(p_ab + (1 - p_ba)) / 2`. 0.5 means no position preference on this pair; values
    /// near 1 (0) mean the judge mostly picked whatever came first (second).
    pub p_first: Option<f64>,
    /// Score judge: the absolute scores; verifier: correctness as 1.0 / 0.0.
    pub score_a: Option<f64>,
    pub score_b: Option<f64>,
    /// The judge's raw text(s), for audit (None when the run was asked not to keep them).
    pub raw: Option<String>,
    /// True when every underlying answer came from the cache (nothing was paid for it in this run).
    pub cached: bool,
}

/// A comparison (or a whole score-mode prompt) the oracle could not answer. Never a preference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub prompt_id: String,
    /// `"*"` when the whole prompt failed (score mode, or an item-level error).
    pub sample_a: String,
    pub sample_b: String,
    pub error: String,
}
