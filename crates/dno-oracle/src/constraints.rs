//! Verifiable instruction-following constraints (IFEval-style): the oracle of
//! `--oracle verifier --verify constraints`.
//!
//! Each prompt carries a JSON array of constraints in its `constraints` column, e.g.
//! `[{"kind":"word_count","min":50,"max":120},{"kind":"include_keywords","words":["river"]}]`.
//! A response's score is the fraction of its prompt's constraints it satisfies, and
//! P(a ≻ b) is 1, 0 or ½ as a's fraction is above, below or equal to b's. The kinds and their
//! fields are documented in `schemas/constraints.md`; [`KINDS`] lists them. An unknown kind, a
//! missing, unknown or ill-typed field is an error (the caller names the prompt).
//!
//! Text conventions used by the checkers:
//! * a *word* is a whitespace-separated token containing at least one letter or digit;
//! * a *sentence* is a run of text ending in `.`, `!` or `?` (or at the end of the text) that
//!   contains a word; `e.g.`-style abbreviations count as sentence ends (kept simple);
//! * keywords match whole words, case-insensitively, after punctuation is dropped (`River,` matches
//!   `river`; `riverside` does not); a keyword of several words matches them in sequence;
//! * a *bullet* is a line starting (after indentation) with `-`, `*` or `•` followed by a space;
//! * *paragraphs* are separated by one or more blank lines.

use crate::verifier::normalize;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::{Map, Value};

/// Every constraint kind, in documentation order.
pub const KINDS: [&str; 15] = [
    "word_count",
    "sentence_count",
    "include_keywords",
    "avoid_keywords",
    "lowercase",
    "uppercase",
    "no_commas",
    "bullet_count",
    "paragraph_count",
    "ends_with",
    "starts_with",
    "json",
    "title",
    "placeholders",
    "ascii_only",
];

/// One machine-checkable constraint on a response.
#[derive(Debug, Clone, PartialEq)]
pub enum Constraint {
    /// `{"kind":"word_count","min":M,"max":N}` (either bound may be left out, not both).
    WordCount { min: Option<u64>, max: Option<u64> },
    /// `{"kind":"sentence_count","min":M,"max":N}`.
    SentenceCount { min: Option<u64>, max: Option<u64> },
    /// `{"kind":"include_keywords","words":[...]}`: every keyword appears.
    IncludeKeywords { words: Vec<String> },
    /// `{"kind":"avoid_keywords","words":[...]}`: no keyword appears.
    AvoidKeywords { words: Vec<String> },
    /// `{"kind":"lowercase"}`: no upper-case letter (and at least one letter).
    Lowercase,
    /// `{"kind":"uppercase"}`: no lower-case letter (and at least one letter).
    Uppercase,
    /// `{"kind":"no_commas"}`: no `,` (nor the full-width `，`).
    NoCommas,
    /// `{"kind":"bullet_count","count":N}`: exactly N bullet lines.
    BulletCount { count: u64 },
    /// `{"kind":"paragraph_count","count":N}`: exactly N paragraphs.
    ParagraphCount { count: u64 },
    /// `{"kind":"ends_with","phrase":"..."}`: the trimmed response ends with the phrase
    /// (case-insensitive; nothing but whitespace after it).
    EndsWith { phrase: String },
    /// `{"kind":"starts_with","word":"..."}`: the first word, punctuation stripped, is `word`
    /// (case-insensitive).
    StartsWith { word: String },
    /// `{"kind":"json"}`: the whole response is valid JSON (a surrounding ```` ``` ```` fence is allowed).
    Json,
    /// `{"kind":"title"}`: a title wrapped in double angle brackets, `<<like this>>`.
    Title,
    /// `{"kind":"placeholders","min":N}`: at least N placeholders in square brackets, `[name]`.
    Placeholders { min: u64 },
    /// `{"kind":"ascii_only"}`: every character is ASCII (the response is in plain English).
    AsciiOnly,
}

/// The outcome of one constraint on one response (kept in `raw` for audit).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub kind: &'static str,
    pub ok: bool,
    /// What was measured, e.g. `87 words`.
    pub detail: String,
}

