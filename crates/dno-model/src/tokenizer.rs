//! `Tok`: the model's tokenizer plus its BOS/EOS ids. Two backends: a `tokenizers::Tokenizer`
//! (HF `tokenizer.json`, and GGUF gpt2-style BPE vocabularies turned into a `tokenizer.json`
//! document so one code path serves both formats and the HF exporter can write it back out),
//! and [`Spm`] for GGUF SentencePiece vocabularies (`tokenizer.ggml.model = "llama"`), which
//! encodes exactly as llama.cpp does.
//!
//! GGUF metadata arrives as a [`GgufVocab`] of plain values (gguf.rs reads the container), so
//! this module does not depend on the file format.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use tokenizers::Tokenizer;

use crate::spm::{Spm, TokenType};

#[derive(Clone)]
pub struct Tok {
    backend: Backend,
    pub bos_id: Option<u32>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    /// Generation stops on any of these ids.
    pub eos_ids: Vec<u32>,
}

#[derive(Clone)]
enum Backend {
    Hf(Box<Tokenizer>),
    /// With the `add_bos` / `add_eos` flags of the GGUF file.
    Spm { spm: Arc<Spm>, add_bos: bool, add_eos: bool },
}

/// The `tokenizer.ggml.*` metadata of a GGUF file (arrays empty when absent).
#[derive(Debug, Clone, Default)]
pub struct GgufVocab {
    /// The file, for error messages.
    pub file: String,
    /// `tokenizer.ggml.model`: "gpt2" or "llama".
    pub model: String,
    /// `tokenizer.ggml.pre`.
    pub pre: Option<String>,
    pub tokens: Vec<String>,
    pub scores: Vec<f32>,
    pub token_types: Vec<i64>,
    pub merges: Vec<String>,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub eot_id: Option<u32>,
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
    pub add_space_prefix: Option<bool>,
    /// `general.name` (llama.cpp strips whitespace after Phi-3's special tokens).
    pub model_name: Option<String>,
}

