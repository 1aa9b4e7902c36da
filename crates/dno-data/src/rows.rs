//! Typed rows of each dataset. Field names equal the column names in [`crate::schema`].

use crate::schema::Dataset;
use anyhow::{bail, Result};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// One turn of a chat conversation (OpenAI / HF chat format).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    pub role: String,
    pub content: String,
}

/// Parses a `history` value: a JSON array of `{role, content}` turns whose roles are `user` or
/// `assistant` (the system message has its own column, the final user turn is `prompt`).
pub fn parse_history(json: &str) -> Result<Vec<Turn>> {
    let turns: Vec<Turn> = serde_json::from_str(json).map_err(|e| anyhow::anyhow!("column 'history': not a JSON array of {{role, content}} turns: {e}"))?;
    for (i, t) in turns.iter().enumerate() {
        if t.role != "user" && t.role != "assistant" {
            bail!("column 'history': turn {i} has role '{}' (expected user or assistant)", t.role);
        }
    }
    Ok(turns)
}

/// The whole conversation the chat template renders: the system message, the earlier turns and
/// the final user turn.
pub fn conversation(system: Option<&str>, history: Option<&str>, prompt: &str) -> Result<Vec<Turn>> {
    let mut out = Vec::new();
    if let Some(s) = system {
        out.push(Turn { role: "system".into(), content: s.to_string() });
    }
    if let Some(h) = history {
        out.extend(parse_history(h)?);
    }
    out.push(Turn { role: "user".into(), content: prompt.to_string() });
    Ok(out)
}

/// The prompt as the judge sees it (its `{prompt}` placeholder): the user turn itself, or for a
/// conversation a transcript of the earlier turns followed by the final user turn. The system
/// message is not shown to the judge, as for single-turn prompts.
pub fn judge_view(prompt: &str, history: Option<&str>) -> Result<String> {
    let Some(h) = history else { return Ok(prompt.to_string()) };
    let turns = parse_history(h)?;
    if turns.is_empty() {
        return Ok(prompt.to_string());
    }
    let mut s = String::new();
    for t in &turns {
        let who = if t.role == "user" { "User" } else { "Assistant" };
        s.push_str(&format!("[{who}]\n{}\n\n", t.content));
    }
    s.push_str(&format!("[User]\n{prompt}"));
    Ok(s)
}

