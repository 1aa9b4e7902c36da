//! The fixed Arrow schemas of every dataset that flows between stages.
//!
//! Each schema is defined once, here, as a table of [`Column`]s. The Arrow schema, the
//! validation rules, `dno schema NAME` and the documentation in `schemas/<name>.md` are all
//! derived from (or tested against) these tables.

use arrow_schema::{DataType, Field, Schema};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

/// Parquet key-value metadata keys written into every file.
pub const META_SCHEMA: &str = "dno.schema";
pub const META_VERSION: &str = "dno.schema_version";
pub const META_PROVENANCE: &str = "dno.provenance";

/// The logical column types we use (a deliberately small subset of Arrow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColType {
    Utf8,
    Int32,
    Int64,
    Float64,
    Bool,
}

impl ColType {
    pub fn arrow(self) -> DataType {
        match self {
            ColType::Utf8 => DataType::Utf8,
            ColType::Int32 => DataType::Int32,
            ColType::Int64 => DataType::Int64,
            ColType::Float64 => DataType::Float64,
            ColType::Bool => DataType::Boolean,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            ColType::Utf8 => "utf8",
            ColType::Int32 => "int32",
            ColType::Int64 => "int64",
            ColType::Float64 => "float64",
            ColType::Bool => "bool",
        }
    }
    /// Arrow types a reader accepts for this column and casts to it (Polars writes
    /// `large_string` / `string_view`, pandas dictionary-encoded categoricals, every writer
    /// `int64`). Integers of any width are accepted; a value that does not fit is an error
    /// naming its row when the data is read.
    pub fn accepts(self, dt: &DataType) -> bool {
        match self {
            ColType::Utf8 => match dt {
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
                DataType::Dictionary(_, v) => matches!(v.as_ref(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View),
                _ => false,
            },
            ColType::Int32 | ColType::Int64 => dt.is_integer(),
            ColType::Float64 => matches!(dt, DataType::Float16 | DataType::Float32 | DataType::Float64),
            ColType::Bool => matches!(dt, DataType::Boolean),
        }
    }
}

/// One column of a dataset schema.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub ty: ColType,
    pub nullable: bool,
    /// Columns that may be absent from an input file (they read as null / default).
    pub optional: bool,
    /// The schema version that added the column. A file of an older (still readable) version may
    /// lack it; it then reads as null, and the stage that reads it decides what that means.
    pub since: u32,
    pub doc: &'static str,
}

impl Column {
    /// Whether a file of schema version `file_version` may lack this column.
    pub fn may_be_absent(&self, file_version: u32) -> bool {
        self.optional || self.since > file_version
    }
}

const fn col(name: &'static str, ty: ColType, nullable: bool, doc: &'static str) -> Column {
    Column { name, ty, nullable, optional: false, since: 1, doc }
}
const fn opt(name: &'static str, ty: ColType, doc: &'static str) -> Column {
    Column { name, ty, nullable: true, optional: true, since: 1, doc }
}
/// A non-null column added in schema version `since`: required in files of that version on.
const fn added(since: u32, name: &'static str, ty: ColType, doc: &'static str) -> Column {
    Column { name, ty, nullable: false, optional: false, since, doc }
}

use ColType::*;

/// The datasets that flow between stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dataset {
    Prompts,
    Samples,
    Preferences,
    Pairs,
    Eval,
    Metrics,
}

impl Dataset {
    pub const ALL: [Dataset; 6] =
        [Dataset::Prompts, Dataset::Samples, Dataset::Preferences, Dataset::Pairs, Dataset::Eval, Dataset::Metrics];