fn fields(obj: &Map<String, Value>, kind: &str, allowed: &[&str]) -> Result<()> {
    for k in obj.keys() {
        if k != "kind" && !allowed.contains(&k.as_str()) {
            if allowed.is_empty() {
                bail!("constraint '{kind}': unknown field '{k}' (it takes no fields)");
            }
            bail!("constraint '{kind}': unknown field '{k}' (expected {})", allowed.join(", "));
        }
    }
    Ok(())
}

fn uint(obj: &Map<String, Value>, kind: &str, f: &str) -> Result<Option<u64>> {
    match obj.get(f) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).with_context(|| format!("constraint '{kind}': field '{f}' must be a non-negative integer, got {v}")),
    }
}

fn req_uint(obj: &Map<String, Value>, kind: &str, f: &str) -> Result<u64> {
    uint(obj, kind, f)?.with_context(|| format!("constraint '{kind}': missing field '{f}'"))
}

fn text(obj: &Map<String, Value>, kind: &str, f: &str) -> Result<String> {
    match obj.get(f) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => bail!("constraint '{kind}': field '{f}' is empty"),
        Some(v) => bail!("constraint '{kind}': field '{f}' must be a string, got {v}"),
        None => bail!("constraint '{kind}': missing field '{f}'"),
    }
}

fn words(obj: &Map<String, Value>, kind: &str) -> Result<Vec<String>> {
    let Some(v) = obj.get("words") else { bail!("constraint '{kind}': missing field 'words'") };
    let arr = v.as_array().with_context(|| format!("constraint '{kind}': field 'words' must be an array of strings, got {v}"))?;
    if arr.is_empty() {
        bail!("constraint '{kind}': field 'words' is empty");
    }
    arr.iter()
        .map(|w| match w {
            Value::String(s) if !normalize(s).is_empty() => Ok(s.clone()),
            _ => bail!("constraint '{kind}': every entry of 'words' must be a non-empty word, got {w}"),
        })
        .collect()
}

fn bounds(obj: &Map<String, Value>, kind: &str) -> Result<(Option<u64>, Option<u64>)> {
    fields(obj, kind, &["min", "max"])?;
    let (min, max) = (uint(obj, kind, "min")?, uint(obj, kind, "max")?);
    match (min, max) {
        (None, None) => bail!("constraint '{kind}': give 'min', 'max' or both"),
        (Some(a), Some(b)) if a > b => bail!("constraint '{kind}': min {a} is greater than max {b}"),
        _ => Ok((min, max)),
    }
}

