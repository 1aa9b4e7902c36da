//! `Tok`: a thin wrapper over a `tokenizers::Tokenizer` plus the model's BOS/EOS ids.
//! GGUF files carry their vocabulary as `tokenizer.ggml.*` metadata; `tok_json_from_gguf`
//! turns it into an HF `tokenizer.json` document so one code path serves both formats
//! (and the HF exporter can write it back out).

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::Path;
use tokenizers::Tokenizer;

use crate::gguf::{GgufFile, GgufValue};

pub struct Tok {
    pub inner: Tokenizer,
    pub bos_id: Option<u32>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    /// Generation stops on any of these ids.
    pub eos_ids: Vec<u32>,
}

impl std::fmt::Debug for Tok {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tok")
            .field("vocab", &self.inner.get_vocab_size(true))
            .field("bos_id", &self.bos_id)
            .field("eos_ids", &self.eos_ids)
            .finish()
    }
}

impl Tok {
    pub fn from_file(path: &Path, bos_token: Option<String>, eos_token: Option<String>) -> Result<Self> {
        let inner = Tokenizer::from_file(path)
            .map_err(|e| anyhow::anyhow!("loading tokenizer {}: {e}", path.display()))?;
        Ok(Self::with_tokens(inner, bos_token, eos_token))
    }

    pub fn from_json(doc: &Value, bos_token: Option<String>, eos_token: Option<String>) -> Result<Self> {
        let inner = Tokenizer::from_bytes(doc.to_string().as_bytes())
            .map_err(|e| anyhow::anyhow!("building tokenizer: {e}"))?;
        Ok(Self::with_tokens(inner, bos_token, eos_token))
    }

    fn with_tokens(inner: Tokenizer, bos_token: Option<String>, eos_token: Option<String>) -> Self {
        let bos_id = bos_token.as_deref().and_then(|t| inner.token_to_id(t));
        let eos_ids = eos_token.as_deref().and_then(|t| inner.token_to_id(t)).into_iter().collect();
        Tok { inner, bos_id, bos_token, eos_token, eos_ids }
    }

    /// Token ids of `text`. `add_special` applies the tokenizer's post-processor (e.g. a BOS);
    /// use `false` for text rendered by a chat template, which already contains its specials.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special)
            .map_err(|e| anyhow::anyhow!("tokenizing text: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| anyhow::anyhow!("decoding {} tokens: {e}", ids.len()))
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Serialised `tokenizer.json`.
    pub fn to_json_string(&self) -> Result<String> {
        self.inner.to_string(true).map_err(|e| anyhow::anyhow!("serialising tokenizer: {e}"))
    }

    /// Builds the tokenizer from GGUF `tokenizer.ggml.*` metadata (gpt2-style BPE only).
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let (doc, bos, eos) = tok_json_from_gguf(g)?;
        let mut tok = Tok::from_json(&doc, bos, eos)
            .with_context(|| format!("tokenizer from {}", g.path.display()))?;
        if let Some(id) = g.get_u64("tokenizer.ggml.eos_token_id") {
            tok.eos_ids = vec![id as u32];
        }
        if let Some(id) = g.get_u64("tokenizer.ggml.eot_token_id") {
            if !tok.eos_ids.contains(&(id as u32)) {
                tok.eos_ids.push(id as u32);
            }
        }
        if let Some(id) = g.get_u64("tokenizer.ggml.bos_token_id") {
            tok.bos_id = Some(id as u32);
        }
        Ok(tok)
    }
}

const GPT2_BYTELEVEL: &str = "bytelevel";
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn byte_level(use_regex: bool) -> Value {
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex})
}

