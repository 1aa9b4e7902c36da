//! A small GGUF (v2/v3) reader: metadata, tensor directory, and dequantisation of
//! F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and Q8_K tensors
//! to f32 (the block layouts of ggml's `ggml-common.h`); other types are refused by name.
//!
//! llama.cpp's converter permutes the rows of Llama Q/K projections for interleaved RoPE; we
//! undo that on load so the model's single rotate-half RoPE path serves both formats. It also
//! stores Gemma's norm weights with the 1 of `(1 + w)` added; we subtract it, as transformers does.

use anyhow::{bail, Context, Result};
use burn::tensor::Device;
use memmap2::Mmap;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::chat::ChatTemplate;
use crate::config::{LlamaConfig, RopeScaling};
use crate::model::{Llama, WeightSource};
use crate::tokenizer::{GgufVocab, Tok};
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
    Q5_0,
    Q5_1,
    Q8_0,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
}

/// ggml type names by id (ggml.h), for error messages.
const GGML_TYPE_NAMES: &[(u32, &str)] = &[
    (0, "F32"), (1, "F16"), (2, "Q4_0"), (3, "Q4_1"), (6, "Q5_0"), (7, "Q5_1"), (8, "Q8_0"),
    (9, "Q8_1"), (10, "Q2_K"), (11, "Q3_K"), (12, "Q4_K"), (13, "Q5_K"), (14, "Q6_K"), (15, "Q8_K"),
    (16, "IQ2_XXS"), (17, "IQ2_XS"), (18, "IQ3_XXS"), (19, "IQ1_S"), (20, "IQ4_NL"), (21, "IQ3_S"),
    (22, "IQ2_S"), (23, "IQ4_XS"), (24, "I8"), (25, "I16"), (26, "I32"), (27, "I64"), (28, "F64"),
    (29, "IQ1_M"), (30, "BF16"), (34, "TQ1_0"), (35, "TQ2_0"), (39, "MXFP4"),
];

/// The ggml name of a type id (`"type 99"` when unknown).
pub fn ggml_type_name(id: u32) -> String {
    GGML_TYPE_NAMES.iter().find(|(i, _)| *i == id).map(|(_, n)| n.to_string()).unwrap_or(format!("type {id}"))
}

