//! LLM judge over an OpenAI-compatible chat server.
//!
//! Two modes:
//! * [`JudgeMode::Pairwise`]: every pair is asked twice, once with `a` shown first and once with
//!   `b` shown first; `p_a` is the mean of the two answers (position-bias cancellation). The answer
//!   is the verdict `[[A]]` / `[[B]]` / `[[tie]]` in the judge's text; when logprobs are enabled and
//!   the server returns the top alternatives at the verdict token, the preference is continuous:
//!   `P(A) + ½P(tie)` normalised over the A/B/tie mass (as AlpacaEval 2's weighted annotators do).
//! * [`JudgeMode::Score`]: the DNO paper's batched annotation (App. C, Fig. 3): all candidates of
//!   a prompt (the K samples and the reference) are scored in ONE call on an additive 6-point
//!   rubric; the judge replies with JSON `{"1": {"justification": .., "score": n}, ...}`. For every
//!   pair `P(a ≻ b)` is 1 if `s_a > s_b`, ½ on a tie, 0 otherwise. Candidates are shown in an order
//!   shuffled deterministically per prompt (seeded), to spread position bias.
//!
//! Templates are plain text (defaults in `prompts/`, overridable by a file). Placeholders:
//! pairwise `{prompt}`, `{response_a}`, `{response_b}`, `{answer}`; score `{prompt}`,
//! `{responses}`, `{n}`, `{answer}`. An answer that cannot be parsed is asked again (up to
//! `max_parse_attempts` calls) and then reported as an error, never turned into a preference.

use crate::client::{Client, Message, Sampling, TokenLogprob};
use crate::pairs::{seed_for, Rng};
use crate::{template, Item};
use anyhow::{anyhow, bail, Result};
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// Built-in pairwise template.
pub const DEFAULT_PAIRWISE_TEMPLATE: &str = include_str!("../prompts/pairwise.txt");
/// Built-in score template (6-point additive rubric, our wording of the paper's Fig. 3 criteria).
pub const DEFAULT_SCORE_TEMPLATE: &str = include_str!("../prompts/score.txt");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JudgeMode {
    Pairwise,
    Score,
}

impl std::str::FromStr for JudgeMode {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<JudgeMode> {
        match s.trim() {
            "pairwise" => Ok(JudgeMode::Pairwise),
            "score" => Ok(JudgeMode::Score),
            other => bail!("judge mode {other:?}: expected pairwise or score"),
        }
    }
}

impl std::fmt::Display for JudgeMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JudgeMode::Pairwise => "pairwise",
            JudgeMode::Score => "score",
        })
    }
}

/// Judge settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JudgeConfig {
    pub mode: JudgeMode,
    /// User template file; `None` = the built-in one for the mode.
    pub template_path: Option<PathBuf>,
    /// Optional system message.
    pub system: Option<String>,
    pub temperature: f64,
    /// Temperature used when re-asking after an unparsable answer (a deterministic server would
    /// otherwise repeat the same bad answer): `max(temperature, retry_temperature)`.
    pub retry_temperature: f64,
    /// `None`: 512 (pairwise) or 300 + 200·K (score).
    pub max_tokens: Option<u32>,
    /// Ask for logprobs and derive a continuous pairwise preference at the verdict token.
    pub logprobs: bool,
    pub top_logprobs: u32,
    /// Calls per answer before giving up on parsing (≥ 1).
    pub max_parse_attempts: u32,
    /// Seed of the per-prompt candidate shuffle in score mode.
    pub shuffle_seed: u64,
    /// Highest valid score (the rubric's 6); scores outside `[0, max_score]` are rejected.
    pub max_score: f64,
}

impl Default for JudgeConfig {
    fn default() -> Self {
        JudgeConfig {
            mode: JudgeMode::Pairwise,
            template_path: None,
            system: None,
            temperature: 0.0,
            retry_temperature: 0.7,
            max_tokens: None,
            logprobs: false,
            top_logprobs: 5,
            max_parse_attempts: 3,
            shuffle_seed: 0,
            max_score: 6.0,
        }
    }
}

