//! Data in: records from the files users already have (JSONL, JSON arrays, CSV, Parquet from any
//! writer) turned into prompts, samples or preference pairs.
//!
//! Every record carries its location (`FILE: line N`, `FILE: item N`, `FILE: row N`), and every
//! error names it, so a bad record is one line the user can find.
//!
//! Conversations use the OpenAI / HF chat format: a list of `{role, content}` turns. A prompt's
//! conversation is stored as `system` (an optional first `system` turn), `history` (the earlier
//! user/assistant turns, JSON) and `prompt` (the final user turn).

use crate::io::resolve_inputs;
use crate::rows::{PairRow, PromptRow, SampleRow, Turn};
use crate::{is_repetitive, sample_id, stable_hash};
use anyhow::{anyhow, bail, Context, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// Input formats of the import commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
    /// One JSON array of objects.
    Json,
    /// CSV with a header row.
    Csv,
    /// Parquet: a file, or a directory of shards.
    Parquet,
}

impl std::str::FromStr for Format {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "jsonl" | "ndjson" => Ok(Format::Jsonl),
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            "parquet" => Ok(Format::Parquet),
            _ => bail!("unknown format '{s}' (expected jsonl, json, csv or parquet)"),
        }
    }
}

impl Format {
    /// The format of `path`: a directory is Parquet shards; otherwise the extension decides, and
    /// a `.json` file is a JSON array when its first non-blank character is `[`, else JSONL.
    pub fn guess(path: &Path) -> Result<Format> {
        if path.is_dir() {
            return Ok(Format::Parquet);
        }
        match path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).as_deref() {
            Some("parquet" | "pq") => Ok(Format::Parquet),
            Some("csv") => Ok(Format::Csv),
            Some("jsonl" | "ndjson") => Ok(Format::Jsonl),
            Some("json") => {
                let mut f = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
                let mut buf = [0u8; 4096];
                let n = f.read(&mut buf).with_context(|| format!("{}: cannot read", path.display()))?;
                Ok(if buf[..n].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') { Format::Json } else { Format::Jsonl })
            }
            _ => bail!("{}: cannot tell the format from the extension; pass --format jsonl|json|csv|parquet", path.display()),
        }
    }
}

/// One input record: its fields and where it came from (`FILE: line N` / `item N` / `row N`).
#[derive(Debug, Clone)]
pub struct Record {
    pub loc: String,
    pub fields: Map<String, Value>,
}

pub type Records = Box<dyn Iterator<Item = Result<Record>>>;

/// Stream the records of `path` (a file, or for Parquet a directory of shards).
pub fn records(path: &Path, format: Option<Format>) -> Result<Records> {
    let format = match format {
        Some(f) => f,
        None => Format::guess(path)?,
    };
    match format {
        Format::Jsonl => jsonl_records(path),
        Format::Json => json_records(path),
        Format::Csv => csv_records(path),
        Format::Parquet => parquet_records(path),
    }
}

fn jsonl_records(path: &Path) -> Result<Records> {
    let f = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let name = path.display().to_string();
    let it = BufReader::new(f).lines().enumerate().filter_map(move |(i, line)| {
        let loc = format!("{name}: line {}", i + 1);
        let line = match line {
            Ok(l) => l,
            Err(e) => return Some(Err(anyhow!("{loc}: {e}"))),
        };
        if line.trim().is_empty() {
            return None;
        }
        Some(match serde_json::from_str::<Value>(&line) {
            Ok(Value::Object(fields)) => Ok(Record { loc, fields }),
            Ok(_) => Err(anyhow!("{loc}: not a JSON object")),
            Err(e) => Err(anyhow!("{loc}: not valid JSON: {e}")),
        })
    });
    Ok(Box::new(it))
}

fn json_records(path: &Path) -> Result<Records> {
    let f = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let name = path.display().to_string();
    let items = match serde_json::from_reader::<_, Value>(BufReader::new(f)) {
        Ok(Value::Array(items)) => items,
        Ok(_) => bail!("{name}: expected a JSON array of objects"),
        Err(e) => bail!("{name}: not valid JSON: {e}"),
    };
    Ok(Box::new(items.into_iter().enumerate().map(move |(i, v)| {
        let loc = format!("{name}: item {i}");
        match v {
            Value::Object(fields) => Ok(Record { loc, fields }),
            _ => Err(anyhow!("{loc}: not a JSON object")),
        }
    })))
}