fn split(regex: &str) -> Value {
    json!({"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false})
}

/// Pre-tokenizer (and normalizer) for a `tokenizer.ggml.pre` value, mirroring the matching HF
/// tokenizer.json.
fn pre_tokenizer_for(pre: &str) -> Result<(Value, Value)> {
    let _ = GPT2_BYTELEVEL;
    Ok(match pre {
        "default" | "gpt-2" | "gpt2" => (Value::Null, byte_level(true)),
        "smollm" | "starcoder" | "refact" => (
            Value::Null,
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
        ),
        "llama-bpe" | "llama3" | "llama-v3" => (
            Value::Null,
            json!({"type": "Sequence", "pretokenizers": [split(LLAMA3_REGEX), byte_level(false)]}),
        ),
        "qwen2" => (
            json!({"type": "NFC"}),
            json!({"type": "Sequence", "pretokenizers": [split(QWEN2_REGEX), byte_level(false)]}),
        ),
        other => bail!(
            "unsupported tokenizer.ggml.pre {other:?} (supported: default, gpt-2, smollm, starcoder, llama-bpe, qwen2)"
        ),
    })
}

/// Returns (tokenizer.json document, bos token string, eos token string).
pub fn tok_json_from_gguf(g: &GgufFile) -> Result<(Value, Option<String>, Option<String>)> {
    let file = g.path.display().to_string();
    let model = g.get_str("tokenizer.ggml.model").with_context(|| format!("{file}: missing tokenizer (tokenizer.ggml.model)"))?;
    if model != "gpt2" {
        bail!("{file}: unsupported tokenizer.ggml.model {model:?} (only gpt2-style BPE)");
    }
    let tokens: Vec<String> = match g.metadata.get("tokenizer.ggml.tokens") {
        Some(GgufValue::Array(a)) => a
            .iter()
            .map(|v| match v {
                GgufValue::String(s) => Ok(s.clone()),
                _ => bail!("{file}: tokenizer.ggml.tokens holds a non-string"),
            })
            .collect::<Result<_>>()?,
        _ => bail!("{file}: missing tokenizer (tokenizer.ggml.tokens)"),
    };
    let merges: Vec<String> = match g.metadata.get("tokenizer.ggml.merges") {
        Some(GgufValue::Array(a)) => a.iter().filter_map(|v| v.as_str().map(|s| s.to_string())).collect(),
        _ => bail!("{file}: missing tokenizer.ggml.merges"),
    };
    let types: Vec<i64> = match g.metadata.get("tokenizer.ggml.token_type") {
        Some(GgufValue::Array(a)) => a.iter().map(|v| v.as_i64().unwrap_or(1)).collect(),
        _ => vec![1; tokens.len()],
    };
    let pre = g.get_str("tokenizer.ggml.pre").unwrap_or("default");
    let (normalizer, pre_tok) = pre_tokenizer_for(pre).with_context(|| file.clone())?;

    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for (id, tok) in tokens.iter().enumerate() {
        vocab.insert(tok.clone(), json!(id));
        let ty = types.get(id).copied().unwrap_or(1);
        // 3 = control, 4 = user-defined: matched before BPE, as HF's added_tokens.
        if ty == 3 || ty == 4 {
            added.push(json!({"id": id, "content": tok, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": ty == 4, "special": ty == 3}));
        }
    }
    let name = |key: &str| g.get_u64(key).and_then(|id| tokens.get(id as usize).cloned());
    let bos = name("tokenizer.ggml.bos_token_id");
    let eos = name("tokenizer.ggml.eos_token_id");
    let add_bos = g.get_bool("tokenizer.ggml.add_bos_token").unwrap_or(false);
    let post = match (&bos, add_bos) {
        (Some(b), true) => {
            let id = g.get_u64("tokenizer.ggml.bos_token_id").unwrap_or(0);
            json!({"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": b, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": b, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": b, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {b.clone(): {"id": b, "ids": [id], "tokens": [b]}}})
        }
        _ => Value::Null,
    };
    let doc = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tok,
        "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3",
            "vocab": vocab, "merges": merges}
    });
    Ok((doc, bos, eos))
}