/// One pairwise call's answer: P(the response shown first wins).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderVerdict {
    pub p_first: f64,
    /// True when `p_first` came from token logprobs rather than the text verdict.
    #[serde(default)]
    pub from_logprobs: bool,
    pub raw: String,
}

/// One score call's answer: scores in the *shown* order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreVerdict {
    pub scores: Vec<f64>,
    pub raw: String,
}

/// The LLM judge. Share it behind an `Arc`.
pub struct Judge {
    client: Arc<Client>,
    cfg: JudgeConfig,
    template: String,
    fingerprint: String,
    name: String,
}

impl Judge {
    pub fn new(client: Arc<Client>, cfg: JudgeConfig) -> Result<Judge> {
        if cfg.max_parse_attempts == 0 {
            bail!("judge: max_parse_attempts must be at least 1");
        }
        if cfg.max_score.is_nan() || cfg.max_score <= 0.0 {
            bail!("judge: max_score must be > 0");
        }
        let template = match cfg.mode {
            JudgeMode::Pairwise => template::load(
                cfg.template_path.as_deref(),
                DEFAULT_PAIRWISE_TEMPLATE,
                &["prompt", "response_a", "response_b"],
            )?,
            JudgeMode::Score => {
                template::load(cfg.template_path.as_deref(), DEFAULT_SCORE_TEMPLATE, &["prompt", "responses"])?
            }
        };
        let model = client.config().model.clone();
        let fp = serde_json::json!({
            "v": "dno-oracle-judge-1",
            "mode": cfg.mode,
            "model": model,
            "template": template,
            "system": cfg.system,
            "temperature": cfg.temperature,
            "max_tokens": cfg.max_tokens,
            "logprobs": cfg.logprobs,
            "top_logprobs": if cfg.logprobs { Some(cfg.top_logprobs) } else { None },
            "max_score": cfg.max_score,
        });
        let fingerprint = crate::cache::hash_parts(&[&fp.to_string()]);
        let name = format!("judge:{model}:{}", cfg.mode);
        Ok(Judge { client, cfg, template, fingerprint, name })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn mode(&self) -> JudgeMode {
        self.cfg.mode
    }
    pub fn config(&self) -> &JudgeConfig {
        &self.cfg
    }
    pub fn client(&self) -> &Arc<Client> {
        &self.client
    }
    /// Hash of everything that changes the judge's answers (model, template, sampling...).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The pairwise prompt with `first` shown as Response A.
    pub fn render_pairwise(&self, item: &Item, first: &str, second: &str) -> String {
        template::render(
            &self.template,
            &[
                ("prompt", &item.prompt),
                ("response_a", first),
                ("response_b", second),
                ("answer", item.answer.as_deref().unwrap_or("")),
            ],
        )
    }

    /// Score mode: the order in which candidates are shown (`order[pos] = candidate index`),
    /// a permutation seeded by (`shuffle_seed`, `prompt_id`).
    pub fn score_order(&self, item: &Item) -> Vec<usize> {
        Rng::new(seed_for(self.cfg.shuffle_seed, "score-order", &item.prompt_id)).permutation(item.candidates.len())
    }

    /// The score prompt with candidates shown in `order`.
    pub fn render_score(&self, item: &Item, order: &[usize]) -> String {
        let mut responses = String::new();
        for (pos, &ci) in order.iter().enumerate() {
            responses.push_str(&format!("[Response {}]\n{}\n[End of Response {}]\n\n", pos + 1, item.candidates[ci].text, pos + 1));
        }
        let n = order.len().to_string();
        template::render(
            &self.template,
            &[
                ("prompt", &item.prompt),
                ("responses", responses.trim_end()),
                ("n", &n),
                ("answer", item.answer.as_deref().unwrap_or("")),
            ],
        )
    }

    fn max_tokens(&self, n_candidates: usize) -> u32 {
        self.cfg.max_tokens.unwrap_or(match self.cfg.mode {
            JudgeMode::Pairwise => 512,
            JudgeMode::Score => 300 + 200 * n_candidates as u32,
        })
    }

    fn messages(&self, user: String) -> Vec<Message> {
        let mut m = Vec::with_capacity(2);
        if let Some(s) = &self.cfg.system {
            m.push(Message::system(s.clone()));
        }
        m.push(Message::user(user));
        m
    }

    fn sampling(&self, attempt: u32, n_candidates: usize) -> Sampling {
        let temperature = if attempt == 0 {
            self.cfg.temperature
        } else {
            self.cfg.temperature.max(self.cfg.retry_temperature)
        };
        Sampling {
            temperature: Some(temperature),
            max_tokens: Some(self.max_tokens(n_candidates)),
            logprobs: self.cfg.logprobs,
            top_logprobs: if self.cfg.logprobs { Some(self.cfg.top_logprobs) } else { None },
            ..Default::default()
        }
    }

    /// Asks one order: P(the response shown first wins). Errors (HTTP or unparsable after
    /// `max_parse_attempts` calls) are returned, never turned into a preference.
    pub async fn judge_order(&self, item: &Item, first: &str, second: &str) -> Result<OrderVerdict> {
        let messages = self.messages(self.render_pairwise(item, first, second));
        let mut last_err = String::new();
        for attempt in 0..self.cfg.max_parse_attempts {
            if attempt > 0 {
                self.client.note_parse_retry();
            }
            let c = self.client.chat(&messages, &self.sampling(attempt, 2)).await?;
            let Some(choice) = c.choices.into_iter().next() else {
                last_err = "server returned no choices".into();
                continue;
            };
            let from_lp = choice.logprobs.as_deref().and_then(verdict_from_logprobs);
            let p = from_lp.or_else(|| parse_verdict(&choice.text));
            match p {
                Some(p) => {
                    return Ok(OrderVerdict { p_first: p, from_logprobs: from_lp.is_some(), raw: choice.text });
                }
                None => {
                    last_err = format!(
                        "no verdict ([[A]]/[[B]]/[[tie]]) in judge answer{}: {}",
                        length_hint(choice.finish_reason.as_deref()),
                        crate::client::snippet(&choice.text, 200)
                    );
                }
            }
        }
        Err(anyhow!("{last_err} (after {} attempts)", self.cfg.max_parse_attempts))
    }

    /// Scores all candidates in one call, shown in `order`; returns scores in shown order.
    pub async fn score_item(&self, item: &Item, order: &[usize]) -> Result<ScoreVerdict> {
        let n = order.len();
        let messages = self.messages(self.render_score(item, order));
        let mut last_err = String::new();
        for attempt in 0..self.cfg.max_parse_attempts {
            if attempt > 0 {
                self.client.note_parse_retry();
            }
            let c = self.client.chat(&messages, &self.sampling(attempt, n)).await?;
            let Some(choice) = c.choices.into_iter().next() else {
                last_err = "server returned no choices".into();
                continue;
            };
            match parse_scores(&choice.text, n, self.cfg.max_score) {
                Ok(scores) => return Ok(ScoreVerdict { scores, raw: choice.text }),
                Err(e) => {
                    last_err = format!(
                        "{e}{}: {}",
                        length_hint(choice.finish_reason.as_deref()),
                        crate::client::snippet(&choice.text, 200)
                    );
                }
            }
        }
        Err(anyhow!("{last_err} (after {} attempts)", self.cfg.max_parse_attempts))
    }
}

fn length_hint(finish_reason: Option<&str>) -> &'static str {
    if finish_reason == Some("length") {
        " (finish_reason=length: raise max_tokens)"
    } else {
        ""
    }
}