impl GgmlType {
    pub const ALL: [GgmlType; 14] = [
        GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0,
        GgmlType::Q5_1, GgmlType::Q8_0, GgmlType::Q2K, GgmlType::Q3K, GgmlType::Q4K, GgmlType::Q5K,
        GgmlType::Q6K, GgmlType::Q8K,
    ];

    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q2K => 10,
            GgmlType::Q3K => 11,
            GgmlType::Q4K => 12,
            GgmlType::Q5K => 13,
            GgmlType::Q6K => 14,
            GgmlType::Q8K => 15,
            GgmlType::BF16 => 30,
        }
    }

    pub fn from_id(id: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.id() == id)
    }

    /// (elements per block, bytes per block)
    pub fn block(self) -> (usize, usize) {
        match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::BF16 => (1, 2),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q5_0 => (32, 22),
            GgmlType::Q5_1 => (32, 24),
            GgmlType::Q8_0 => (32, 34),
            GgmlType::Q2K => (256, 84),
            GgmlType::Q3K => (256, 110),
            GgmlType::Q4K => (256, 144),
            GgmlType::Q5K => (256, 176),
            GgmlType::Q6K => (256, 210),
            GgmlType::Q8K => (256, 292),
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
        // Check every tensor lies within the file, so truncation is reported up front
        // (a tensor of a type we cannot read is refused, by name, when it is read).
        for t in g.tensors.iter().filter(|t| GgmlType::from_id(t.type_id).is_some()) {
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
            let names: Vec<String> = GgmlType::ALL.iter().map(|t| ggml_type_name(t.id())).collect();
            format!(
                "tensor {}: ggml type {} (id {}) is not supported (supported: {})",
                t.name,
                ggml_type_name(t.type_id),
                t.type_id,
                names.join(", ")
            )
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

/// Q4_K / Q5_K: 6-bit scale and min of sub-block `j` (0..8) packed in 12 bytes.
fn scale_min_k4(sc: &[u8], j: usize) -> (f32, f32) {
    if j < 4 {
        ((sc[j] & 63) as f32, (sc[j + 4] & 63) as f32)
    } else {
        (
            ((sc[j + 4] & 0x0f) | ((sc[j - 4] >> 6) << 4)) as f32,
            ((sc[j + 4] >> 4) | ((sc[j] >> 6) << 4)) as f32,
        )
    }
}

/// Q3_K: the 16 signed 6-bit scales packed in 12 bytes (low 4 bits, then high 2 bits).
fn q3k_scales(sc: &[u8]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        let low = if i < 8 { sc[i] & 0x0f } else { sc[i - 8] >> 4 };
        let high = (sc[8 + i % 4] >> (2 * (i / 4))) & 3;
        *o = ((low | (high << 4)) as i8).wrapping_sub(32);
    }
    out
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
        GgmlType::Q5_0 | GgmlType::Q5_1 => {
            for b in bytes.chunks_exact(bb) {
                let d = f16(&b[0..2]);
                let (m, rest) = if ty == GgmlType::Q5_1 { (f16(&b[2..4]), &b[4..]) } else { (-16.0 * d, &b[2..]) };
                // 32 fifth bits, then nibbles: low nibbles are elements 0..16, high nibbles 16..32
                let qh = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
                let qs = &rest[4..20];
                let fifth = |j: usize| (((qh >> j) & 1) << 4) as u8;
                out.extend(qs.iter().enumerate().map(|(j, &q)| ((q & 0x0f) | fifth(j)) as f32 * d + m));
                out.extend(qs.iter().enumerate().map(|(j, &q)| ((q >> 4) | fifth(j + 16)) as f32 * d + m));
            }
        }
        GgmlType::Q2K => {
            for b in bytes.chunks_exact(bb) {
                let (scales, qs) = (&b[0..16], &b[16..80]);
                let (d, dmin) = (f16(&b[80..82]), f16(&b[82..84]));
                // 2 halves of 128; in each, 4 bit-planes (shift) of 32 bytes = 2 sub-blocks of 16
                for (n, q) in qs.chunks_exact(32).enumerate() {
                    for shift in 0..4 {
                        for half in 0..2 {
                            let sc = scales[n * 8 + shift * 2 + half];
                            let (dl, ml) = (d * (sc & 0x0f) as f32, dmin * (sc >> 4) as f32);
                            let q = &q[half * 16..half * 16 + 16];
                            out.extend(q.iter().map(|&x| dl * ((x >> (2 * shift)) & 3) as f32 - ml));
                        }
                    }
                }
            }
        }
        GgmlType::Q3K => {
            for b in bytes.chunks_exact(bb) {
                let (hmask, qs) = (&b[0..32], &b[32..96]);
                let scales = q3k_scales(&b[96..108]);
                let d = f16(&b[108..110]);
                // as Q2_K, plus a high bit per element in hmask (bit n*4 + shift); unset means -4
                for (n, q) in qs.chunks_exact(32).enumerate() {
                    for shift in 0..4 {
                        let bit = 1u8 << (n * 4 + shift);
                        for half in 0..2 {
                            let dl = d * scales[n * 8 + shift * 2 + half] as f32;
                            for l in half * 16..half * 16 + 16 {
                                let low = ((q[l] >> (2 * shift)) & 3) as i32;
                                let high = if hmask[l] & bit != 0 { 0 } else { 4 };
                                out.push(dl * (low - high) as f32);
                            }
                        }
                    }
                }
            }
        }
        GgmlType::Q4K | GgmlType::Q5K => {
            for b in bytes.chunks_exact(bb) {
                let d = f16(&b[0..2]);
                let dmin = f16(&b[2..4]);
                let sc = &b[4..16];
                // Q5_K: a fifth bit per element in qh (bit 2*chunk for the low nibbles, +1 for the high)
                let (qh, qs) = if ty == GgmlType::Q5K { (Some(&b[16..48]), &b[48..176]) } else { (None, &b[16..144]) };
                let fifth = |l: usize, bit: usize| qh.map(|h| if h[l] >> bit & 1 != 0 { 16.0 } else { 0.0 }).unwrap_or(0.0);
                for chunk in 0..4 {
                    let q = &qs[chunk * 32..chunk * 32 + 32];
                    let (s1, m1) = scale_min_k4(sc, 2 * chunk);
                    let (s2, m2) = scale_min_k4(sc, 2 * chunk + 1);
                    out.extend(q.iter().enumerate().map(|(l, &x)| d * s1 * ((x & 0x0f) as f32 + fifth(l, 2 * chunk)) - dmin * m1));
                    out.extend(q.iter().enumerate().map(|(l, &x)| d * s2 * ((x >> 4) as f32 + fifth(l, 2 * chunk + 1)) - dmin * m2));
                }
            }
        }
        GgmlType::Q8K => {
            for b in bytes.chunks_exact(bb) {
                let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                out.extend(b[4..260].iter().map(|&q| q as i8 as f32 * d));
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

/// Maps HF weight names onto GGUF tensor names. With `sandwich` (Gemma 3) the HF
/// `post_attention_layernorm` is the attention-output norm, not the pre-MLP one.
pub fn gguf_name(hf: &str, sandwich: bool) -> Option<String> {
    Some(match hf {
        "model.embed_tokens.weight" => "token_embd.weight".into(),
        "model.norm.weight" => "output_norm.weight".into(),
        "lm_head.weight" => "output.weight".into(),
        _ => {
            let rest = hf.strip_prefix("model.layers.")?;
            let (idx, tail) = rest.split_once('.')?;
            let mapped = match tail {
                "input_layernorm.weight" => "attn_norm.weight",
                "post_attention_layernorm.weight" if sandwich => "post_attention_norm.weight",
                "post_attention_layernorm.weight" => "ffn_norm.weight",
                "pre_feedforward_layernorm.weight" => "ffn_norm.weight",
                "post_feedforward_layernorm.weight" => "post_ffw_norm.weight",
                "self_attn.q_norm.weight" => "attn_q_norm.weight",
                "self_attn.k_norm.weight" => "attn_k_norm.weight",
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
                // Phi-3's fused projections (split by crate::fused::FusedSource)
                "self_attn.qkv_proj.weight" => "attn_qkv.weight",
                "mlp.gate_up_proj.weight" => "ffn_up.weight",
                _ => return None,
            };
            format!("blk.{idx}.{mapped}")
        }
    })
}

/// HF-named weights out of a GGUF file, with Llama Q/K un-permuted and Gemma norms un-shifted.
pub struct GgufSource<'a> {
    pub file: &'a GgufFile,
    pub unpermute: bool,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    /// Gemma: `post_attention_layernorm` is the attention-output norm.
    pub sandwich: bool,
    /// Subtracted from every norm weight (Gemma: 1, which llama.cpp's converter adds).
    pub norm_shift: f32,
}

impl WeightSource for GgufSource<'_> {
    fn tensor(&mut self, name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
        let Some(gname) = gguf_name(name, self.sandwich) else { return Ok(None) };
        let Some((shape, mut data)) = self
            .file
            .tensor_f32(&gname)
            .with_context(|| format!("{}", self.file.path.display()))?
        else {
            return Ok(None);
        };
        if self.norm_shift != 0.0 && gname.ends_with("norm.weight") {
            data.iter_mut().for_each(|x| *x -= self.norm_shift);
        }
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

impl GgufFile {
    /// The `tokenizer.ggml.*` metadata as plain values, for [`Tok::from_gguf_vocab`].
    pub fn vocab(&self) -> Result<GgufVocab> {
        let file = self.path.display().to_string();
        let model = self
            .get_str("tokenizer.ggml.model")
            .with_context(|| format!("{file}: missing tokenizer (tokenizer.ggml.model)"))?
            .to_string();
        let array = |key: &str| match self.get(key) {
            Some(GgufValue::Array(a)) => a.as_slice(),
            _ => &[],
        };
        let tokens = array("tokenizer.ggml.tokens")
            .iter()
            .map(|v| v.as_str().map(str::to_string).with_context(|| format!("{file}: tokenizer.ggml.tokens holds a non-string")))
            .collect::<Result<Vec<_>>>()?;
        let scores = array("tokenizer.ggml.scores")
            .iter()
            .map(|v| v.as_f64().map(|x| x as f32).with_context(|| format!("{file}: tokenizer.ggml.scores holds a non-number")))
            .collect::<Result<Vec<_>>>()?;
        let token_types = array("tokenizer.ggml.token_type").iter().map(|v| v.as_i64().unwrap_or(1)).collect();
        let merges = array("tokenizer.ggml.merges").iter().filter_map(|v| v.as_str().map(str::to_string)).collect();
        let id = |key: &str| self.get_u64(key).map(|v| v as u32);
        Ok(GgufVocab {
            file,
            model,
            pre: self.get_str("tokenizer.ggml.pre").map(str::to_string),
            tokens,
            scores,
            token_types,
            merges,
            bos_id: id("tokenizer.ggml.bos_token_id"),
            eos_id: id("tokenizer.ggml.eos_token_id"),
            eot_id: id("tokenizer.ggml.eot_token_id"),
            add_bos: self.get_bool("tokenizer.ggml.add_bos_token"),
            add_eos: self.get_bool("tokenizer.ggml.add_eos_token"),
            add_space_prefix: self.get_bool("tokenizer.ggml.add_space_prefix"),
            model_name: self.get_str("general.name").map(str::to_string),
        })
    }

    /// The file's tokenizer (`tokenizer.ggml.*`).
    pub fn tokenizer(&self) -> Result<Tok> {
        Tok::from_gguf_vocab(&self.vocab()?)
    }
}

/// GGUF architectures and their HF names.
const GGUF_ARCHITECTURES: &[(&str, &str)] = &[
    ("llama", "LlamaForCausalLM"),
    ("mistral", "MistralForCausalLM"),
    ("qwen2", "Qwen2ForCausalLM"),
    ("qwen3", "Qwen3ForCausalLM"),
    ("gemma3", "Gemma3ForCausalLM"),
    ("phi3", "Phi3ForCausalLM"),
];

/// Recovers Llama-3 `rope_scaling` from llama.cpp's `rope_freqs.weight` (one divisor of each
/// RoPE frequency: 1 for high frequencies, `factor` for low ones, a smooth blend in between).
/// The parameters are fitted and then checked to reproduce every divisor, so the model uses the
/// exact frequencies of the file and the exported HF config describes the same model.
fn llama3_scaling_from_rope_freqs(g: &GgufFile, cfg: &LlamaConfig) -> Result<RopeScaling> {
    let (shape, divisors) = g.tensor_f32("rope_freqs.weight")?.context("rope_freqs.weight")?;
    let half = cfg.head_dim() / 2;
    if shape.iter().product::<usize>() != half {
        bail!("rope_freqs.weight has shape {shape:?}, expected [{half}] (head_dim / 2)");
    }
    let arch = g.get_str("general.architecture").unwrap_or("llama");
    let factor = divisors.iter().copied().fold(1.0f32, f32::max) as f64;
    let wavelen = |i: usize| 2.0 * std::f64::consts::PI * cfg.rope_theta.powf((2 * i) as f64 / cfg.head_dim() as f64);
    // In the blend, 1/divisor = (1 - s)/factor + s with s = (old_ctx/wavelen - low)/(high - low).
    let blend: Vec<(f64, f64)> = (0..half)
        .filter(|&i| divisors[i] as f64 > 1.0 + 1e-6 && (divisors[i] as f64) < factor - 1e-6)
        .map(|i| {
            let s = (1.0 / divisors[i] as f64 - 1.0 / factor) / (1.0 - 1.0 / factor);
            (1.0 / wavelen(i), s)
        })
        .collect();
    // s = A/wavelen - B with A = old_ctx/(high - low), B = low/(high - low): two blended
    // frequencies give A and B. Without an original context length in the file, low_freq_factor
    // is taken as 1 (Llama 3.x's value) and old_ctx follows; only the ratios matter to the model.
    let key_ctx = g.get_u64(&format!("{arch}.rope.scaling.original_context_length")).map(|v| v as f64);
    let (low, high, old_ctx) = match blend.as_slice() {
        [(u0, s0), .., (u1, s1)] if (u1 - u0).abs() > 1e-12 => {
            let a = (s1 - s0) / (u1 - u0);
            let b = a * u0 - s0;
            match key_ctx {
                Some(old) => {
                    let width = old / a;
                    (b * width, b * width + width, old)
                }
                None => (1.0, 1.0 + 1.0 / b, (a / b).round()),
            }
        }
        _ => (1.0, 4.0, key_ctx.unwrap_or(8192.0)), // Llama 3.1 / 3.2's values
    };
    let round = |x: f64| (x * 1e4).round() / 1e4;
    let rs = RopeScaling {
        rope_type: "llama3".into(),
        factor: Some(round(factor)),
        low_freq_factor: Some(round(low)),
        high_freq_factor: Some(round(high)),
        original_max_position_embeddings: Some(old_ctx as usize),
    };
    let mut scaled = cfg.clone();
    scaled.rope_scaling = Some(rs.clone());
    let mut plain = cfg.clone();
    plain.rope_scaling = None;
    for (i, (s, p)) in scaled.rope_inv_freq().iter().zip(plain.rope_inv_freq()).enumerate() {
        let want = p / divisors[i];
        if (s - want).abs() > 1e-5 * want.abs() {
            bail!(
                "rope_freqs.weight is not Llama-3 rope scaling (frequency {i}: divisor {}, llama3 fit gives {})",
                divisors[i],
                p / s
            );
        }
    }
    Ok(rs)
}

/// `LlamaConfig` from GGUF metadata (`general.architecture` = llama | mistral | qwen2 | qwen3 | gemma3 | phi3).
pub fn config_from_gguf(g: &GgufFile, vocab_size: usize) -> Result<LlamaConfig> {
    let file = g.path.display().to_string();
    let arch = g.get_str("general.architecture").with_context(|| format!("{file}: missing general.architecture"))?;
    let Some(&(_, hf_arch)) = GGUF_ARCHITECTURES.iter().find(|(a, _)| *a == arch) else {
        let names: Vec<&str> = GGUF_ARCHITECTURES.iter().map(|(a, _)| *a).collect();
        bail!("{file}: unsupported architecture {arch:?} (supported: {})", names.join(", "));
    };
    let key = |k: &str| format!("{arch}.{k}");
    let req = |k: &str| -> Result<u64> { g.get_u64(&key(k)).with_context(|| format!("{file}: missing metadata {}", key(k))) };
    let n_heads = req("attention.head_count")? as usize;
    let hidden = req("embedding_length")? as usize;
    let n_layers = req("block_count")? as usize;
    let gemma = arch == "gemma3";
    let mut c = serde_json::json!({
        "architectures": [hf_arch],
        "model_type": if gemma { "gemma3_text" } else { arch },
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "intermediate_size": req("feed_forward_length")?,
        "num_hidden_layers": n_layers,
        "num_attention_heads": n_heads,
        "num_key_value_heads": g.get_u64(&key("attention.head_count_kv")).unwrap_or(n_heads as u64),
        "rms_norm_eps": g.get_f64(&key("attention.layer_norm_rms_epsilon")).unwrap_or(if gemma { 1e-6 } else { 1e-5 }),
        "rope_theta": g.get_f64(&key("rope.freq_base")).unwrap_or(if gemma { 1e6 } else { 10000.0 }),
        "tie_word_embeddings": g.info("output.weight").is_none(),
        "attention_bias": arch != "qwen2" && g.info("blk.0.attn_q.bias").is_some(),
        "max_position_embeddings": g.get_u64(&key("context_length")).unwrap_or(2048),
        "bos_token_id": g.get_u64("tokenizer.ggml.bos_token_id"),
        "eos_token_id": g.get_u64("tokenizer.ggml.eos_token_id"),
        "pad_token_id": g.get_u64("tokenizer.ggml.padding_token_id"),
    });
    if let Some(hd) = g.get_u64(&key("attention.key_length")) {
        c["head_dim"] = hd.into();
    }
    if gemma {
        c["hidden_activation"] = "gelu_pytorch_tanh".into();
        // GGUF has no query_pre_attn_scalar: llama.cpp scales by head_dim^-0.5, except for the
        // 62-layer 27B (hidden / heads)
        let head_dim = g.get_u64(&key("attention.key_length")).unwrap_or(256);
        c["query_pre_attn_scalar"] = if n_layers == 62 { (hidden / n_heads.max(1)) as u64 } else { head_dim }.into();
        // llama.cpp: Gemma 3's sliding layers use RoPE base 10000 and every 6th layer is global
        c["rope_local_base_freq"] = 10000.0.into();
        c["sliding_window"] = g.get_u64(&key("attention.sliding_window")).unwrap_or(4096).into();
        let types: Vec<&str> = match g.get(&key("attention.sliding_window_pattern")) {
            Some(GgufValue::Array(flags)) => flags
                .iter()
                .map(|f| if f.as_i64() == Some(1) { "sliding_attention" } else { "full_attention" })
                .collect(),
            other => {
                let n = other.and_then(|v| v.as_i64()).unwrap_or(6).max(1) as usize;
                (0..n_layers).map(|i| if (i + 1) % n != 0 { "sliding_attention" } else { "full_attention" }).collect()
            }
        };
        c["layer_types"] = types.into();
    } else if let Some(w) = g.get_u64(&key("attention.sliding_window")) {
        c["sliding_window"] = w.into();
        c["use_sliding_window"] = true.into();
        c["max_window_layers"] = 0.into();
    }
    match g.get_str(&key("rope.scaling.type")) {
        None | Some("none") => {}
        Some("linear") => {
            let factor = g.get_f64(&key("rope.scaling.factor")).with_context(|| format!("{file}: missing {}", key("rope.scaling.factor")))?;
            c["rope_scaling"] = serde_json::json!({"rope_type": "linear", "factor": factor});
        }
        Some(other) => bail!("{file}: unsupported {} {other:?} (supported: linear; Llama 3 scaling via rope_freqs.weight)", key("rope.scaling.type")),
    }
    let mut cfg: LlamaConfig = serde_json::from_value(c).with_context(|| format!("{file}: metadata"))?;
    if let Some(t) = ["rope_factors_long.weight", "rope_factors_short.weight"].into_iter().find(|t| g.info(t).is_some()) {
        bail!("{file}: {t} (LongRoPE short/long factors, the long-context Phi-3 variants) is not supported");
    }
    if g.info("rope_freqs.weight").is_some() {
        if arch != "llama" || cfg.rope_scaling.is_some() {
            bail!("{file}: rope_freqs.weight is only supported as Llama 3 rope scaling of a llama model");
        }
        cfg.rope_scaling = Some(llama3_scaling_from_rope_freqs(g, &cfg).with_context(|| file.clone())?);
    }
    if let Some(rot) = g.get_u64(&key("rope.dimension_count")) {
        if rot as usize != cfg.head_dim() {
            bail!("{file}: partial rotary embeddings ({arch}.rope.dimension_count = {rot}, head_dim = {}) are not supported", cfg.head_dim());
        }
    }
    cfg.validate().with_context(|| file.clone())?;
    Ok(cfg)
}

/// Loads a `.gguf` file: weights, tokenizer and chat template.
pub fn load_gguf(path: &Path, device: &Device) -> Result<LoadedModel> {
    load_gguf_as(path, device, crate::dtype::Dtype::F32)
}

/// [`load_gguf`] with the weights dequantised to `dtype` (one tensor at a time through f32).
pub fn load_gguf_as(path: &Path, device: &Device, dtype: crate::dtype::Dtype) -> Result<LoadedModel> {
    let g = GgufFile::open(path)?;
    let tokenizer = g.tokenizer()?;
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
        sandwich: config.sandwich_norms(),
        norm_shift: config.norm_offset() as f32,
    };
    let model = if config.family() == crate::config::Family::Phi3 {
        Llama::from_source_as(&config, &mut crate::fused::FusedSource::new(&mut src, &config), device, dtype)?
    } else {
        Llama::from_source_as(&config, &mut src, device, dtype)?
    };
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