fn csv_records(path: &Path) -> Result<Records> {
    let mut rdr = csv::ReaderBuilder::new().flexible(false).from_path(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let headers: Vec<String> =
        rdr.headers().with_context(|| format!("{}: cannot read CSV header", path.display()))?.iter().map(String::from).collect();
    let name = path.display().to_string();
    let it = rdr.into_records().map(move |r| {
        let r = r.map_err(|e| anyhow!("{name}: {e}"))?;
        let loc = format!("{name}: line {}", r.position().map(|p| p.line()).unwrap_or(0));
        Ok(Record { loc, fields: headers.iter().cloned().zip(r.iter().map(|s| Value::String(s.to_string()))).collect() })
    });
    Ok(Box::new(it))
}

fn parquet_records(path: &Path) -> Result<Records> {
    let files = resolve_inputs(&[path.to_path_buf()])?;
    Ok(Box::new(files.into_iter().flat_map(|file| match parquet_file_records(&file) {
        Ok(it) => it,
        Err(e) => Box::new(std::iter::once(Err(e))),
    })))
}

fn parquet_file_records(file: &PathBuf) -> Result<Records> {
    let name = file.display().to_string();
    let f = std::fs::File::open(file).with_context(|| format!("{name}: cannot open"))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(f)
        .and_then(|b| b.with_batch_size(crate::io::READ_BATCH_ROWS).build())
        .map_err(|e| anyhow!("{name}: not a valid Parquet file (truncated or corrupt?): {e}"))?;
    let mut row0 = 0usize;
    Ok(Box::new(reader.flat_map(move |b| {
        let out: Vec<Result<Record>> = match b {
            Err(e) => vec![Err(anyhow!("{name}: cannot read data (corrupt, or an unsupported encoding?): {e}"))],
            Ok(b) => batch_records(&b, &name, row0),
        };
        row0 += out.len();
        out
    })))
}

fn batch_records(b: &RecordBatch, name: &str, row0: usize) -> Vec<Result<Record>> {
    let schema = b.schema();
    // Dictionary-encoded columns (pandas categoricals) are decoded once per batch.
    let cols: Vec<ArrayRef> = b
        .columns()
        .iter()
        .map(|a| match a.data_type() {
            DataType::Dictionary(_, v) => arrow_cast::cast(a, v).unwrap_or_else(|_| a.clone()),
            _ => a.clone(),
        })
        .collect();
    (0..b.num_rows())
        .map(|i| {
            let loc = format!("{name}: row {}", row0 + i);
            let mut fields = Map::new();
            for (f, a) in schema.fields().iter().zip(&cols) {
                let v = arrow_value(a.as_ref(), i).map_err(|e| anyhow!("{loc}: column '{}': {e}", f.name()))?;
                fields.insert(f.name().clone(), v);
            }
            Ok(Record { loc, fields })
        })
        .collect()
}

/// One Arrow value as JSON: strings of every layout, integers of every width, floats, bools,
/// lists and structs (chat `messages`), and dictionary-encoded values of those.
fn arrow_value(a: &dyn Array, i: usize) -> Result<Value> {
    if a.is_null(i) {
        return Ok(Value::Null);
    }
    use DataType::*;
    Ok(match a.data_type() {
        Null => Value::Null,
        Boolean => Value::Bool(a.as_boolean().value(i)),
        Utf8 => Value::String(a.as_string::<i32>().value(i).to_string()),
        LargeUtf8 => Value::String(a.as_string::<i64>().value(i).to_string()),
        Utf8View => Value::String(a.as_string_view().value(i).to_string()),
        Int8 => Value::from(a.as_primitive::<Int8Type>().value(i)),
        Int16 => Value::from(a.as_primitive::<Int16Type>().value(i)),
        Int32 => Value::from(a.as_primitive::<Int32Type>().value(i)),
        Int64 => Value::from(a.as_primitive::<Int64Type>().value(i)),
        UInt8 => Value::from(a.as_primitive::<UInt8Type>().value(i)),
        UInt16 => Value::from(a.as_primitive::<UInt16Type>().value(i)),
        UInt32 => Value::from(a.as_primitive::<UInt32Type>().value(i)),
        UInt64 => Value::from(a.as_primitive::<UInt64Type>().value(i)),
        Float16 => float(a.as_primitive::<Float16Type>().value(i).to_f64()),
        Float32 => float(a.as_primitive::<Float32Type>().value(i) as f64),
        Float64 => float(a.as_primitive::<Float64Type>().value(i)),
        Dictionary(_, _) => {
            let d = a.as_any_dictionary();
            let k = d.normalized_keys()[i];
            arrow_value(d.values().as_ref(), k)?
        }
        List(_) => list_value(a.as_list::<i32>().value(i).as_ref())?,
        LargeList(_) => list_value(a.as_list::<i64>().value(i).as_ref())?,
        FixedSizeList(_, _) => list_value(a.as_fixed_size_list().value(i).as_ref())?,
        Struct(fields) => {
            let s = a.as_struct();
            let mut m = serde_json::Map::new();
            for (f, c) in fields.iter().zip(s.columns()) {
                m.insert(f.name().clone(), arrow_value(c.as_ref(), i)?);
            }
            Value::Object(m)
        }
        other => bail!("type {other} is not supported here (expected strings, numbers, bools, lists or structs)"),
    })
}

fn float(x: f64) -> Value {
    serde_json::Number::from_f64(x).map(Value::Number).unwrap_or(Value::Null)
}

fn list_value(items: &dyn Array) -> Result<Value> {
    Ok(Value::Array((0..items.len()).map(|j| arrow_value(items, j)).collect::<Result<_>>()?))
}

// ---------------------------------------------------------------------------------------------
// Field access

fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

impl Record {
    /// A field's value; a missing field and a null read the same (`None`).
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.fields.get(field).filter(|v| !v.is_null())
    }

    /// A required text field: a string (numbers are written out, for ids and answers only when
    /// `numbers` is set).
    fn text(&self, field: &str, numbers: bool, hint: &str) -> Result<String> {
        match self.fields.get(field) {
            None => bail!("{}: missing field '{field}'{hint} (found: {})", self.loc, self.fields.keys().cloned().collect::<Vec<_>>().join(", ")),
            Some(v) => self.as_text(field, v, numbers)?.ok_or_else(|| anyhow!("{}: field '{field}' is null", self.loc)),
        }
    }

    /// An optional text field (absent or null: `None`).
    fn opt_text(&self, field: &str, numbers: bool) -> Result<Option<String>> {
        match self.fields.get(field) {
            None => Ok(None),
            Some(v) => self.as_text(field, v, numbers),
        }
    }

    /// An optional JSON-valued field as text: a string is taken as it is (JSON already, e.g. a
    /// CSV cell), an array or object is written as compact JSON.
    fn opt_json_text(&self, field: &str) -> Result<Option<String>> {
        match self.fields.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v @ (Value::Array(_) | Value::Object(_))) => Ok(Some(serde_json::to_string(v)?)),
            Some(other) => bail!("{}: field '{field}' must be JSON (an array, or a string holding one), not {}", self.loc, describe(other)),
        }
    }

    fn as_text(&self, field: &str, v: &Value, numbers: bool) -> Result<Option<String>> {
        match v {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s.clone())),
            Value::Number(n) if numbers => Ok(Some(n.to_string())),
            Value::Bool(b) if numbers => Ok(Some(b.to_string())),
            other => bail!("{}: field '{field}' must be a string, not {}", self.loc, describe(other)),
        }
    }

    /// An optional integer field.
    fn opt_int(&self, field: &str) -> Result<Option<i64>> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| anyhow!("{}: field '{field}' = {n} is not a 64-bit integer", self.loc)),
            Some(Value::String(s)) => {
                s.trim().parse::<i64>().map(Some).map_err(|_| anyhow!("{}: field '{field}' = '{s}' is not an integer", self.loc))
            }
            Some(other) => bail!("{}: field '{field}' must be an integer, not {}", self.loc, describe(other)),
        }
    }

    /// An optional float field.
    fn opt_float(&self, field: &str) -> Result<Option<f64>> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(Value::String(s)) => s.trim().parse::<f64>().map(Some).map_err(|_| anyhow!("{}: field '{field}' = '{s}' is not a number", self.loc)),
            Some(other) => bail!("{}: field '{field}' must be a number, not {}", self.loc, describe(other)),
        }
    }

    /// An optional bool field.
    fn opt_bool(&self, field: &str) -> Result<Option<bool>> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if s == "true" || s == "false" => Ok(Some(s == "true")),
            Some(other) => bail!("{}: field '{field}' must be a bool, not {}", self.loc, describe(other)),
        }
    }

    /// A list of `{role, content}` turns (a list value, or a string holding one as JSON, as in CSV).
    fn turns(&self, field: &str, v: &Value) -> Result<Vec<Turn>> {
        let parsed;
        let v = match v {
            Value::String(s) => {
                parsed = serde_json::from_str::<Value>(s)
                    .map_err(|e| anyhow!("{}: field '{field}': not a list of {{role, content}} turns: {e}", self.loc))?;
                &parsed
            }
            v => v,
        };
        let Value::Array(items) = v else { bail!("{}: field '{field}' must be a list of {{role, content}} turns, not {}", self.loc, describe(v)) };
        items
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let role = t.get("role").and_then(Value::as_str);
                let content = t.get("content").and_then(Value::as_str);
                match (role, content) {
                    (Some(r), Some(c)) if ["system", "user", "assistant"].contains(&r) => Ok(Turn { role: r.into(), content: c.into() }),
                    (Some(r), Some(_)) => bail!("{}: field '{field}': turn {i} has role '{r}' (expected system, user or assistant)", self.loc),
                    _ => bail!("{}: field '{field}': turn {i} is not an object with string 'role' and 'content'", self.loc),
                }
            })
            .collect()
    }
}