fn verdict_value(s: &str) -> Option<f64> {
    let t = s.trim().trim_matches(|c: char| c == '"' || c == '\'' || c == '*' || c == '.');
    if t.eq_ignore_ascii_case("a") {
        Some(1.0)
    } else if t.eq_ignore_ascii_case("b") {
        Some(0.0)
    } else if ["tie", "c", "draw", "equal", "a=b"].iter().any(|w| t.eq_ignore_ascii_case(w)) {
        Some(0.5)
    } else {
        None
    }
}

/// P(first wins) from the judge's text: the LAST `[[A]]` / `[[B]]` / `[[tie]]` in it, or a bare
/// `A` / `B` answer (single-token templates). `None` when there is no verdict.
pub fn parse_verdict(text: &str) -> Option<f64> {
    let mut found = None;
    let mut rest = text;
    while let Some(i) = rest.find("[[") {
        let after = &rest[i + 2..];
        if let Some(j) = after.find("]]") {
            if let Some(v) = verdict_value(&after[..j]) {
                found = Some(v);
            }
            rest = &after[j + 2..];
        } else {
            break;
        }
    }
    found.or_else(|| {
        let t = text.trim();
        if t.len() <= 6 {
            verdict_value(t.trim_matches(|c: char| c == '[' || c == ']' || c == '(' || c == ')'))
        } else {
            None
        }
    })
}