/// A typed row of one dataset.
pub trait Row: Serialize + DeserializeOwned + Clone + Send + 'static {
    const DATASET: Dataset;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptRow {
    pub prompt_id: String,
    pub prompt: String,
    #[serde(default)]
    pub system: Option<String>,
    /// Earlier turns of a conversation, as JSON (see [`parse_history`]).
    #[serde(default)]
    pub history: Option<String>,
    #[serde(default)]
    pub reference: Option<String>,
    #[serde(default)]
    pub answer: Option<String>,
    #[serde(default)]
    pub constraints: Option<String>,
}
impl Row for PromptRow {
    const DATASET: Dataset = Dataset::Prompts;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleRow {
    pub prompt_id: String,
    pub sample_id: String,
    pub prompt: String,
    #[serde(default)]
    pub system: Option<String>,
    /// Earlier turns of a conversation, as JSON (see [`parse_history`]).
    #[serde(default)]
    pub history: Option<String>,
    #[serde(default)]
    pub answer: Option<String>,
    #[serde(default)]
    pub constraints: Option<String>,
    pub response: String,
    pub source: String,
    pub policy: String,
    pub sample_index: i32,
    pub seed: i64,
    pub response_tokens: i32,
    pub finish_reason: String,
    #[serde(default)]
    pub logprob: Option<f64>,
    pub repetitive: bool,
}
impl Row for SampleRow {
    const DATASET: Dataset = Dataset::Samples;
}
impl SampleRow {
    pub fn is_reference(&self) -> bool {
        self.source == "reference"
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreferenceRow {
    pub prompt_id: String,
    pub sample_a: String,
    pub sample_b: String,
    pub p_a: f64,
    pub judge: String,
    #[serde(default)]
    pub p_ab: Option<f64>,
    #[serde(default)]
    pub p_ba: Option<f64>,
    #[serde(default)]
    pub score_a: Option<f64>,
    #[serde(default)]
    pub score_b: Option<f64>,
    #[serde(default)]
    pub raw: Option<String>,
}
impl Row for PreferenceRow {
    const DATASET: Dataset = Dataset::Preferences;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairRow {
    pub prompt_id: String,
    pub prompt: String,
    #[serde(default)]
    pub system: Option<String>,
    /// Earlier turns of a conversation, as JSON (see [`parse_history`]).
    #[serde(default)]
    pub history: Option<String>,
    pub chosen: String,
    pub rejected: String,
    pub chosen_id: String,
    pub rejected_id: String,
    pub target: f64,
    pub chosen_winrate: f64,
    pub rejected_winrate: f64,
    pub weight: f64,
    #[serde(default)]
    pub chosen_score: Option<f64>,
    #[serde(default)]
    pub rejected_score: Option<f64>,
    pub chosen_source: String,
    pub rejected_source: String,
    /// How the chosen response ended (`stop`, `stop_string`, `length`, `reference`); `None` only
    /// when read from a version-1 file, which lacks the column (see [`PairRow::ended`]).
    #[serde(default)]
    pub chosen_finish_reason: Option<String>,
    #[serde(default)]
    pub rejected_finish_reason: Option<String>,
    pub strategy: String,
    pub iteration: String,
}
impl Row for PairRow {
    const DATASET: Dataset = Dataset::Pairs;
}
impl PairRow {
    /// Whether the chosen (`chosen = true`) or rejected response ended, i.e. should be followed
    /// by the end-of-turn marker in training: every finish reason but `length` (cut off by the
    /// token limit). `stop_string` counts as ended: the user's stop string marks where the
    /// response ends. A missing reason (a version-1 file) and `unknown` (a v1 pair replayed into
    /// a v2 file) count as ended, which is what every version before 2 did. Errors on any other
    /// value.
    pub fn ended(&self, chosen: bool) -> anyhow::Result<bool> {
        let (col, v) = if chosen {
            ("chosen_finish_reason", &self.chosen_finish_reason)
        } else {
            ("rejected_finish_reason", &self.rejected_finish_reason)
        };
        match v.as_deref() {
            None | Some("stop" | "stop_string" | "reference" | "unknown") => Ok(true),
            Some("length") => Ok(false),
            Some(other) => anyhow::bail!(
                "{col} '{other}' of pair {}/{} is not one of stop, stop_string, length, reference, unknown",
                self.chosen_id,
                self.rejected_id
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRow {
    pub prompt_id: String,
    pub candidate_id: String,
    pub baseline_id: String,
    pub p_candidate: f64,
    #[serde(default)]
    pub p_candidate_first: Option<f64>,
    #[serde(default)]
    pub p_candidate_second: Option<f64>,
    pub candidate_len: i64,
    pub baseline_len: i64,
    #[serde(default)]
    pub candidate_correct: Option<bool>,
    #[serde(default)]
    pub baseline_correct: Option<bool>,
    #[serde(default)]
    pub candidate_constraints: Option<f64>,
    #[serde(default)]
    pub baseline_constraints: Option<f64>,
    pub judge: String,
}
impl Row for EvalRow {
    const DATASET: Dataset = Dataset::Eval;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricRow {
    pub step: i64,
    pub epoch: f64,
    pub loss: f64,
    #[serde(default)]
    pub reward_accuracy: Option<f64>,
    #[serde(default)]
    pub margin_mean: Option<f64>,
    #[serde(default)]
    pub chosen_logratio: Option<f64>,
    #[serde(default)]
    pub rejected_logratio: Option<f64>,
    pub grad_norm: f64,
    pub lr: f64,
    pub tokens: i64,
    pub tokens_per_s: f64,
    pub elapsed_s: f64,
}
impl Row for MetricRow {
    const DATASET: Dataset = Dataset::Metrics;
}
