//! Verifier oracle: checks each candidate against the item's known `answer`.
//!
//! P(a ≻ b) is 1 when only `a` is correct, 0 when only `b` is, ½ when both or neither are.
//! [`Verifier::correctness`] exposes the per-candidate verdicts (accuracy for `dno eval`).
//!
//! Modes (`--verify`):
//! * `exact`: the trimmed response equals the trimmed answer;
//! * `normalized`: equal after lower-casing, dropping punctuation and collapsing whitespace;
//! * `last-number`: the last number in the response equals the last number in the answer
//!   (numerically: `1,000` = `1000.0`; relative tolerance 1e-6);
//! * `regex:PATTERN`: the LAST match of PATTERN in the response is extracted (named group
//!   `answer`, else group 1, else the whole match) and compared with the answer: numerically when
//!   both are numbers, otherwise `normalized`. No match = wrong;
//! * `constraints`: the item's `constraints` JSON (see [`crate::constraints`]) instead of an
//!   answer; a candidate's score is the fraction of constraints it meets, P(a ≻ b) is 1 / ½ / 0 as
//!   a's fraction is above / equal to / below b's, and the per-constraint results are kept in
//!   the judgment's `raw` (JSON `{"a": [...], "b": [...]}`).

use crate::constraints::{self, Check, Constraint};
use crate::{Item, Judgment};
use anyhow::{bail, Context, Result};
use regex::Regex;
use std::sync::OnceLock;

#[derive(Debug, Clone, Default)]
pub enum VerifyMode {
    Exact,
    Normalized,
    /// The default: GSM8K-style final answers.
    #[default]
    LastNumber,
    Regex(Regex),
    Constraints,
}

impl std::str::FromStr for VerifyMode {
    type Err = anyhow::Error;
    /// `exact`, `normalized`, `last-number` or `regex:PATTERN`.
    fn from_str(s: &str) -> Result<VerifyMode> {
        match s {
            "exact" => Ok(VerifyMode::Exact),
            "normalized" | "normalised" => Ok(VerifyMode::Normalized),
            "last-number" => Ok(VerifyMode::LastNumber),
            "constraints" => Ok(VerifyMode::Constraints),
            _ => {
                if let Some(p) = s.strip_prefix("regex:") {
                    let re = Regex::new(p).with_context(|| format!("verifier regex {p:?} does not compile"))?;
                    Ok(VerifyMode::Regex(re))
                } else {
                    bail!("verifier mode {s:?}: expected exact, normalized, last-number, constraints or regex:PATTERN")
                }
            }
        }
    }
}

impl std::fmt::Display for VerifyMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VerifyMode::Exact => write!(f, "exact"),
            VerifyMode::Normalized => write!(f, "normalized"),
            VerifyMode::LastNumber => write!(f, "last-number"),
            VerifyMode::Regex(r) => write!(f, "regex:{}", r.as_str()),
            VerifyMode::Constraints => write!(f, "constraints"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Verifier {
    mode: VerifyMode,
    name: String,
}

/// Lower-case, punctuation removed, whitespace collapsed.
pub fn normalize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for w in s
        .chars()
        .map(|c| if c.is_alphanumeric() || c.is_whitespace() { c } else { ' ' })
        .collect::<String>()
        .to_lowercase()
        .split_whitespace()
    {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(w);
    }
    out
}

/// The last number in `s` (`-1,234.5`, `.5`, `3e8`; thousands separators allowed), if any.
pub fn last_number(s: &str) -> Option<f64> {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        Regex::new(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:[eE][-+]?\d+)?").expect("valid regex")
    });
    re.find_iter(s)
        .filter(|m| m.as_str().chars().any(|c| c.is_ascii_digit()))
        .filter_map(|m| {
            let t = m.as_str().replace(',', "");
            // "5." style endings are excluded by the pattern; a lone exponent would not parse.
            t.parse::<f64>().ok()
        })
        .last()
}

fn numbers_equal(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0)
}

impl Verifier {
    pub fn new(mode: VerifyMode) -> Verifier {
        let name = format!("verifier:{mode}");
        Verifier { mode, name }
    }