/// Which verdict a token stands for: 0 = A, 1 = B, 2 = tie.
fn token_class(tok: &str) -> Option<usize> {
    let t = tok.trim_matches(|c: char| c.is_whitespace() || c == '▁' || c == 'Ġ' || c == '[' || c == ']');
    if t == "A" || t == "a" {
        Some(0)
    } else if t == "B" || t == "b" {
        Some(1)
    } else if t.eq_ignore_ascii_case("tie") {
        Some(2)
    } else {
        None
    }
}

/// Continuous P(first wins) from token logprobs: at the verdict token (the token right after the
/// last `[[`, or the first token of a bare one-letter answer), `(P(A) + ½P(tie)) / (P(A)+P(B)+P(tie))`
/// over the top alternatives (variants such as `A`/` A` are summed). `None` when the position is
/// not found or no alternative is a verdict token.
pub fn verdict_from_logprobs(tokens: &[TokenLogprob]) -> Option<f64> {
    let mut text = String::new();
    let mut pos = None;
    for (i, t) in tokens.iter().enumerate() {
        if text.trim_end().ends_with("[[") && token_class(&t.token).is_some() {
            pos = Some(i);
        }
        text.push_str(&t.token);
    }
    if pos.is_none() && text.trim().len() <= 6 {
        // A bare answer (e.g. `--max-tokens 1` with a "reply with one letter" template): the first
        // verdict token, or else the first non-blank position, whose alternatives may still hold
        // A/B mass (AlpacaEval 2 reads the first token's logprobs the same way).
        pos = tokens
            .iter()
            .position(|t| !t.token.trim().is_empty() && token_class(&t.token).is_some())
            .or_else(|| tokens.iter().position(|t| !t.token.trim().is_empty()));
    }
    let t = &tokens[pos?];
    let mut mass = [0.0f64; 3];
    let alts: Vec<(String, f64)> =
        if t.top.is_empty() { vec![(t.token.clone(), t.logprob)] } else { t.top.clone() };
    for (tok, lp) in &alts {
        if let Some(c) = token_class(tok) {
            if lp.is_finite() {
                mass[c] += lp.exp();
            }
        }
    }
    let total = mass[0] + mass[1] + mass[2];
    if total.is_nan() || total <= 0.0 {
        return None;
    }
    Some(((mass[0] + 0.5 * mass[2]) / total).clamp(0.0, 1.0))
}

fn as_score(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Object(m) => m.iter().find(|(k, _)| k.eq_ignore_ascii_case("score")).and_then(|(_, v)| as_score(v)),
        _ => None,
    }
}

/// Response number from a key like `"3"`, `"id3"`, `"Response 3"`, `"#3"`.
fn key_id(k: &str) -> Option<usize> {
    let t = k.trim().to_ascii_lowercase();
    let t = t.trim_start_matches("response").trim_start_matches("id").trim_start_matches("candidate");
    t.trim().trim_start_matches('#').trim().parse().ok()
}

