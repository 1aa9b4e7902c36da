//! A small GGUF (v2/v3) reader: metadata, tensor directory, and dequantisation of
//! F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K and Q6_K tensors to f32.
//!
//! llama.cpp's converter permutes the rows of Llama Q/K projections for interleaved RoPE; we
//! undo that on load so the model's single rotate-half RoPE path serves both formats.

use anyhow::{bail, Context, Result};
use burn::tensor::Device;
use memmap2::Mmap;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::chat::ChatTemplate;
use crate::config::{LlamaConfig, TokenIds};
use crate::model::{Llama, WeightSource};
use crate::tokenizer::Tok;
use crate::LoadedModel;

#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl GgufValue {
    pub fn as_i64(&self) -> Option<i64> {
        Some(match *self {
            GgufValue::U8(v) => v as i64,
            GgufValue::I8(v) => v as i64,
            GgufValue::U16(v) => v as i64,
            GgufValue::I16(v) => v as i64,
            GgufValue::U32(v) => v as i64,
            GgufValue::I32(v) => v as i64,
            GgufValue::U64(v) => v as i64,
            GgufValue::I64(v) => v,
            GgufValue::Bool(v) => v as i64,
            _ => return None,
        })
    }
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v as f64),
            GgufValue::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }
}

/// ggml tensor types we can dequantise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q8_0,
    Q4K,
    Q6K,
}

impl GgmlType {
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            12 => GgmlType::Q4K,
            14 => GgmlType::Q6K,
            30 => GgmlType::BF16,
            _ => return None,
        })
    }
    /// (elements per block, bytes per block)
    pub fn block(self) -> (usize, usize) {
        match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::BF16 => (1, 2),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q8_0 => (32, 34),
            GgmlType::Q4K => (256, 144),
            GgmlType::Q6K => (256, 210),
        }
    }
}

#[derive(Debug, Clone)]
pub struct GgufTensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the fastest-varying (row length).
    pub dims: Vec<usize>,
    pub type_id: u32,
    pub offset: u64,
}

pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: BTreeMap<String, GgufValue>,
    pub tensors: Vec<GgufTensorInfo>,
    data_start: usize,
    mmap: Mmap,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            bail!("truncated file: need {n} bytes at offset {}, file has {}", self.pos, self.buf.len())
        };
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.bytes(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.bytes(2)?.try_into()?))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.bytes(4)?.try_into()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.bytes(8)?.try_into()?))
    }
    fn string(&mut self) -> Result<String> {
        let n = self.u64()? as usize;
        let b = self.bytes(n)?;
        Ok(String::from_utf8_lossy(b).into_owned())
    }
    fn value(&mut self, ty: u32, depth: usize) -> Result<GgufValue> {
        Ok(match ty {
            0 => GgufValue::U8(self.u8()?),
            1 => GgufValue::I8(self.u8()? as i8),
            2 => GgufValue::U16(self.u16()?),
            3 => GgufValue::I16(self.u16()? as i16),
            4 => GgufValue::U32(self.u32()?),
            5 => GgufValue::I32(self.u32()? as i32),
            6 => GgufValue::F32(f32::from_bits(self.u32()?)),
            7 => GgufValue::Bool(self.u8()? != 0),
            8 => GgufValue::String(self.string()?),
            9 => {
                if depth > 4 {
                    bail!("nested arrays too deep");
                }
                let elem = self.u32()?;
                let n = self.u64()? as usize;
                if n > self.buf.len() {
                    bail!("array length {n} exceeds file size");
                }
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.value(elem, depth + 1)?);
                }
                GgufValue::Array(v)
            }
            10 => GgufValue::U64(self.u64()?),
            11 => GgufValue::I64(self.u64()? as i64),
            12 => GgufValue::F64(f64::from_bits(self.u64()?)),
            other => bail!("unknown metadata value type {other}"),
        })
    }
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: read-only mapping of a file we do not modify.
        let mmap = unsafe { Mmap::map(&file) }.with_context(|| format!("mapping {}", path.display()))?;
        Self::parse(path, mmap).with_context(|| format!("reading GGUF file {}", path.display()))
    }

    fn parse(path: &Path, mmap: Mmap) -> Result<Self> {
        let mut r = Reader { buf: &mmap, pos: 0 };
        if r.bytes(4)? != b"GGUF" {
            bail!("not a GGUF file (bad magic)");
        }
        let version = r.u32()?;
        if !(2..=3).contains(&version) {
            bail!("unsupported GGUF version {version}");
        }
        let n_tensors = r.u64()? as usize;
        let n_kv = r.u64()? as usize;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = r.string()?;
            let ty = r.u32()?;
            let v = r.value(ty, 0).with_context(|| format!("metadata key {key}"))?;
            metadata.insert(key, v);
        }
        if n_tensors > mmap.len() {
            bail!("tensor count {n_tensors} exceeds file size");
        }
        let mut tensors = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name = r.string()?;
            let nd = r.u32()? as usize;
            if nd > 8 {
                bail!("tensor {name}: {nd} dimensions");
            }
            let mut dims = Vec::with_capacity(nd);
            for _ in 0..nd {
                dims.push(r.u64()? as usize);
            }
            let type_id = r.u32()?;
            let offset = r.u64()?;
            tensors.push(GgufTensorInfo { name, dims, type_id, offset });
        }
        let align = metadata.get("general.alignment").and_then(|v| v.as_i64()).unwrap_or(32).max(1) as usize;
        let data_start = r.pos.div_ceil(align) * align;
        let g = GgufFile { path: path.to_path_buf(), version, metadata, tensors, data_start, mmap };
        // Check every tensor lies within the file, so truncation is reported up front.
        for t in &g.tensors {
            g.tensor_bytes(t)?;
        }
        Ok(g)
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(|v| v.as_i64()).map(|v| v as u64)
    }
    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(|v| v.as_f64())
    }
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|v| v.as_str())
    }
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        match self.get(key)? {
            GgufValue::Bool(b) => Some(*b),
            v => v.as_i64().map(|x| x != 0),
        }
    }

    pub fn info(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    fn tensor_bytes(&self, t: &GgufTensorInfo) -> Result<(&[u8], GgmlType)> {
        let ty = GgmlType::from_id(t.type_id).with_context(|| {
            format!("tensor {}: unsupported ggml quantisation type id {}", t.name, t.type_id)
        })?;
        let n: usize = t.dims.iter().product();
        let (be, bb) = ty.block();
        if n % be != 0 {
            bail!("tensor {}: {n} elements is not a multiple of the block size {be}", t.name);
        }
        let len = n / be * bb;
        let start = self.data_start as u64 + t.offset;
        let end = start + len as u64;
        if end > self.mmap.len() as u64 {
            bail!(
                "tensor {}: data [{start}, {end}) lies beyond the end of the file ({} bytes); truncated?",
                t.name,
                self.mmap.len()
            );
        }
        Ok((&self.mmap[start as usize..end as usize], ty))
    }

    /// Dequantised tensor in PyTorch dim order (reverse of ggml's), as f32.
    pub fn tensor_f32(&self, name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
        let Some(t) = self.info(name) else { return Ok(None) };
        let (bytes, ty) = self.tensor_bytes(t)?;
        let data = dequantize(ty, bytes);
        let shape: Vec<usize> = t.dims.iter().rev().copied().collect();
        Ok(Some((shape, data)))
    }
}