impl Constraint {
    /// One constraint from its JSON object.
    pub fn from_json(v: &Value) -> Result<Constraint> {
        let obj = v.as_object().with_context(|| format!("a constraint must be a JSON object with a 'kind', got {v}"))?;
        let kind = match obj.get("kind") {
            Some(Value::String(k)) => k.as_str(),
            Some(k) => bail!("constraint field 'kind' must be a string, got {k}"),
            None => bail!("a constraint has no 'kind' field: {v}"),
        };
        let none = |c: Constraint| -> Result<Constraint> {
            fields(obj, kind, &[])?;
            Ok(c)
        };
        Ok(match kind {
            "word_count" => {
                let (min, max) = bounds(obj, kind)?;
                Constraint::WordCount { min, max }
            }
            "sentence_count" => {
                let (min, max) = bounds(obj, kind)?;
                Constraint::SentenceCount { min, max }
            }
            "include_keywords" => {
                fields(obj, kind, &["words"])?;
                Constraint::IncludeKeywords { words: words(obj, kind)? }
            }
            "avoid_keywords" => {
                fields(obj, kind, &["words"])?;
                Constraint::AvoidKeywords { words: words(obj, kind)? }
            }
            "lowercase" => none(Constraint::Lowercase)?,
            "uppercase" => none(Constraint::Uppercase)?,
            "no_commas" => none(Constraint::NoCommas)?,
            "bullet_count" => {
                fields(obj, kind, &["count"])?;
                Constraint::BulletCount { count: req_uint(obj, kind, "count")? }
            }
            "paragraph_count" => {
                fields(obj, kind, &["count"])?;
                let count = req_uint(obj, kind, "count")?;
                if count == 0 {
                    bail!("constraint 'paragraph_count': count must be at least 1");
                }
                Constraint::ParagraphCount { count }
            }
            "ends_with" => {
                fields(obj, kind, &["phrase"])?;
                Constraint::EndsWith { phrase: text(obj, kind, "phrase")?.trim().to_string() }
            }
            "starts_with" => {
                fields(obj, kind, &["word"])?;
                let word = text(obj, kind, "word")?;
                if word.split_whitespace().count() != 1 {
                    bail!("constraint 'starts_with': field 'word' must be a single word, got {word:?}");
                }
                Constraint::StartsWith { word: word.trim().to_string() }
            }
            "json" => none(Constraint::Json)?,
            "title" => none(Constraint::Title)?,
            "placeholders" => {
                fields(obj, kind, &["min"])?;
                let min = req_uint(obj, kind, "min")?;
                if min == 0 {
                    bail!("constraint 'placeholders': min must be at least 1");
                }
                Constraint::Placeholders { min }
            }
            "ascii_only" => none(Constraint::AsciiOnly)?,
            other => bail!("unknown constraint kind '{other}' (expected one of: {})", KINDS.join(", ")),
        })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Constraint::WordCount { .. } => "word_count",
            Constraint::SentenceCount { .. } => "sentence_count",
            Constraint::IncludeKeywords { .. } => "include_keywords",
            Constraint::AvoidKeywords { .. } => "avoid_keywords",
            Constraint::Lowercase => "lowercase",
            Constraint::Uppercase => "uppercase",
            Constraint::NoCommas => "no_commas",
            Constraint::BulletCount { .. } => "bullet_count",
            Constraint::ParagraphCount { .. } => "paragraph_count",
            Constraint::EndsWith { .. } => "ends_with",
            Constraint::StartsWith { .. } => "starts_with",
            Constraint::Json => "json",
            Constraint::Title => "title",
            Constraint::Placeholders { .. } => "placeholders",
            Constraint::AsciiOnly => "ascii_only",
        }
    }

    /// Check `response` against this constraint.
    pub fn check(&self, response: &str) -> Check {
        let (ok, detail) = match self {
            Constraint::WordCount { min, max } => {
                let n = word_count(response);
                (in_bounds(n, *min, *max), format!("{n} words"))
            }
            Constraint::SentenceCount { min, max } => {
                let n = sentence_count(response);
                (in_bounds(n, *min, *max), format!("{n} sentences"))
            }
            Constraint::IncludeKeywords { words } => {
                let missing: Vec<&str> = words.iter().filter(|w| !has_keyword(response, w)).map(String::as_str).collect();
                (missing.is_empty(), if missing.is_empty() { "all present".into() } else { format!("missing {missing:?}") })
            }
            Constraint::AvoidKeywords { words } => {
                let found: Vec<&str> = words.iter().filter(|w| has_keyword(response, w)).map(String::as_str).collect();
                (found.is_empty(), if found.is_empty() { "none present".into() } else { format!("found {found:?}") })
            }
            Constraint::Lowercase => {
                let upper = response.chars().filter(|c| c.is_uppercase()).count();
                let letters = response.chars().any(|c| c.is_alphabetic());
                (letters && upper == 0, format!("{upper} upper-case letters"))
            }
            Constraint::Uppercase => {
                let lower = response.chars().filter(|c| c.is_lowercase()).count();
                let letters = response.chars().any(|c| c.is_alphabetic());
                (letters && lower == 0, format!("{lower} lower-case letters"))
            }
            Constraint::NoCommas => {
                let n = response.chars().filter(|&c| c == ',' || c == '，').count();
                (n == 0, format!("{n} commas"))
            }
            Constraint::BulletCount { count } => {
                let n = bullet_count(response);
                (n == *count, format!("{n} bullets"))
            }
            Constraint::ParagraphCount { count } => {
                let n = paragraph_count(response);
                (n == *count, format!("{n} paragraphs"))
            }
            Constraint::EndsWith { phrase } => {
                let ok = response.trim_end().to_lowercase().ends_with(&phrase.to_lowercase());
                let tail: String = response.trim_end().chars().rev().take(phrase.chars().count() + 10).collect::<Vec<_>>().into_iter().rev().collect();
                (ok, format!("ends with {tail:?}"))
            }
            Constraint::StartsWith { word } => {
                let first = response.split_whitespace().next().unwrap_or("");
                let first = first.trim_matches(|c: char| !c.is_alphanumeric());
                (first.to_lowercase() == word.to_lowercase(), format!("first word {first:?}"))
            }
            Constraint::Json => match parse_json(response) {
                Ok(()) => (true, "valid JSON".into()),
                Err(e) => (false, format!("not JSON: {e}")),
            },
            Constraint::Title => match title(response) {
                Some(t) => (true, format!("title {t:?}")),
                None => (false, "no <<title>>".into()),
            },
            Constraint::Placeholders { min } => {
                let n = placeholder_count(response);
                (n >= *min, format!("{n} placeholders"))
            }
            Constraint::AsciiOnly => {
                let n = response.chars().filter(|c| !c.is_ascii()).count();
                (n == 0, format!("{n} non-ASCII characters"))
            }
        };
        Check { kind: self.kind(), ok, detail }
    }
}