    pub fn name(self) -> &'static str {
        match self {
            Dataset::Prompts => "prompts",
            Dataset::Samples => "samples",
            Dataset::Preferences => "preferences",
            Dataset::Pairs => "pairs",
            Dataset::Eval => "eval",
            Dataset::Metrics => "metrics",
        }
    }

    /// Bumped whenever a column is added, removed or changes meaning.
    pub fn version(self) -> u32 {
        match self {
            // v2: the optional `history` column (earlier turns of a chat conversation), and for
            // prompts and samples the optional `constraints` column.
            Dataset::Prompts | Dataset::Samples | Dataset::Pairs => 2,
            Dataset::Preferences | Dataset::Eval | Dataset::Metrics => 1,
        }
    }

    /// The oldest file version this dno reads. Every version between it and [`Dataset::version`]
    /// differs only by added optional columns, which read as null in older files.
    pub fn min_version(self) -> u32 {
        1
    }

    /// How older versions read, for the schema document.
    fn compat(self) -> &'static str {
        match self {
            Dataset::Prompts | Dataset::Samples => {
                "Reads versions 1 and 2. Version 1 has no `history` column; its rows read as single-turn (`history` null). A file without the optional `constraints` column reads as null constraints."
            }
            Dataset::Pairs => {
                "Reads versions 1 and 2. Version 1 has no `history` column (its rows read as single-turn) and no `chosen_finish_reason` / `rejected_finish_reason` (`dno train` treats its responses as ended, and warns once)."
            }
            _ => "Reads version 1.",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Dataset::Prompts => "Prompts: the input of every iteration. One row per prompt.",
            Dataset::Samples => "Samples: K policy responses per prompt (plus optional reference candidates). Written by `dno sample`.",
            Dataset::Preferences => "Preferences: P(a > b | x) for candidate pairs of one prompt. Written by `dno annotate`. Preferences may be intransitive.",
            Dataset::Pairs => "Pairs: training pairs with soft targets. Written by `dno pair`, read by `dno train`.",
            Dataset::Eval => "Eval: one row per judged comparison of a candidate against the baseline. Written by `dno eval`; the summary is in the `dno.eval_summary` metadata key.",
            Dataset::Metrics => "Metrics: one row per optimiser step. Written by `dno train` as `metrics.parquet`.",
        }
    }

    /// The key columns whose combination must be unique within a dataset.
    pub fn key(self) -> &'static [&'static str] {
        match self {
            Dataset::Prompts => &["prompt_id"],
            Dataset::Samples => &["sample_id"],
            Dataset::Preferences => &["sample_a", "sample_b", "judge"],
            Dataset::Pairs => &["chosen_id", "rejected_id", "iteration"],
            Dataset::Eval => &["candidate_id", "baseline_id"],
            Dataset::Metrics => &["step"],
        }
    }

    /// Float columns that must lie in [0, 1] when non-null.
    pub fn unit_interval(self) -> &'static [&'static str] {
        match self {
            Dataset::Preferences => &["p_a", "p_ab", "p_ba"],
            Dataset::Pairs => &["target", "chosen_winrate", "rejected_winrate"],
            Dataset::Eval => &["p_candidate", "p_candidate_first", "p_candidate_second", "candidate_constraints", "baseline_constraints"],
            _ => &[],
        }
    }

    pub fn columns(self) -> &'static [Column] {
        match self {
            Dataset::Prompts => PROMPTS,
            Dataset::Samples => SAMPLES,
            Dataset::Preferences => PREFERENCES,
            Dataset::Pairs => PAIRS,
            Dataset::Eval => EVAL,
            Dataset::Metrics => METRICS,
        }
    }

    pub fn column(self, name: &str) -> Option<&'static Column> {
        self.columns().iter().find(|c| c.name == name)
    }

    /// The Arrow schema written to files, with the schema name and version in its metadata.
    pub fn arrow_schema(self) -> Schema {
        let fields: Vec<Field> = self.columns().iter().map(|c| Field::new(c.name, c.ty.arrow(), c.nullable)).collect();
        let mut meta = HashMap::new();
        meta.insert(META_SCHEMA.to_string(), self.name().to_string());
        meta.insert(META_VERSION.to_string(), self.version().to_string());
        Schema::new_with_metadata(fields, meta)
    }

    /// The schema as a markdown document; `schemas/<name>.md` must equal this (a test checks).
    pub fn markdown(self) -> String {
        let mut s = format!(
            "# `{}` schema, version {}\n\n{}\n\nParquet key-value metadata: `{}` = `{}`, `{}` = `{}`, `{}` = provenance JSON.\n\n",
            self.name(),
            self.version(),
            self.description(),
            META_SCHEMA,
            self.name(),
            META_VERSION,
            self.version(),
            META_PROVENANCE
        );
        s.push_str(&format!("{}\n\n", self.compat()));
        s.push_str(&format!("Unique key: `{}`.\n\n", self.key().join("`, `")));
        if self.min_version() < self.version() {
            s.push_str(&format!(
                "Files of versions {} to {} are read; a column added in a later version than the file's may be absent from it (see its description).\n\n",
                self.min_version(),
                self.version()
            ));
        }
        s.push_str("| column | type | nullable | optional in input | description |\n|---|---|---|---|---|\n");
        for c in self.columns() {
            let optional = if c.optional {
                "yes".to_string()
            } else if c.since > self.min_version() {
                format!("no (added in v{}; absent from older files)", c.since)
            } else {
                "no".to_string()
            };
            s.push_str(&format!(
                "| `{}` | {} | {} | {} | {} |\n",
                c.name,
                c.ty.name(),
                if c.nullable { "yes" } else { "no" },
                optional,
                c.doc
            ));
        }
        s
    }
}