fn scores_from_json(v: &Value, out: &mut BTreeMap<usize, f64>) {
    static ID_SCORE: OnceLock<Regex> = OnceLock::new();
    let id_score = ID_SCORE.get_or_init(|| Regex::new(r"(?i)^(?:id|response_?)?(\d+)_score$").expect("valid regex"));
    match v {
        Value::Object(m) => {
            for (k, val) in m {
                if let Some(c) = id_score.captures(k.trim()) {
                    if let (Ok(id), Some(s)) = (c[1].parse::<usize>(), as_score(val)) {
                        out.entry(id).or_insert(s);
                    }
                } else if let Some(id) = key_id(k) {
                    if let Some(s) = as_score(val) {
                        out.entry(id).or_insert(s);
                    }
                } else if k.eq_ignore_ascii_case("scores") || k.eq_ignore_ascii_case("responses") {
                    scores_from_json(val, out);
                }
            }
        }
        Value::Array(a) => {
            for (i, e) in a.iter().enumerate() {
                let id = e
                    .get("id")
                    .or_else(|| e.get("response"))
                    .and_then(|x| x.as_u64().map(|u| u as usize).or_else(|| x.as_str().and_then(key_id)))
                    .unwrap_or(i + 1);
                if let Some(s) = as_score(e) {
                    out.entry(id).or_insert(s);
                }
            }
        }
        _ => {}
    }
}