/// Parse a `constraints` column value: a non-empty JSON array of constraint objects.
pub fn parse(json: &str) -> Result<Vec<Constraint>> {
    let v: Value = serde_json::from_str(json).context("constraints are not valid JSON")?;
    let arr = v.as_array().with_context(|| format!("constraints must be a JSON array of objects, got {}", crate::client::snippet(json, 60)))?;
    if arr.is_empty() {
        bail!("constraints: the array is empty (give at least one constraint, or leave the column null)");
    }
    arr.iter().enumerate().map(|(i, c)| Constraint::from_json(c).with_context(|| format!("constraint {}", i + 1))).collect()
}

/// Check every constraint.
pub fn check_all(constraints: &[Constraint], response: &str) -> Vec<Check> {
    constraints.iter().map(|c| c.check(response)).collect()
}

/// Fraction of checks that passed (1.0 for an empty list).
pub fn fraction(checks: &[Check]) -> f64 {
    if checks.is_empty() {
        return 1.0;
    }
    checks.iter().filter(|c| c.ok).count() as f64 / checks.len() as f64
}

fn in_bounds(n: u64, min: Option<u64>, max: Option<u64>) -> bool {
    min.is_none_or(|m| n >= m) && max.is_none_or(|m| n <= m)
}

fn is_word(tok: &str) -> bool {
    tok.chars().any(|c| c.is_alphanumeric())
}

pub fn word_count(s: &str) -> u64 {
    s.split_whitespace().filter(|t| is_word(t)).count() as u64
}

pub fn sentence_count(s: &str) -> u64 {
    let mut n = 0u64;
    let mut has_word = false;
    for c in s.chars() {
        if c.is_alphanumeric() {
            has_word = true;
        }
        if matches!(c, '.' | '!' | '?') && has_word {
            n += 1;
            has_word = false;
        }
    }
    n + has_word as u64
}

fn has_keyword(response: &str, word: &str) -> bool {
    let hay = format!(" {} ", normalize(response));
    hay.contains(&format!(" {} ", normalize(word)))
}

pub fn bullet_count(s: &str) -> u64 {
    s.lines()
        .filter(|l| {
            let t = l.trim_start();
            let mut it = t.chars();
            matches!(it.next(), Some('-' | '*' | '•')) && it.next().is_some_and(char::is_whitespace)
        })
        .count() as u64
}

pub fn paragraph_count(s: &str) -> u64 {
    let mut n = 0u64;
    let mut in_para = false;
    for l in s.lines() {
        if l.trim().is_empty() {
            in_para = false;
        } else if !in_para {
            in_para = true;
            n += 1;
        }
    }
    n
}

fn parse_json(s: &str) -> std::result::Result<(), String> {
    let mut t = s.trim();
    if let Some(rest) = t.strip_prefix("```") {
        let rest = rest.strip_prefix("json").or_else(|| rest.strip_prefix("JSON")).unwrap_or(rest);
        t = rest.strip_suffix("```").unwrap_or(rest).trim();
    }
    serde_json::from_str::<Value>(t).map(|_| ()).map_err(|e| e.to_string())
}