impl fmt::Display for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Dataset {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        Dataset::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| anyhow::anyhow!("unknown schema '{s}' (expected one of: prompts, samples, preferences, pairs, eval, metrics)"))
    }
}

const PROMPTS: &[Column] = &[
    col("prompt_id", Utf8, false, "Unique, non-null identifier of the prompt."),
    col("prompt", Utf8, false, "The user turn (the last one, for a conversation)."),
    opt("system", Utf8, "Optional system message for the chat template."),
    opt("history", Utf8, "Earlier turns of a chat conversation before `prompt`, as a JSON array of `{\"role\": \"user\"|\"assistant\", \"content\": ...}` objects in order; null for a single-turn prompt."),
    opt("reference", Utf8, "A gold/teacher answer (a candidate with `--include-reference`, or an eval baseline)."),
    opt("answer", Utf8, "Ground truth for verifier oracles."),
    opt("constraints", Utf8, "Instruction-following constraints as a JSON array, checked by `--verify constraints` and `dno eval` (see schemas/constraints.md)."),
];

const SAMPLES: &[Column] = &[
    col("prompt_id", Utf8, false, "The prompt this response answers."),
    col("sample_id", Utf8, false, "Unique, deterministic id: a hash of (prompt_id, policy, sample_index, seed)."),
    col("prompt", Utf8, false, "The user turn (copied so the file stands alone; the last one, for a conversation)."),
    opt("system", Utf8, "The system message used, if any."),
    opt("history", Utf8, "Earlier turns of a chat conversation before `prompt`, as a JSON array of `{\"role\": \"user\"|\"assistant\", \"content\": ...}` objects in order; null for a single-turn prompt."),
    opt("answer", Utf8, "Ground truth copied from the prompts file, for verifier oracles."),
    opt("constraints", Utf8, "Constraints JSON copied from the prompts file (see schemas/constraints.md)."),
    col("response", Utf8, false, "The generated (or reference) response text."),
    col("source", Utf8, false, "`policy` for sampled responses, `reference` for the prompt's gold/teacher answer."),
    col("policy", Utf8, false, "Which model or iteration produced it."),
    col("sample_index", Int32, false, "0..K-1 for policy samples; -1 for the reference."),
    col("seed", Int64, false, "The run seed the sample's RNG was derived from."),
    col("response_tokens", Int32, false, "Number of generated tokens (0 when unknown, e.g. references)."),
    col("finish_reason", Utf8, false, "`stop` (EOS), `stop_string`, `length` (hit max new tokens) or `reference`."),
    opt("logprob", Float64, "Sum of the response's log-probs under the sampling policy (temperature-1 distribution), when known."),
    col("repetitive", Bool, false, "Degenerate output flag: repeated n-gram rule (see README), an automatic loser in `dno pair`."),
];

const PREFERENCES: &[Column] = &[
    col("prompt_id", Utf8, false, "The prompt both candidates answer."),
    col("sample_a", Utf8, false, "sample_id of candidate a."),
    col("sample_b", Utf8, false, "sample_id of candidate b."),
    col("p_a", Float64, false, "P(a preferred to b | prompt) in [0, 1]."),
    col("judge", Utf8, false, "Oracle identity (kind, model, mode, template fingerprint)."),
    opt("p_ab", Float64, "P(a wins) when a was shown first (pairwise judge)."),
    opt("p_ba", Float64, "P(a wins) when b was shown first (pairwise judge)."),
    opt("score_a", Float64, "Score of a when the oracle scores (6-point rubric, verifier 0/1)."),
    opt("score_b", Float64, "Score of b when the oracle scores."),
    opt("raw", Utf8, "The raw judge output(s), for audit."),
];

const FINISH_REASON_DOC: &str = "How the chosen response ended, copied from its sample: `stop` (EOS / end of turn), `stop_string` (cut at a user stop string), `length` (hit max new tokens) or `reference` (a gold answer); `unknown` for pairs replayed from a version-1 file. `dno train` appends the chat template's end-of-turn marker to every response except `length` ones. Version-1 files lack the column; `dno train` treats their responses as ended (it warns once).";