impl std::fmt::Debug for Tok {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tok")
            .field("vocab", &self.vocab_size())
            .field("spm", &matches!(self.backend, Backend::Spm { .. }))
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
        Tok { backend: Backend::Hf(Box::new(inner)), bos_id, bos_token, eos_token, eos_ids }
    }

    /// The HF tokenizer, for the `tokenizer.json` backend (`None` for SentencePiece GGUF vocabularies).
    pub fn hf(&self) -> Option<&Tokenizer> {
        match &self.backend {
            Backend::Hf(t) => Some(t.as_ref()),
            Backend::Spm { .. } => None,
        }
    }

    /// Token ids of `text`. `add_special` applies the tokenizer's post-processor (e.g. a BOS);
    /// use `false` for text rendered by a chat template, which already contains its specials.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        match &self.backend {
            Backend::Hf(t) => {
                let enc = t.encode(text, add_special).map_err(|e| anyhow::anyhow!("tokenizing text: {e}"))?;
                Ok(enc.get_ids().to_vec())
            }
            Backend::Spm { spm, add_bos, add_eos } => {
                let mut ids = Vec::new();
                if add_special && *add_bos {
                    ids.extend(self.bos_id);
                }
                ids.extend(spm.encode(text).context("tokenizing text")?);
                if add_special && *add_eos {
                    ids.extend(self.eos_ids.first());
                }
                Ok(ids)
            }
        }
    }

    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        match &self.backend {
            Backend::Hf(t) => {
                t.decode(ids, skip_special).map_err(|e| anyhow::anyhow!("decoding {} tokens: {e}", ids.len()))
            }
            Backend::Spm { spm, .. } => Ok(spm.decode(ids, skip_special)),
        }
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        match &self.backend {
            Backend::Hf(t) => t.token_to_id(token),
            Backend::Spm { spm, .. } => spm.token_to_id(token),
        }
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        match &self.backend {
            Backend::Hf(t) => t.id_to_token(id),
            Backend::Spm { spm, .. } => spm.id_to_token(id).map(str::to_string),
        }
    }

    pub fn vocab_size(&self) -> usize {
        match &self.backend {
            Backend::Hf(t) => t.get_vocab_size(true),
            Backend::Spm { spm, .. } => spm.vocab_size(),
        }
    }

    /// Serialised `tokenizer.json`. A SentencePiece vocabulary is written as transformers
    /// writes one converted from GGUF ([`spm_tokenizer_json`]).
    pub fn to_json_string(&self) -> Result<String> {
        match &self.backend {
            Backend::Hf(t) => t.to_string(true).map_err(|e| anyhow::anyhow!("serialising tokenizer: {e}")),
            Backend::Spm { spm, add_bos, add_eos } => {
                let doc = spm_tokenizer_json(spm, self.bos_id.filter(|_| *add_bos), self.eos_ids.first().copied().filter(|_| *add_eos));
                Ok(serde_json::to_string(&doc)?)
            }
        }
    }

    /// Builds the tokenizer from GGUF `tokenizer.ggml.*` metadata: gpt2-style BPE (through a
    /// `tokenizer.json` document) or SentencePiece (`llama`).
    pub fn from_gguf_vocab(v: &GgufVocab) -> Result<Self> {
        let name = |id: Option<u32>| id.and_then(|i| v.tokens.get(i as usize).cloned());
        let mut tok = match v.model.as_str() {
            "gpt2" => {
                let doc = tok_json_from_gguf(v)?;
                Tok::from_json(&doc, name(v.bos_id), name(v.eos_id)).with_context(|| format!("tokenizer from {}", v.file))?
            }
            "llama" => {
                if v.tokens.is_empty() {
                    bail!("{}: missing tokenizer (tokenizer.ggml.tokens)", v.file);
                }
                let types: Vec<TokenType> = v.token_types.iter().map(|&t| TokenType::from_gguf(t)).collect();
                let lower = v.model_name.as_deref().unwrap_or("").to_lowercase();
                let phi3 = lower.contains("phi-3") || lower.contains("phi3");
                let spm = Spm::new(v.tokens.clone(), v.scores.clone(), types, v.add_space_prefix.unwrap_or(true), phi3)
                    .with_context(|| format!("{}: SentencePiece tokenizer", v.file))?;
                Tok {
                    backend: Backend::Spm { spm: Arc::new(spm), add_bos: v.add_bos.unwrap_or(true), add_eos: v.add_eos.unwrap_or(false) },
                    bos_id: None,
                    bos_token: name(v.bos_id),
                    eos_token: name(v.eos_id),
                    eos_ids: vec![],
                }
            }
            other => bail!("{}: unsupported tokenizer.ggml.model {other:?} (supported: gpt2 (BPE), llama (SentencePiece))", v.file),
        };
        if let Some(id) = v.eos_id {
            tok.eos_ids = vec![id];
        }
        // Without tokenizer.ggml.eot_token_id, llama.cpp takes the end of turn from the token
        // names (Gemma's <end_of_turn>, Phi-3's <|end|>); done here for SentencePiece vocabularies.
        let eot = v.eot_id.or_else(|| match &tok.backend {
            Backend::Spm { spm, .. } => EOT_NAMES
                .iter()
                .filter_map(|n| spm.token_to_id(n))
                .find(|&id| spm.token_type(id) == Some(TokenType::Control)),
            Backend::Hf(_) => None,
        });
        if let Some(id) = eot {
            if !tok.eos_ids.contains(&id) {
                tok.eos_ids.push(id);
            }
        }
        if let Some(id) = v.bos_id {
            tok.bos_id = Some(id);
        }
        Ok(tok)
    }
}

/// End-of-turn token names llama.cpp recognises (llama-vocab.cpp), in its order.
const EOT_NAMES: &[&str] = &["<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<EOT>", "_<EOT>"];

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