/// A prompt as stored: the system message, the earlier turns and the final user turn.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    pub system: Option<String>,
    pub history: Vec<Turn>,
    pub prompt: String,
}

impl Conversation {
    /// The `history` column value (`None` for a single-turn prompt).
    pub fn history_json(&self) -> Option<String> {
        (!self.history.is_empty()).then(|| serde_json::to_string(&self.history).expect("turns serialise"))
    }
}

/// Splits a turn list into a conversation. An optional first `system` turn, then user/assistant
/// turns of which the last must be the user's.
fn split_turns(rec: &Record, field: &str, mut turns: Vec<Turn>) -> Result<Conversation> {
    let system = if turns.first().is_some_and(|t| t.role == "system") { Some(turns.remove(0).content) } else { None };
    if let Some(i) = turns.iter().position(|t| t.role == "system") {
        bail!("{}: field '{field}': turn {} is a system turn; only the first turn may be", rec.loc, i + system.is_some() as usize);
    }
    match turns.pop() {
        Some(last) if last.role == "user" => Ok(Conversation { system, history: turns, prompt: last.content }),
        Some(last) => bail!("{}: field '{field}': the last turn is from the {}, but it must be the user's (the turn to answer)", rec.loc, last.role),
        None => bail!("{}: field '{field}': no user turn", rec.loc),
    }
}