fn title(s: &str) -> Option<&str> {
    let mut rest = s;
    while let Some(i) = rest.find("<<") {
        let after = &rest[i + 2..];
        let end = after.find(">>")?;
        let t = &after[..end];
        if !t.trim().is_empty() && !t.contains('\n') && !t.contains("<<") {
            return Some(t);
        }
        rest = after;
    }
    None
}

pub fn placeholder_count(s: &str) -> u64 {
    let mut n = 0u64;
    let mut rest = s;
    while let Some(i) = rest.find('[') {
        let after = &rest[i + 1..];
        match after.find(|c| c == ']' || c == '[' || c == '\n') {
            Some(j) if after[j..].starts_with(']') => {
                if !after[..j].trim().is_empty() {
                    n += 1;
                }
                rest = &after[j + 1..];
            }
            Some(j) => rest = &after[j..],
            None => break,
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(json: &str) -> Constraint {
        Constraint::from_json(&serde_json::from_str(json).unwrap()).unwrap()
    }
    fn ok(json: &str, response: &str) -> bool {
        c(json).check(response).ok
    }
    fn err(json: &str) -> String {
        format!("{:#}", parse(json).unwrap_err())
    }

    #[test]
    fn every_kind_parses_and_names_itself() {
        let examples = [
            r#"{"kind":"word_count","min":1}"#,
            r#"{"kind":"sentence_count","max":3}"#,
            r#"{"kind":"include_keywords","words":["a"]}"#,
            r#"{"kind":"avoid_keywords","words":["a"]}"#,
            r#"{"kind":"lowercase"}"#,
            r#"{"kind":"uppercase"}"#,
            r#"{"kind":"no_commas"}"#,
            r#"{"kind":"bullet_count","count":3}"#,
            r#"{"kind":"paragraph_count","count":2}"#,
            r#"{"kind":"ends_with","phrase":"Thanks."}"#,
            r#"{"kind":"starts_with","word":"Dear"}"#,
            r#"{"kind":"json"}"#,
            r#"{"kind":"title"}"#,
            r#"{"kind":"placeholders","min":2}"#,
            r#"{"kind":"ascii_only"}"#,
        ];
        assert_eq!(examples.len(), KINDS.len());
        for (e, k) in examples.iter().zip(KINDS) {
            assert_eq!(c(e).kind(), k);
        }
        let all = format!("[{}]", examples.join(","));
        assert_eq!(parse(&all).unwrap().len(), 15);
    }

    #[test]
    fn bad_constraints_are_clear_errors() {
        assert!(err("not json").contains("not valid JSON"));
        assert!(err(r#"{"kind":"json"}"#).contains("JSON array"));
        assert!(err("[]").contains("empty"));
        assert!(err(r#"[{"kind":"shout"}]"#).contains("unknown constraint kind 'shout'"));
        assert!(err(r#"[{"min":3}]"#).contains("no 'kind'"));
        assert!(err(r#"[{"kind":3}]"#).contains("'kind' must be a string"));
        assert!(err(r#"[{"kind":"word_count"}]"#).contains("give 'min', 'max'"));
        assert!(err(r#"[{"kind":"word_count","min":9,"max":3}]"#).contains("min 9 is greater than max 3"));
        assert!(err(r#"[{"kind":"word_count","min":-1}]"#).contains("non-negative integer"));
        assert!(err(r#"[{"kind":"word_count","min":2.5}]"#).contains("non-negative integer"));
        assert!(err(r#"[{"kind":"word_count","mni":2}]"#).contains("unknown field 'mni'"));
        assert!(err(r#"[{"kind":"lowercase","strict":true}]"#).contains("takes no fields"));
        assert!(err(r#"[{"kind":"include_keywords","words":[]}]"#).contains("'words' is empty"));
        assert!(err(r#"[{"kind":"include_keywords","words":"river"}]"#).contains("array of strings"));
        assert!(err(r#"[{"kind":"include_keywords","words":["!!"]}]"#).contains("non-empty word"));
        assert!(err(r#"[{"kind":"bullet_count"}]"#).contains("missing field 'count'"));
        assert!(err(r#"[{"kind":"paragraph_count","count":0}]"#).contains("at least 1"));
        assert!(err(r#"[{"kind":"ends_with","phrase":"  "}]"#).contains("'phrase' is empty"));
        assert!(err(r#"[{"kind":"ends_with","phrase":7}]"#).contains("must be a string"));
        assert!(err(r#"[{"kind":"starts_with","word":"two words"}]"#).contains("single word"));
        assert!(err(r#"[{"kind":"placeholders","min":0}]"#).contains("at least 1"));
        // The position of the bad constraint is named.
        assert!(err(r#"[{"kind":"json"},{"kind":"nope"}]"#).contains("constraint 2"));
    }

    #[test]
    fn word_count_bounds() {
        let j = r#"{"kind":"word_count","min":3,"max":5}"#;
        assert!(ok(j, "one two three"));
        assert!(ok(j, "one two three four five"));
        assert!(!ok(j, "one two"));
        assert!(!ok(j, "one two three four five six"));
        // Punctuation-only tokens are not words; hyphenated and numbers are one word each.
        assert!(!ok(j, "one - two —"));
        assert!(ok(j, "well-known 42 things"));
        assert!(!ok(j, ""));
        assert!(ok(r#"{"kind":"word_count","max":2}"#, ""));
        assert_eq!(c(j).check("a b").detail, "2 words");
    }

    #[test]
    fn sentence_count_bounds() {
        let j = r#"{"kind":"sentence_count","min":2,"max":3}"#;
        assert!(ok(j, "It rains. We stay in."));
        assert!(ok(j, "It rains! Why? Because."));
        assert!(!ok(j, "It rains."));
        assert!(!ok(j, "A. B. C. D."));
        // A final sentence without a full stop counts; runs of punctuation end one sentence.
        assert!(ok(j, "It rains... We stay in"));
        assert_eq!(sentence_count(""), 0);
        assert_eq!(sentence_count("..."), 0);
        assert_eq!(sentence_count("Wait?! Yes."), 2);
    }

    #[test]
    fn include_and_avoid_keywords() {
        let inc = r#"{"kind":"include_keywords","words":["river","Green tea"]}"#;
        assert!(ok(inc, "The River was calm; we drank green tea."));
        assert!(!ok(inc, "The river was calm."));
        assert!(!ok(inc, "The riverside; green tea."), "whole words only");
        assert!(!ok(inc, ""));
        assert_eq!(c(inc).check("the river").detail, "missing [\"Green tea\"]");
        let avoid = r#"{"kind":"avoid_keywords","words":["very"]}"#;
        assert!(ok(avoid, "Everything is fine."), "'very' inside 'Everything' is not the word");
        assert!(!ok(avoid, "It is VERY fine."));
        assert!(!ok(avoid, "very"));
        assert!(ok(avoid, ""));
    }

    #[test]
    fn lowercase_and_uppercase() {
        let lo = r#"{"kind":"lowercase"}"#;
        assert!(ok(lo, "all lower case, 123 ok!"));
        assert!(!ok(lo, "one Capital"));
        assert!(!ok(lo, "123 !!"), "no letters at all is not a lowercase answer");
        assert!(!ok(lo, "ÉCOLE"));
        let up = r#"{"kind":"uppercase"}"#;
        assert!(ok(up, "ALL CAPS, 42!"));
        assert!(!ok(up, "ALL CAPs"));
        assert!(!ok(up, ""));
    }

    #[test]
    fn no_commas() {
        let j = r#"{"kind":"no_commas"}"#;
        assert!(ok(j, "No commas here. None at all."));
        assert!(!ok(j, "Yes, one."));
        assert!(!ok(j, "full-width，comma"));
        assert!(ok(j, ""));
    }

    #[test]
    fn bullet_count_exact() {
        let j = r#"{"kind":"bullet_count","count":3}"#;
        assert!(ok(j, "Tips:\n- one\n- two\n  * three\nDone."));
        assert!(ok(j, "• a\n• b\n• c"));
        assert!(!ok(j, "- one\n- two"));
        assert!(!ok(j, "- a\n- b\n- c\n- d"));
        // Bold text, a dash inside a line and a hyphen without a space are not bullets.
        assert!(!ok(j, "**bold** start\n-nospace\nword - word\n- one\n- two"));
        assert!(ok(r#"{"kind":"bullet_count","count":0}"#, "No list."));
    }

    #[test]
    fn paragraph_count_exact() {
        let j = r#"{"kind":"paragraph_count","count":2}"#;
        assert!(ok(j, "First line.\nStill first.\n\nSecond."));
        assert!(ok(j, "\n\nFirst.\n \n\t\n\nSecond.\n\n"));
        assert!(!ok(j, "Only one."));
        assert!(!ok(j, "A\n\nB\n\nC"));
        assert!(!ok(j, ""));
    }

    #[test]
    fn ends_with_phrase() {
        let j = r#"{"kind":"ends_with","phrase":"See you soon!"}"#;
        assert!(ok(j, "Hello.\nSee you soon!"));
        assert!(ok(j, "Hello. see you SOON!  \n"));
        assert!(!ok(j, "See you soon! Bye."));
        assert!(!ok(j, "See you soon"));
        assert!(!ok(j, ""));
    }

    #[test]
    fn starts_with_word() {
        let j = r#"{"kind":"starts_with","word":"Dear"}"#;
        assert!(ok(j, "Dear neighbour, hello."));
        assert!(ok(j, "  \"dear,\" she wrote"));
        assert!(!ok(j, "Hello dear"));
        assert!(!ok(j, "Dearest friend"));
        assert!(!ok(j, ""));
    }

    #[test]
    fn json_output() {
        let j = r#"{"kind":"json"}"#;
        assert!(ok(j, r#"{"a": [1, 2]}"#));
        assert!(ok(j, "```json\n{\"a\": 1}\n```"));
        assert!(ok(j, "```\n[1, 2]\n```"));
        assert!(!ok(j, "Here is the JSON: {\"a\": 1}"));
        assert!(!ok(j, "{\"a\": 1,}"));
        assert!(!ok(j, ""));
    }

    #[test]
    fn title_in_double_angle_brackets() {
        let j = r#"{"kind":"title"}"#;
        assert!(ok(j, "<<A Walk in the Park>>\nText."));
        assert!(ok(j, "Text << >> then <<Real title>>"));
        assert!(!ok(j, "<< >> only blank"));
        assert!(!ok(j, "<single brackets>"));
        assert!(!ok(j, "<<unterminated"));
        assert!(!ok(j, "<<split\ntitle>>"));
        assert_eq!(c(j).check("x <<T>> y").detail, "title \"T\"");
    }

    #[test]
    fn placeholders_at_least() {
        let j = r#"{"kind":"placeholders","min":2}"#;
        assert!(ok(j, "Dear [name], meet me at [place]."));
        assert!(ok(j, "[a] [b] [c]"));
        assert!(!ok(j, "Dear [name], see you."));
        assert!(!ok(j, "Empty [] and [ ] do not count, nor [nested [x] once"), "only [x] counts");
        assert!(!ok(j, "no brackets"));
        assert_eq!(placeholder_count("[a\nb] [c]"), 1);
        assert_eq!(placeholder_count("[[x]]"), 1);
    }

    #[test]
    fn ascii_only() {
        let j = r#"{"kind":"ascii_only"}"#;
        assert!(ok(j, "Plain English, 100% ASCII!"));
        assert!(!ok(j, "Café"));
        assert!(!ok(j, "dash — here"));
        assert!(ok(j, ""));
    }

    #[test]
    fn fraction_of_checks() {
        let cs = parse(r#"[{"kind":"lowercase"},{"kind":"no_commas"},{"kind":"word_count","max":3}]"#).unwrap();
        assert_eq!(fraction(&check_all(&cs, "all fine here")), 1.0);
        assert!((fraction(&check_all(&cs, "Not, fine")) - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(fraction(&check_all(&cs, "Not, Fine at all today")), 0.0);
        assert_eq!(fraction(&[]), 1.0);
    }
}