fn f16(b: &[u8]) -> f32 {
    half::f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// Dequantises whole blocks to f32 (caller has checked the length).
pub fn dequantize(ty: GgmlType, bytes: &[u8]) -> Vec<f32> {
    let (be, bb) = ty.block();
    let mut out = Vec::with_capacity(bytes.len() / bb * be);
    match ty {
        GgmlType::F32 => out.extend(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
        GgmlType::F16 => out.extend(bytes.chunks_exact(2).map(f16)),
        GgmlType::BF16 => out.extend(bytes.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())),
        GgmlType::Q8_0 => {
            for b in bytes.chunks_exact(bb) {
                let d = f16(&b[0..2]);
                out.extend(b[2..34].iter().map(|&q| q as i8 as f32 * d));
            }
        }
        GgmlType::Q4_0 | GgmlType::Q4_1 => {
            for b in bytes.chunks_exact(bb) {
                let d = f16(&b[0..2]);
                let (m, qs) = if ty == GgmlType::Q4_1 { (f16(&b[2..4]), &b[4..20]) } else { (-8.0 * d, &b[2..18]) };
                // low nibbles are elements 0..16, high nibbles 16..32
                out.extend(qs.iter().map(|&q| (q & 0x0f) as f32 * d + m));
                out.extend(qs.iter().map(|&q| (q >> 4) as f32 * d + m));
            }
        }
        GgmlType::Q4K => {
            for b in bytes.chunks_exact(bb) {
                let d = f16(&b[0..2]);
                let dmin = f16(&b[2..4]);
                let sc = &b[4..16];
                let qs = &b[16..144];
                let scale_min = |j: usize| -> (f32, f32) {
                    if j < 4 {
                        ((sc[j] & 63) as f32, (sc[j + 4] & 63) as f32)
                    } else {
                        (
                            ((sc[j + 4] & 0x0f) | ((sc[j - 4] >> 6) << 4)) as f32,
                            ((sc[j + 4] >> 4) | ((sc[j] >> 6) << 4)) as f32,
                        )
                    }
                };
                for chunk in 0..4 {
                    let q = &qs[chunk * 32..chunk * 32 + 32];
                    let (s1, m1) = scale_min(2 * chunk);
                    let (s2, m2) = scale_min(2 * chunk + 1);
                    out.extend(q.iter().map(|&x| d * s1 * (x & 0x0f) as f32 - dmin * m1));
                    out.extend(q.iter().map(|&x| d * s2 * (x >> 4) as f32 - dmin * m2));
                }
            }
        }
        GgmlType::Q6K => {
            for b in bytes.chunks_exact(bb) {
                let ql_all = &b[0..128];
                let qh_all = &b[128..192];
                let sc_all = &b[192..208];
                let d = f16(&b[208..210]);
                let mut y = [0f32; 256];
                for n in 0..2 {
                    let ql = &ql_all[n * 64..];
                    let qh = &qh_all[n * 32..];
                    let sc = &sc_all[n * 8..];
                    for l in 0..32 {
                        let is = l / 16;
                        let q1 = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i32 - 32;
                        let q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                        let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                        let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                        let base = n * 128;
                        y[base + l] = d * (sc[is] as i8) as f32 * q1 as f32;
                        y[base + l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                        y[base + l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                        y[base + l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
                    }
                }
                out.extend_from_slice(&y);
            }
        }
    }
    out
}

/// Undoes llama.cpp's Q/K row permutation: GGUF row `h*hd + 2j + i` holds HF row `h*hd + i*hd/2 + j`.
pub fn unpermute_rows(data: &[f32], n_heads: usize, rows: usize, cols: usize) -> Vec<f32> {
    let hd = rows / n_heads;
    let half = hd / 2;
    let mut out = vec![0f32; data.len()];
    for h in 0..n_heads {
        for j in 0..half {
            for i in 0..2 {
                let src = h * hd + 2 * j + i;
                let dst = h * hd + i * half + j;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// Maps HF weight names onto GGUF tensor names.
pub fn gguf_name(hf: &str) -> Option<String> {
    Some(match hf {
        "model.embed_tokens.weight" => "token_embd.weight".into(),
        "model.norm.weight" => "output_norm.weight".into(),
        "lm_head.weight" => "output.weight".into(),
        _ => {
            let rest = hf.strip_prefix("model.layers.")?;
            let (idx, tail) = rest.split_once('.')?;
            let mapped = match tail {
                "input_layernorm.weight" => "attn_norm.weight",
                "post_attention_layernorm.weight" => "ffn_norm.weight",
                "self_attn.q_proj.weight" => "attn_q.weight",
                "self_attn.k_proj.weight" => "attn_k.weight",
                "self_attn.v_proj.weight" => "attn_v.weight",
                "self_attn.o_proj.weight" => "attn_output.weight",
                "self_attn.q_proj.bias" => "attn_q.bias",
                "self_attn.k_proj.bias" => "attn_k.bias",
                "self_attn.v_proj.bias" => "attn_v.bias",
                "self_attn.o_proj.bias" => "attn_output.bias",
                "mlp.gate_proj.weight" => "ffn_gate.weight",
                "mlp.up_proj.weight" => "ffn_up.weight",
                "mlp.down_proj.weight" => "ffn_down.weight",
                _ => return None,
            };
            format!("blk.{idx}.{mapped}")
        }
    })
}

/// HF-named weights out of a GGUF file, with Llama Q/K un-permuted.
pub struct GgufSource<'a> {
    pub file: &'a GgufFile,
    pub unpermute: bool,
    pub n_heads: usize,
    pub n_kv_heads: usize,
}

impl WeightSource for GgufSource<'_> {
    fn tensor(&mut self, name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
        let Some(gname) = gguf_name(name) else { return Ok(None) };
        let Some((shape, data)) = self
            .file
            .tensor_f32(&gname)
            .with_context(|| format!("{}", self.file.path.display()))?
        else {
            return Ok(None);
        };
        if self.unpermute && (name.ends_with("q_proj.weight") || name.ends_with("k_proj.weight")
            || name.ends_with("q_proj.bias") || name.ends_with("k_proj.bias"))
        {
            let heads = if name.contains("q_proj") { self.n_heads } else { self.n_kv_heads };
            let rows = shape[0];
            let cols = if shape.len() > 1 { shape[1] } else { 1 };
            if rows % heads != 0 || (rows / heads) % 2 != 0 {
                bail!("tensor {gname} in {}: {rows} rows do not split into {heads} heads", self.file.path.display());
            }
            return Ok(Some((shape, unpermute_rows(&data, heads, rows, cols))));
        }
        Ok(Some((shape, data)))
    }

    fn origin(&self) -> String {
        self.file.path.display().to_string()
    }
}

/// `LlamaConfig` from GGUF metadata (`general.architecture` = llama | qwen2 | mistral).
pub fn config_from_gguf(g: &GgufFile, vocab_size: usize) -> Result<LlamaConfig> {
    let file = g.path.display().to_string();
    let arch = g.get_str("general.architecture").with_context(|| format!("{file}: missing general.architecture"))?;
    let hf_arch = match arch {
        "llama" => "LlamaForCausalLM",
        "qwen2" => "Qwen2ForCausalLM",
        "mistral" => "MistralForCausalLM",
        other => bail!("{file}: unsupported architecture {other:?} (supported: llama, qwen2, mistral)"),
    };
    let req = |k: &str| -> Result<u64> {
        let key = format!("{arch}.{k}");
        g.get_u64(&key).with_context(|| format!("{file}: missing metadata {key}"))
    };
    let n_heads = req("attention.head_count")? as usize;
    let hidden = req("embedding_length")? as usize;
    if g.info("rope_freqs.weight").is_some() {
        bail!("{file}: rope_freqs.weight (GGUF Llama-3 rope scaling) is not supported; use the HF model");
    }
    let head_dim = g.get_u64(&format!("{arch}.attention.key_length")).map(|v| v as usize);
    let tied = g.info("output.weight").is_none();
    let eos = g.get_u64("tokenizer.ggml.eos_token_id").map(|v| TokenIds::One(v as u32));
    let cfg = LlamaConfig {
        architectures: vec![hf_arch.to_string()],
        model_type: Some(if arch == "qwen2" { "qwen2".into() } else if arch == "mistral" { "mistral".into() } else { "llama".into() }),
        vocab_size,
        hidden_size: hidden,
        intermediate_size: req("feed_forward_length")? as usize,
        num_hidden_layers: req("block_count")? as usize,
        num_attention_heads: n_heads,
        num_key_value_heads: Some(g.get_u64(&format!("{arch}.attention.head_count_kv")).unwrap_or(n_heads as u64) as usize),
        head_dim: head_dim.filter(|&h| h != hidden / n_heads.max(1)),
        rms_norm_eps: g.get_f64(&format!("{arch}.attention.layer_norm_rms_epsilon")).unwrap_or(1e-5),
        rope_theta: g.get_f64(&format!("{arch}.rope.freq_base")).unwrap_or(10000.0),
        rope_scaling: None,
        tie_word_embeddings: tied,
        attention_bias: arch != "qwen2" && g.info("blk.0.attn_q.bias").is_some(),
        mlp_bias: false,
        max_position_embeddings: g.get_u64(&format!("{arch}.context_length")).unwrap_or(2048) as usize,
        hidden_act: "silu".into(),
        bos_token_id: g.get_u64("tokenizer.ggml.bos_token_id").map(|v| v as u32),
        eos_token_id: eos,
        sliding_window: None,
        use_sliding_window: None,
        rope_parameters: None,
    };
    if let Some(rot) = g.get_u64(&format!("{arch}.rope.dimension_count")) {
        if rot as usize != cfg.head_dim() {
            bail!("{file}: partial rotary embeddings ({arch}.rope.dimension_count = {rot}, head_dim = {}) are not supported", cfg.head_dim());
        }
    }
    cfg.validate().with_context(|| file.clone())?;
    Ok(cfg)
}

/// Loads a `.gguf` file: weights, tokenizer and chat template.
pub fn load_gguf(path: &Path, device: &Device) -> Result<LoadedModel> {
    let g = GgufFile::open(path)?;
    let tokenizer = Tok::from_gguf(&g)?;
    let vocab = match g.info("token_embd.weight") {
        Some(t) if t.dims.len() == 2 => t.dims[1],
        _ => bail!("{}: missing tensor token_embd.weight", path.display()),
    };
    let config = config_from_gguf(&g, vocab)?;
    let unpermute = matches!(g.get_str("general.architecture"), Some("llama") | Some("mistral"));
    let mut src = GgufSource {
        file: &g,
        unpermute,
        n_heads: config.num_attention_heads,
        n_kv_heads: config.n_kv_heads(),
    };
    let model = Llama::from_source(&config, &mut src, device)?;
    let chat = ChatTemplate::new(
        g.get_str("tokenizer.chat_template").map(|s| s.to_string()),
        tokenizer.bos_token.clone().unwrap_or_default(),
        tokenizer.eos_token.clone().unwrap_or_default(),
    )
    .with_context(|| format!("chat template of {}", path.display()))?;
    Ok(LoadedModel { model, config, tokenizer, chat })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_0_and_q8_0_blocks() {
        // Q8_0: d = 0.5, q = 0..32 -> 0, 0.5, 1, ...
        let mut b = half::f16::from_f32(0.5).to_le_bytes().to_vec();
        b.extend((0..32).map(|i| i as u8));
        let v = dequantize(GgmlType::Q8_0, &b);
        assert_eq!(v[3], 1.5);
        // Q4_0: d = 1, all bytes 0x9A -> low 10-8=2, high 9-8=1
        let mut b = half::f16::from_f32(1.0).to_le_bytes().to_vec();
        b.extend([0x9Au8; 16]);
        let v = dequantize(GgmlType::Q4_0, &b);
        assert_eq!((v[0], v[16]), (2.0, 1.0));
        // Q4_1: d = 2, m = -1, byte 0x31 -> low 1*2-1 = 1, high 3*2-1 = 5
        let mut b = half::f16::from_f32(2.0).to_le_bytes().to_vec();
        b.extend(half::f16::from_f32(-1.0).to_le_bytes());
        b.extend([0x31u8; 16]);
        let v = dequantize(GgmlType::Q4_1, &b);
        assert_eq!((v[5], v[20]), (1.0, 5.0));
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permutation() {
        // llama.cpp: w.reshape(H, 2, hd/2, C).swapaxes(1, 2) -> GGUF rows
        let (h, hd, c) = (2, 4, 3);
        let hf: Vec<f32> = (0..h * hd * c).map(|x| x as f32).collect();
        let mut gg = vec![0f32; hf.len()];
        for hh in 0..h {
            for i in 0..2 {
                for j in 0..hd / 2 {
                    let src = hh * hd + i * hd / 2 + j;
                    let dst = hh * hd + j * 2 + i;
                    gg[dst * c..dst * c + c].copy_from_slice(&hf[src * c..src * c + c]);
                }
            }
        }
        assert_eq!(unpermute_rows(&gg, h, h * hd, c), hf);
    }
}