    pub fn mode(&self) -> &VerifyMode {
        &self.mode
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Is `response` correct for `answer`? Errors only when the answer itself is unusable
    /// (e.g. `last-number` with an answer containing no number).
    pub fn is_correct(&self, response: &str, answer: &str) -> Result<bool> {
        Ok(match &self.mode {
            VerifyMode::Constraints => bail!("the constraints verifier checks the prompt's constraints, not an answer"),
            VerifyMode::Exact => response.trim() == answer.trim(),
            VerifyMode::Normalized => normalize(response) == normalize(answer),
            VerifyMode::LastNumber => {
                let want = last_number(answer).with_context(|| {
                    format!("last-number verifier: the answer {:?} contains no number", crate::client::snippet(answer, 80))
                })?;
                last_number(response).is_some_and(|got| numbers_equal(got, want))
            }
            VerifyMode::Regex(re) => {
                let Some(caps) = re.captures_iter(response).last() else { return Ok(false) };
                let got = caps
                    .name("answer")
                    .or_else(|| caps.get(1))
                    .or_else(|| caps.get(0))
                    .map(|m| m.as_str())
                    .unwrap_or("");
                match (got.trim().replace(',', "").parse::<f64>(), answer.trim().replace(',', "").parse::<f64>()) {
                    (Ok(g), Ok(w)) => numbers_equal(g, w),
                    _ => normalize(got) == normalize(answer),
                }
            }
        })
    }

    /// The item's parsed constraints (`--verify constraints`), an error naming the prompt when
    /// they are missing or invalid.
    pub fn item_constraints(item: &Item) -> Result<Vec<Constraint>> {
        let json = item.constraints.as_deref().with_context(|| {
            format!("prompt {}: the constraints verifier needs constraints and the item has none (column 'constraints' is null)", item.prompt_id)
        })?;
        constraints::parse(json).with_context(|| format!("prompt {}: column 'constraints'", item.prompt_id))
    }

    /// Score of every candidate of `item` (in candidate order): 1.0 / 0.0 for correct / wrong
    /// against the answer, or the fraction of constraints met; with the per-constraint checks
    /// (empty for answer modes).
    pub fn scores(&self, item: &Item) -> Result<Vec<(f64, Vec<Check>)>> {
        if let VerifyMode::Constraints = self.mode {
            let cs = Self::item_constraints(item)?;
            return Ok(item
                .candidates
                .iter()
                .map(|c| {
                    let checks = constraints::check_all(&cs, &c.text);
                    (constraints::fraction(&checks), checks)
                })
                .collect());
        }
        Ok(self.correctness(item)?.into_iter().map(|ok| (if ok { 1.0 } else { 0.0 }, Vec::new())).collect())
    }

    /// Correctness of every candidate of `item` (in candidate order); with `constraints`, whether
    /// every constraint is met.
    pub fn correctness(&self, item: &Item) -> Result<Vec<bool>> {
        if let VerifyMode::Constraints = self.mode {
            return Ok(self.scores(item)?.into_iter().map(|(f, _)| f >= 1.0).collect());
        }
        let answer = item
            .answer
            .as_deref()
            .with_context(|| format!("prompt {}: the verifier needs an answer and the item has none", item.prompt_id))?;
        item.candidates
            .iter()
            .map(|c| self.is_correct(&c.text, answer).with_context(|| format!("prompt {}", item.prompt_id)))
            .collect()
    }

    /// Judgments for `pairs` of `item`; `score_a`/`score_b` carry correctness as 1.0/0.0 (or the
    /// fraction of constraints met), `raw` the per-constraint checks.
    pub fn judge_item(&self, item: &Item, pairs: &[(usize, usize)]) -> Result<Vec<Judgment>> {
        let scores = self.scores(item)?;
        Ok(pairs
            .iter()
            .map(|&(a, b)| {
                let ((sa, ca), (sb, cb)) = (&scores[a], &scores[b]);
                let raw = matches!(self.mode, VerifyMode::Constraints)
                    .then(|| serde_json::json!({ "a": ca, "b": cb }).to_string());
                Judgment {
                    prompt_id: item.prompt_id.clone(),
                    sample_a: item.candidates[a].sample_id.clone(),
                    sample_b: item.candidates[b].sample_id.clone(),
                    p_a: crate::judge::p_from_scores(*sa, *sb),
                    judge: self.name.clone(),
                    p_ab: None,
                    p_ba: None,
                    p_first: None,
                    score_a: Some(*sa),
                    score_b: Some(*sb),
                    raw,
                    cached: false,
                }
            })
            .collect())
    }
}