const PAIRS: &[Column] = &[
    col("prompt_id", Utf8, false, "The prompt."),
    col("prompt", Utf8, false, "The user turn (the last one, for a conversation)."),
    opt("system", Utf8, "The system message, if any."),
    opt("history", Utf8, "Earlier turns of a chat conversation before `prompt`, as a JSON array of `{\"role\": \"user\"|\"assistant\", \"content\": ...}` objects in order; null for a single-turn prompt."),
    col("chosen", Utf8, false, "The preferred response."),
    col("rejected", Utf8, false, "The dispreferred response (equal to `chosen` for SFT rows is not allowed; SFT reads only `chosen`)."),
    col("chosen_id", Utf8, false, "sample_id of the chosen response."),
    col("rejected_id", Utf8, false, "sample_id of the rejected response."),
    col("target", Float64, false, "Target z = P(chosen > rejected) the `dno` loss receives (Eq. 8), in [0, 1]: 1.0 for hard pairs (`dno-prct`, `max-min`); for `soft`, sigma(r(chosen) - r(rejected)) with the pair oriented so r(chosen) > r(rejected), hence z in (0.5, sigma(1) = 0.731]. Eq. 8's other orientation (rejected, chosen, 1 - z) has the same loss and gradients, so it is not stored."),
    col("chosen_winrate", Float64, false, "r_t(x, chosen): mean P(chosen > y') over judged opponents."),
    col("rejected_winrate", Float64, false, "r_t(x, rejected)."),
    col("weight", Float64, false, "Per-pair loss weight."),
    opt("chosen_score", Float64, "Judge score of chosen, when the oracle scores."),
    opt("rejected_score", Float64, "Judge score of rejected."),
    col("chosen_source", Utf8, false, "`policy` or `reference`."),
    col("rejected_source", Utf8, false, "`policy` or `reference`."),
    added(2, "chosen_finish_reason", Utf8, FINISH_REASON_DOC),
    added(2, "rejected_finish_reason", Utf8, "The same for the rejected response."),
    col("strategy", Utf8, false, "Pairing strategy that produced the row (`dno-prct`, `max-min`, `soft`)."),
    col("iteration", Utf8, false, "Label of the data's iteration (for replayed pairs, the earlier one)."),
];

const EVAL: &[Column] = &[
    col("prompt_id", Utf8, false, "The prompt."),
    col("candidate_id", Utf8, false, "sample_id of the candidate response."),
    col("baseline_id", Utf8, false, "sample_id of the baseline response (or `reference:<prompt_id>`)."),
    col("p_candidate", Float64, false, "P(candidate preferred to baseline), mean over both orders."),
    opt("p_candidate_first", Float64, "P(candidate wins) when shown first."),
    opt("p_candidate_second", Float64, "P(candidate wins) when shown second."),
    col("candidate_len", Int64, false, "Candidate length in characters."),
    col("baseline_len", Int64, false, "Baseline length in characters."),
    opt("candidate_correct", Bool, "Candidate matches `answer` (verifier), when known."),
    opt("baseline_correct", Bool, "Baseline matches `answer`, when known."),
    opt("candidate_constraints", Float64, "Fraction of the prompt's constraints the candidate meets, when the prompt has constraints."),
    opt("baseline_constraints", Float64, "Fraction of the prompt's constraints the baseline meets."),
    col("judge", Utf8, false, "Oracle identity."),
];

const METRICS: &[Column] = &[
    col("step", Int64, false, "Optimiser step (1-based)."),
    col("epoch", Float64, false, "Progress in epochs (fractional)."),
    col("loss", Float64, false, "Weighted mean loss of the step."),
    opt("reward_accuracy", Float64, "Share of pairs whose chosen implicit reward exceeds the rejected one (null for sft)."),
    opt("margin_mean", Float64, "Mean h = eta*(logratio_chosen - logratio_rejected) (null for sft)."),
    opt("chosen_logratio", Float64, "Mean log pi(chosen)/pi_t(chosen) (null for sft)."),
    opt("rejected_logratio", Float64, "Mean log pi(rejected)/pi_t(rejected) (null for sft)."),
    col("grad_norm", Float64, false, "Global gradient L2 norm before clipping."),
    col("lr", Float64, false, "Learning rate of the step."),
    col("tokens", Int64, false, "Tokens through the policy in the step: each pair's prompt once (shared by both responses) plus its responses."),
    col("tokens_per_s", Float64, false, "Throughput of the step."),
    col("elapsed_s", Float64, false, "Training wall time so far, seconds (across resumes)."),
];