/// The `tokenizer.json` document of a gpt2-style BPE GGUF vocabulary.
pub fn tok_json_from_gguf(v: &GgufVocab) -> Result<Value> {
    let file = &v.file;
    if v.tokens.is_empty() {
        bail!("{file}: missing tokenizer (tokenizer.ggml.tokens)");
    }
    if v.merges.is_empty() {
        bail!("{file}: missing tokenizer.ggml.merges");
    }
    let tokens = &v.tokens;
    let pre = v.pre.as_deref().unwrap_or("default");
    let (normalizer, pre_tok) = pre_tokenizer_for(pre).with_context(|| file.clone())?;

    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for (id, tok) in tokens.iter().enumerate() {
        vocab.insert(tok.clone(), json!(id));
        let ty = v.token_types.get(id).copied().unwrap_or(1);
        // 3 = control, 4 = user-defined: matched before BPE, as HF's added_tokens.
        if ty == 3 || ty == 4 {
            added.push(json!({"id": id, "content": tok, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": ty == 4, "special": ty == 3}));
        }
    }
    let bos = v.bos_id.and_then(|id| tokens.get(id as usize).cloned());
    let post = match (&bos, v.add_bos.unwrap_or(false)) {
        (Some(b), true) => {
            let id = v.bos_id.unwrap_or(0);
            json!({"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": b, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": b, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": b, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {b.clone(): {"id": b, "ids": [id], "tokens": [b]}}})
        }
        _ => Value::Null,
    };
    Ok(json!({
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
            "vocab": vocab, "merges": v.merges}
    }))
}

/// A SentencePiece vocabulary as an HF `tokenizer.json`, the way transformers converts one from
/// GGUF (its Llama / Gemma converters): a byte-fallback BPE whose merges are every split of a
/// vocabulary entry into two entries, ranked by the entry's score (transformers'
/// `SentencePieceExtractor`), `▁` for spaces (prepended to
/// the text when `add_space_prefix`), control / user-defined tokens as added tokens.
/// transformers' BPE and llama.cpp's score-greedy merging can differ on rare ties; `dno` itself
/// always encodes such vocabularies with [`Spm`].
pub fn spm_tokenizer_json(spm: &Spm, bos: Option<u32>, eos: Option<u32>) -> Value {
    let n = spm.vocab_size() as u32;
    let piece = |i: u32| spm.id_to_token(i).unwrap_or("");
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    let mut merges: Vec<(f32, u32, u32, u32)> = Vec::new();
    for id in 0..n {
        let p = piece(id);
        vocab.insert(p.to_string(), json!(id));
        let ty = spm.token_type(id).unwrap_or(TokenType::Normal);
        if matches!(ty, TokenType::Control | TokenType::UserDefined | TokenType::Unknown) {
            added.push(json!({"id": id, "content": p, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": ty != TokenType::UserDefined}));
        }
        for (cut, _) in p.char_indices().skip(1) {
            if let (Some(l), Some(r)) = (spm.token_to_id(&p[..cut]), spm.token_to_id(&p[cut..])) {
                merges.push((spm.score(id).unwrap_or(0.0), id, l, r));
            }
        }
    }
    // Best score first; then by the merged entry's id, then the left part's.
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let merges: Vec<Value> = merges.iter().map(|m| json!([piece(m.2), piece(m.3)])).collect();
    let normalizer = if spm.add_space_prefix {
        json!({"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u{2581}"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}]})
    } else {
        json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"})
    };
    let mut decoders = vec![
        json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if spm.add_space_prefix {
        decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    let special = |id: u32, type_id: u32| json!({"SpecialToken": {"id": piece(id), "type_id": type_id}});
    let post = if bos.is_some() || eos.is_some() {
        let mut single = Vec::new();
        let mut pair = Vec::new();
        let mut specials = serde_json::Map::new();
        for (k, seq) in [(0u32, "A"), (1, "B")] {
            let side = if k == 0 { &mut single } else { &mut pair };
            if let Some(b) = bos {
                side.push(special(b, k));
            }
            side.push(json!({"Sequence": {"id": seq, "type_id": k}}));
            if let Some(e) = eos {
                side.push(special(e, k));
            }
        }
        let pair: Vec<Value> = single.iter().cloned().chain(pair).collect();
        for id in bos.into_iter().chain(eos) {
            specials.insert(piece(id).to_string(), json!({"id": piece(id), "ids": [id], "tokens": [piece(id)]}));
        }
        json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials})
    } else {
        Value::Null
    };
    let unk = (0..n).find(|&i| spm.token_type(i) == Some(TokenType::Unknown)).map(|i| piece(i).to_string());
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": null,
        "post_processor": post,
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {"type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
            "vocab": vocab, "merges": merges}
    })
}