// ---------------------------------------------------------------------------------------------
// Prompts

/// Field names for `dno prompts import` (the CLI flags). `prompt` and `messages` default by
/// record shape, see [`prompt_conversation`].
#[derive(Debug, Clone, Default)]
pub struct PromptFields {
    /// The user turn (or a message list); default `prompt`.
    pub prompt: Option<String>,
    /// A chat conversation; default `messages` (used when the record has no prompt field).
    pub messages: Option<String>,
    pub id: Option<String>,
    pub system: Option<String>,
    pub reference: Option<String>,
    pub answer: Option<String>,
    /// Instruction-following constraints (the `constraints` column): a JSON array, or a string
    /// holding one.
    pub constraints: Option<String>,
    /// Checks each prompt's constraints text (the CLI passes the constraint oracle's parser;
    /// dno-data does not know the constraint kinds). An error is reported with the record's
    /// location and prompt id.
    pub check_constraints: Option<fn(&str) -> Result<()>>,
}

/// The conversation of a prompt record, by the first shape that applies:
/// 1. `--prompt-field` / `prompt`: a string (the user turn) or a message list;
/// 2. `--messages-field` / `messages`: a message list (OpenAI / HF chat format);
/// 3. Alpaca / UltraFeedback: `instruction`, followed by a non-empty `input` after a blank line.
///
/// A system field (`--system-field`, else `system` when present) fills `system` unless the
/// conversation has its own system turn.
pub fn prompt_conversation(rec: &Record, f: &PromptFields) -> Result<Conversation> {
    let system_field = f.system.as_deref().unwrap_or("system");
    let system = match (&f.system, rec.fields.get(system_field)) {
        (Some(_), None) => bail!("{}: missing field '{system_field}' (given by --system-field)", rec.loc),
        _ => rec.opt_text(system_field, false)?,
    };
    let prompt_field = f.prompt.as_deref().unwrap_or("prompt");
    let messages_field = f.messages.as_deref().unwrap_or("messages");
    let mut conv = if f.prompt.is_some() || (f.messages.is_none() && rec.fields.contains_key(prompt_field)) {
        match rec.fields.get(prompt_field) {
            Some(v @ Value::Array(_)) => split_turns(rec, prompt_field, rec.turns(prompt_field, v)?)?,
            _ => {
                // A `history` column (a dno prompts or samples file given as input).
                let history = match rec.opt_text("history", false)? {
                    Some(h) => crate::rows::parse_history(&h).map_err(|e| anyhow!("{}: {e}", rec.loc))?,
                    None => vec![],
                };
                Conversation { system: None, history, prompt: rec.text(prompt_field, false, " (set --prompt-field)")? }
            }
        }
    } else if let Some(v) = rec.fields.get(messages_field) {
        split_turns(rec, messages_field, rec.turns(messages_field, v)?)?
    } else if f.messages.is_some() {
        bail!("{}: missing field '{messages_field}' (given by --messages-field)", rec.loc);
    } else if rec.fields.contains_key("instruction") {
        let mut p = rec.text("instruction", false, "")?;
        if let Some(input) = rec.opt_text("input", false)?.filter(|s| !s.trim().is_empty()) {
            p.push_str("\n\n");
            p.push_str(&input);
        }
        Conversation { system: None, history: vec![], prompt: p }
    } else {
        bail!(
            "{}: no prompt: expected a 'prompt', 'messages' or 'instruction' field, or name one with --prompt-field / --messages-field (found: {})",
            rec.loc,
            rec.fields.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    };
    if conv.system.is_none() {
        conv.system = system;
    }
    Ok(conv)
}

/// The id of a record: `--id-field`, else `prompt_id` or `id` when present, else `default`.
fn record_id(rec: &Record, field: Option<&str>, default: impl FnOnce() -> String) -> Result<String> {
    match field {
        Some(f) => rec.text(f, true, " (given by --id-field)"),
        None => Ok(match rec.opt_text("prompt_id", true)? {
            Some(id) => id,
            None => rec.opt_text("id", true)?.unwrap_or_else(default),
        }),
    }
}

/// Unique-key bookkeeping: the location a key was first seen at.
#[derive(Default)]
struct Seen(HashMap<String, String>);

impl Seen {
    fn insert(&mut self, what: &str, key: &str, rec: &Record) -> Result<()> {
        if let Some(first) = self.0.insert(key.to_string(), rec.loc.clone()) {
            bail!("{}: duplicate {what} '{key}' (first at {first})", rec.loc);
        }
        Ok(())
    }
}

/// Prompt rows from records; ids default to the 0-based record number. Stops at the first bad
/// record.
pub fn prompts(records: Records, f: &PromptFields) -> impl Iterator<Item = Result<PromptRow>> + '_ {
    let mut seen = Seen::default();
    records.enumerate().map(move |(n, rec)| {
        let rec = rec?;
        let conv = prompt_conversation(&rec, f)?;
        let prompt_id = record_id(&rec, f.id.as_deref(), || n.to_string())?;
        seen.insert("prompt_id", &prompt_id, &rec)?;
        let opt = |field: &Option<String>, what: &str| -> Result<Option<String>> {
            match field {
                None => Ok(None),
                Some(name) => match rec.fields.get(name) {
                    None => bail!("{}: missing field '{name}' (given by --{what}-field)", rec.loc),
                    Some(v) => rec.as_text(name, v, true),
                },
            }
        };
        let constraints = match &f.constraints {
            None => None,
            Some(name) => {
                if !rec.fields.contains_key(name) {
                    bail!("{}: missing field '{name}' (given by --constraints-field)", rec.loc);
                }
                let c = rec.opt_json_text(name)?;
                if let (Some(c), Some(check)) = (&c, f.check_constraints) {
                    check(c).map_err(|e| anyhow!("{}: prompt '{prompt_id}': field '{name}': {e:#}", rec.loc))?;
                }
                c
            }
        };
        Ok(PromptRow {
            prompt_id,
            history: conv.history_json(),
            prompt: conv.prompt,
            system: conv.system,
            reference: opt(&f.reference, "reference")?,
            answer: opt(&f.answer, "answer")?,
            constraints,
        })
    })
}