/// Parses `n` scores (responses numbered 1..=n) from a judge answer. Accepts a JSON object or
/// array anywhere in the text (code fences and surrounding prose are ignored), in the shapes
/// `{"1": {"justification": .., "score": 4}}`, `{"1": 4}`, `{"id1_score": 4, ...}` (the paper's
/// dict), `{"scores": [..]}` or `[{"id": 1, "score": 4}]`; single-quoted Python-style dicts are
/// read by a pattern fallback. Every id 1..=n must be present with a score in `[0, max]`.
pub fn parse_scores(text: &str, n: usize, max: f64) -> Result<Vec<f64>> {
    let mut found = BTreeMap::new();
    // 1. JSON: try each `{`/`[` start against the last matching closer.
    let bytes = text.as_bytes();
    'outer: for (open, close) in [(b'{', b'}'), (b'[', b']')] {
        let Some(end) = bytes.iter().rposition(|&b| b == close) else { continue };
        for start in (0..end).filter(|&i| bytes[i] == open) {
            if let Ok(v) = serde_json::from_str::<Value>(&text[start..=end]) {
                scores_from_json(&v, &mut found);
                if (1..=n).all(|i| found.contains_key(&i)) {
                    break 'outer;
                }
                found.clear();
            }
        }
    }
    // 2. Pattern fallback (Python dicts with single quotes, trailing commas, prose).
    if !(1..=n).all(|i| found.contains_key(&i)) {
        static PATS: OnceLock<[Regex; 2]> = OnceLock::new();
        let pats = PATS.get_or_init(|| {
            [
                Regex::new(r#"(?i)["']?(?:id|response_?)?(\d+)_score["']?\s*:\s*["']?(\d+(?:\.\d+)?)"#).expect("valid regex"),
                Regex::new(r#"(?is)["'](\d+)["']\s*:\s*\{[^{}]*?["']score["']\s*:\s*["']?(\d+(?:\.\d+)?)"#).expect("valid regex"),
            ]
        });
        for re in pats.iter() {
            let mut m = BTreeMap::new();
            for c in re.captures_iter(text) {
                if let (Ok(id), Ok(s)) = (c[1].parse::<usize>(), c[2].parse::<f64>()) {
                    m.entry(id).or_insert(s);
                }
            }
            if (1..=n).all(|i| m.contains_key(&i)) {
                found = m;
                break;
            }
        }
    }
    let missing: Vec<usize> = (1..=n).filter(|i| !found.contains_key(i)).collect();
    if !missing.is_empty() {
        bail!("judge answer has no parsable score for response(s) {missing:?} of {n}");
    }
    let mut out = Vec::with_capacity(n);
    for i in 1..=n {
        let s = found[&i];
        if !(s.is_finite() && (0.0..=max).contains(&s)) {
            bail!("judge gave response {i} the score {s}, outside [0, {max}]");
        }
        out.push(s);
    }
    Ok(out)
}

/// P(a ≻ b) from two scores: 1, ½ or 0.
pub fn p_from_scores(sa: f64, sb: f64) -> f64 {
    if sa > sb {
        1.0
    } else if sa < sb {
        0.0
    } else {
        0.5
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_text() {
        assert_eq!(parse_verdict("A is better. [[A]]"), Some(1.0));
        assert_eq!(parse_verdict("maybe [[A]]... on reflection [[B]]"), Some(0.0));
        assert_eq!(parse_verdict("[[Tie]]"), Some(0.5));
        assert_eq!(parse_verdict(" B\n"), Some(0.0));
        assert_eq!(parse_verdict("Both are fine, hard to say."), None);
        assert_eq!(parse_verdict("[[C++]] is a language"), None);
    }

    fn tok(t: &str, lp: f64, top: &[(&str, f64)]) -> TokenLogprob {
        TokenLogprob { token: t.into(), logprob: lp, top: top.iter().map(|(a, b)| (a.to_string(), *b)).collect() }
    }

    #[test]
    fn verdict_logprobs() {
        let toks = vec![
            tok("A", -0.1, &[]),
            tok(" wins", -0.1, &[]),
            tok(" [[", -0.01, &[]),
            tok("A", 0.7f64.ln(), &[("A", 0.6f64.ln()), (" A", 0.1f64.ln()), ("B", 0.3f64.ln())]),
            tok("]]", -0.01, &[]),
        ];
        let p = verdict_from_logprobs(&toks).unwrap();
        assert!((p - 0.7).abs() < 1e-9, "{p}");
        let single = vec![tok("B", 0.8f64.ln(), &[("B", 0.8f64.ln()), ("A", 0.1f64.ln()), ("tie", 0.1f64.ln())])];
        let p = verdict_from_logprobs(&single).unwrap();
        assert!((p - 0.15).abs() < 1e-9, "{p}");
        assert_eq!(verdict_from_logprobs(&[tok("Hello", -1.0, &[])]), None);
        // A one-token answer that is not a letter still yields the A/B mass among its alternatives.
        let the = vec![tok("The", -0.5, &[("The", -0.5), ("A", 0.3f64.ln()), ("B", 0.1f64.ln())])];
        assert!((verdict_from_logprobs(&the).unwrap() - 0.75).abs() < 1e-9);
        assert_eq!(verdict_from_logprobs(&[tok("The", -0.5, &[("The", -0.5), ("I", -2.0)])]), None);
        // A long answer without [[ ]] is not read from its first token.
        assert_eq!(verdict_from_logprobs(&[tok("The first one is better", -0.5, &[("A", -0.1)])]), None);
    }

    #[test]
    fn scores_shapes() {
        let t = "Sure!\n```json\n{\"1\": {\"justification\": \"ok {fine}\", \"score\": 5}, \"2\": {\"justification\": \"meh\", \"score\": \"2\"}}\n```\nDone.";
        assert_eq!(parse_scores(t, 2, 6.0).unwrap(), vec![5.0, 2.0]);
        assert_eq!(parse_scores("{\"1\": 3, \"2\": 6}", 2, 6.0).unwrap(), vec![3.0, 6.0]);
        let paper = "{'id1_justification': 'it's good', 'id1_score': 6, 'id2_justification': 'bad', 'id2_score': 1}";
        assert_eq!(parse_scores(paper, 2, 6.0).unwrap(), vec![6.0, 1.0]);
        assert_eq!(parse_scores("[{\"id\": 2, \"score\": 1}, {\"id\": 1, \"score\": 4}]", 2, 6.0).unwrap(), vec![4.0, 1.0]);
        assert!(parse_scores("{\"1\": 3}", 2, 6.0).is_err());
        assert!(parse_scores("{\"1\": 3, \"2\": 9}", 2, 6.0).unwrap_err().to_string().contains("outside"));
        assert!(parse_scores("no json here", 1, 6.0).is_err());
    }
}