// ---------------------------------------------------------------------------------------------
// Samples

/// Defaults of `dno samples import` for the bookkeeping columns an external file lacks.
pub const DEFAULT_POLICY: &str = "external";
pub const DEFAULT_FINISH_REASON: &str = "stop";

/// Sample rows from an external file. Needs `prompt_id` (or `id`), the prompt (`prompt` or a
/// `messages` conversation, as for prompts) and `response`; a `messages` list that ends with an
/// assistant turn gives the response when there is no `response` field. Optional columns are
/// read when present, else: `policy` = `policy` argument, `source` = `policy`, `sample_index` =
/// the record's position among the same prompt's samples of that policy, `seed` = 0,
/// `sample_id` = the hash of (prompt_id, policy, sample_index, seed) as `dno sample` computes
/// it, `response_tokens` = 0, `finish_reason` = `stop`, `logprob` = null, `repetitive` = the
/// repetition rule of `dno sample`.
pub fn samples(records: Records, default_policy: &str) -> impl Iterator<Item = Result<SampleRow>> + '_ {
    let mut seen = Seen::default();
    let mut counts: HashMap<(String, String), i32> = HashMap::new();
    records.map(move |rec| {
        let mut rec = rec?;
        let prompt_id = rec.text("prompt_id", true, "")?;
        let response = match rec.opt_text("response", false)? {
            Some(r) => r,
            None => match rec.fields.get("messages").cloned() {
                Some(v) => {
                    let mut turns = rec.turns("messages", &v)?;
                    match turns.pop() {
                        Some(t) if t.role == "assistant" => {
                            rec.fields.insert("messages".into(), serde_json::to_value(&turns)?);
                            t.content
                        }
                        _ => bail!("{}: missing field 'response' (and 'messages' does not end with an assistant turn)", rec.loc),
                    }
                }
                None => bail!("{}: missing field 'response'", rec.loc),
            },
        };
        let conv = prompt_conversation(&rec, &PromptFields::default())?;
        let policy = rec.opt_text("policy", true)?.unwrap_or_else(|| default_policy.to_string());
        let source = rec.opt_text("source", false)?.unwrap_or_else(|| "policy".into());
        if source != "policy" && source != "reference" {
            bail!("{}: field 'source' = '{source}' (expected policy or reference)", rec.loc);
        }
        let count = counts.entry((prompt_id.clone(), policy.clone())).or_insert(0);
        let sample_index = match rec.opt_int("sample_index")? {
            Some(i) => i32::try_from(i).map_err(|_| anyhow!("{}: field 'sample_index' = {i} does not fit in int32", rec.loc))?,
            None if source == "reference" => -1,
            None => *count,
        };
        *count += 1;
        let seed = rec.opt_int("seed")?.unwrap_or(0);
        let sample_id = match rec.opt_text("sample_id", true)? {
            Some(id) => id,
            None if source == "reference" => crate::reference_id(&prompt_id),
            None => sample_id(&prompt_id, &policy, sample_index, seed as u64),
        };
        seen.insert("sample_id", &sample_id, &rec)?;
        let response_tokens = match rec.opt_int("response_tokens")? {
            Some(n) => i32::try_from(n).map_err(|_| anyhow!("{}: field 'response_tokens' = {n} does not fit in int32", rec.loc))?,
            None => 0,
        };
        let finish_reason = rec.opt_text("finish_reason", false)?.unwrap_or_else(|| {
            if source == "reference" { "reference".into() } else { DEFAULT_FINISH_REASON.into() }
        });
        Ok(SampleRow {
            prompt_id,
            sample_id,
            history: conv.history_json(),
            prompt: conv.prompt,
            system: conv.system,
            answer: rec.opt_text("answer", true)?,
            constraints: rec.opt_json_text("constraints")?,
            repetitive: rec.opt_bool("repetitive")?.unwrap_or_else(|| is_repetitive(&response)),
            response,
            source,
            policy,
            sample_index,
            seed,
            response_tokens,
            finish_reason,
            logprob: rec.opt_float("logprob")?,
        })
    })
}

// ---------------------------------------------------------------------------------------------
// Preference pairs

/// A response field of a preference record: a string, or a message list whose last turn is the
/// assistant's (TRL conversational format; UltraFeedback-binarized's full conversations). Returns
/// the response and the turns before it.
fn response_field(rec: &Record, field: &str) -> Result<(String, Vec<Turn>)> {
    match rec.fields.get(field) {
        None => bail!("{}: missing field '{field}'", rec.loc),
        Some(Value::String(s)) => Ok((s.clone(), vec![])),
        Some(v @ Value::Array(_)) => {
            let mut turns = rec.turns(field, v)?;
            match turns.pop() {
                Some(t) if t.role == "assistant" => Ok((t.content, turns)),
                Some(t) => bail!("{}: field '{field}': the last turn is from the {}, but it must be the assistant's (the response)", rec.loc, t.role),
                None => bail!("{}: field '{field}' is an empty list", rec.loc),
            }
        }
        Some(other) => bail!("{}: field '{field}' must be a string or a list of turns, not {}", rec.loc, describe(other)),
    }
}

/// Preference pairs from a `prompt` / `chosen` / `rejected` dataset, as hard pairs for offline
/// DPO: `target` = 1, `weight` = 1, win-rates 1 and 0, `strategy` = `import`, `chosen_source` /
/// `rejected_source` = `policy`. The prompt is `prompt` (a string or a message list), or when
/// absent the turns before the response in `chosen` (TRL's implicit-prompt format). Scores come
/// from `score_chosen` / `score_rejected` when present (UltraFeedback-binarized). `prompt_id` is
/// read when present, else a hash of the conversation; `chosen_id` / `rejected_id` are hashes of
/// (prompt_id, response).
pub fn pairs<'a>(records: Records, iteration: &'a str) -> impl Iterator<Item = Result<PairRow>> + 'a {
    let mut seen = Seen::default();
    records.map(move |rec| {
        let rec = rec?;
        let (chosen, chosen_prefix) = response_field(&rec, "chosen")?;
        let (rejected, _) = response_field(&rec, "rejected")?;
        let conv = if rec.get("prompt").is_some() || rec.get("messages").is_some() || rec.get("instruction").is_some() {
            prompt_conversation(&rec, &PromptFields::default())?
        } else if !chosen_prefix.is_empty() {
            let mut c = split_turns(&rec, "chosen", chosen_prefix)?;
            if c.system.is_none() {
                c.system = rec.opt_text("system", false)?;
            }
            c
        } else {
            bail!("{}: missing field 'prompt' (and 'chosen' holds no conversation before the response)", rec.loc);
        };
        if chosen == rejected {
            bail!("{}: 'chosen' and 'rejected' are the same text", rec.loc);
        }
        let history = conv.history_json();
        let prompt_id = match rec.opt_text("prompt_id", true)? {
            Some(id) => id,
            None => format!(
                "{:016x}",
                stable_hash(&[conv.system.as_deref().unwrap_or(""), history.as_deref().unwrap_or(""), &conv.prompt])
            ),
        };
        let id = |text: &str| format!("{:016x}", stable_hash(&["import", &prompt_id, text]));
        let (chosen_id, rejected_id) = (id(&chosen), id(&rejected));
        seen.insert("pair", &format!("{chosen_id}+{rejected_id}"), &rec)
            .map_err(|_| anyhow!("{}: duplicate pair (the same prompt, chosen and rejected as an earlier record)", rec.loc))?;
        Ok(PairRow {
            prompt_id,
            prompt: conv.prompt,
            system: conv.system,
            history,
            chosen,
            rejected,
            chosen_id,
            rejected_id,
            target: 1.0,
            chosen_winrate: 1.0,
            rejected_winrate: 0.0,
            weight: 1.0,
            chosen_score: rec.opt_float("score_chosen")?,
            rejected_score: rec.opt_float("score_rejected")?,
            chosen_source: "policy".into(),
            rejected_source: "policy".into(),
            // Preference datasets hold complete answers: both responses ended their turn.
            chosen_finish_reason: Some("stop".into()),
            rejected_finish_reason: Some("stop".into()),
            strategy: "import".into(),
            iteration: iteration.to_string(),
        })
    })
}
