//! Writes a model as an HF directory (safetensors in the chosen dtype, HF names and `[out, in]`
//! layout, sharded with a `model.safetensors.index.json` past [`DEFAULT_MAX_SHARD_BYTES`]) that
//! `transformers`, vLLM and [`crate::load_model`] can read. LoRA adapters are merged first.

use anyhow::{bail, Context, Result};
use safetensors::tensor::TensorView;
use serde_json::json;
use std::path::Path;

use crate::config::{LlamaConfig, TokenIds};
use crate::fused::{fuse_for_export, Named};
use crate::dtype::Dtype;
use crate::model::{block_norm_names, to_vec_f32, Linear, Llama, RmsNorm};
use crate::LoadedModel;

/// transformers' default `max_shard_size` (`save_pretrained`): 5 GB per safetensors file.
pub const DEFAULT_MAX_SHARD_BYTES: u64 = 5_000_000_000;

/// How [`save_hf_with`] writes the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportOptions {
    /// Element type of every tensor in the safetensors files (and `config.json`'s `torch_dtype`).
    pub dtype: Dtype,
    /// Largest shard; a model over it is split into `model-0000k-of-0000n.safetensors` files
    /// with a `model.safetensors.index.json` (a tensor larger than this gets a shard of its own).
    pub max_shard_bytes: u64,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions { dtype: Dtype::F32, max_shard_bytes: DEFAULT_MAX_SHARD_BYTES }
    }
}

/// A size such as `5GB`, `200MB`, `64KiB` or `1000000` (bytes), as transformers'
/// `max_shard_size` reads it (KB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024).
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| anyhow::anyhow!("invalid size {s:?}: expected e.g. 5GB, 200MB or a byte count"))?;
    let mult: f64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1.0,
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KIB" => 1024.0,
        "MIB" => 1024.0 * 1024.0,
        "GIB" => 1024.0 * 1024.0 * 1024.0,
        other => bail!("invalid size {s:?}: unknown unit {other:?} (B, KB, MB, GB, KiB, MiB, GiB)"),
    };
    let bytes = n * mult;
    if bytes.is_nan() || bytes < 1.0 {
        bail!("invalid size {s:?}: must be at least 1 byte");
    }
    Ok(bytes as u64)
}

struct Out {
    name: String,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

/// Little-endian bytes of `data` in `dtype` (round to nearest even, as torch's `.to()`).
pub fn f32_to_bytes(data: &[f32], dtype: Dtype) -> Vec<u8> {
    match dtype {
        Dtype::F32 => data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Dtype::Bf16 => data.iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect(),
        Dtype::F16 => data.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect(),
    }
}

/// The tensors of an export, each converted to `dtype` as it is read back.
struct Outs {
    list: Vec<Out>,
    dtype: Dtype,
}

fn push(out: &mut Outs, name: String, shape: Vec<usize>, data: Vec<f32>) {
    let bytes = f32_to_bytes(&data, out.dtype);
    out.list.push(Out { name, shape, bytes });
}

fn push_linear(out: &mut Outs, prefix: &str, lin: &Linear) -> Result<()> {
    let [d_in, d_out] = lin.weight.dims();
    // stored [in, out] -> HF [out, in]
    let w = to_vec_f32(lin.weight.val().transpose())?;
    push(out, format!("{prefix}.weight"), vec![d_out, d_in], w);
    if let Some(b) = &lin.bias {
        push(out, format!("{prefix}.bias"), vec![d_out], to_vec_f32(b.val())?);
    }
    Ok(())
}

fn push_norm(out: &mut Outs, name: String, norm: &RmsNorm) -> Result<()> {
    push(out, name, norm.weight.dims().to_vec(), to_vec_f32(norm.weight.val())?);
    Ok(())
}

fn tensors_of(m: &Llama, cfg: &LlamaConfig, dtype: Dtype) -> Result<Vec<Out>> {
    let mut out = Outs { list: Vec::new(), dtype };
    let [v, d] = m.embed_tokens.dims();
    push(&mut out, "model.embed_tokens.weight".into(), vec![v, d], to_vec_f32(m.embed_tokens.val())?);
    let norm_names = block_norm_names(cfg);
    for (i, l) in m.layers.iter().enumerate() {
        let p = format!("model.layers.{i}");
        let norms = [Some(&l.attn_norm), l.attn_out_norm.as_ref(), Some(&l.mlp_norm), l.mlp_out_norm.as_ref()];
        for (name, norm) in norm_names.iter().zip(norms) {
            match (name, norm) {
                (Some(name), Some(norm)) => push_norm(&mut out, format!("{p}.{name}.weight"), norm)?,
                (None, None) => {}
                _ => bail!("layer {i}: the model's norms do not match the {} config", cfg.architecture()),
            }
        }
        for (name, norm) in [("q_norm", &l.self_attn.q_norm), ("k_norm", &l.self_attn.k_norm)] {
            if let Some(norm) = norm {
                push_norm(&mut out, format!("{p}.self_attn.{name}.weight"), norm)?;
            }
        }
        push_linear(&mut out, &format!("{p}.self_attn.q_proj"), &l.self_attn.q_proj)?;
        push_linear(&mut out, &format!("{p}.self_attn.k_proj"), &l.self_attn.k_proj)?;
        push_linear(&mut out, &format!("{p}.self_attn.v_proj"), &l.self_attn.v_proj)?;
        push_linear(&mut out, &format!("{p}.self_attn.o_proj"), &l.self_attn.o_proj)?;
        push_linear(&mut out, &format!("{p}.mlp.gate_proj"), &l.mlp.gate_proj)?;
        push_linear(&mut out, &format!("{p}.mlp.up_proj"), &l.mlp.up_proj)?;
        push_linear(&mut out, &format!("{p}.mlp.down_proj"), &l.mlp.down_proj)?;
    }
    push_norm(&mut out, "model.norm.weight".into(), &m.norm)?;
    if let Some(head) = &m.lm_head {
        push_linear(&mut out, "lm_head", head)?;
    }
    Ok(out.list)
}

/// Writes `tensors` as one `model.safetensors`, or as shards of at most `max_bytes` each (in
/// order, a tensor never split) named `model-0000k-of-0000n.safetensors` with the index
/// transformers reads (`metadata.total_size`, `weight_map`).
fn write_weights(dir: &Path, tensors: &[Out], dtype: Dtype, max_bytes: u64) -> Result<()> {
    let mut shards: Vec<Vec<&Out>> = vec![vec![]];
    let mut size = 0u64;
    for t in tensors {
        let n = t.bytes.len() as u64;
        if size > 0 && size + n > max_bytes {
            shards.push(vec![]);
            size = 0;
        }
        shards.last_mut().expect("one shard at least").push(t);
        size += n;
    }
    let count = shards.len();
    let name_of = |k: usize| {
        if count == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{count:05}.safetensors", k + 1)
        }
    };
    let mut weight_map = serde_json::Map::new();
    for (k, shard) in shards.iter().enumerate() {
        let views = shard
            .iter()
            .map(|t| {
                TensorView::new(dtype.safetensors(), t.shape.clone(), &t.bytes)
                    .map(|v| (t.name.clone(), v))
                    .map_err(|e| anyhow::anyhow!("tensor {}: {e}", t.name))
            })
            .collect::<Result<Vec<_>>>()?;
        let st_path = dir.join(name_of(k));
        let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
        safetensors::serialize_to_file(views, Some(meta), &st_path)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", st_path.display()))?;
        // safetensors writes through a private temp file (mode 0600); make it readable like the rest.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&st_path, std::fs::Permissions::from_mode(0o644))
                .with_context(|| format!("setting permissions of {}", st_path.display()))?;
        }
        for t in shard {
            weight_map.insert(t.name.clone(), json!(name_of(k)));
        }
    }
    if count > 1 {
        let total: usize = tensors.iter().map(|t| t.bytes.len()).sum();
        let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
        write(&dir.join("model.safetensors.index.json"), serde_json::to_string_pretty(&index)?)?;
    }
    Ok(())
}

fn write(path: &Path, text: String) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Writes config.json, model.safetensors (f32), tokenizer.json, tokenizer_config.json and
/// generation_config.json into `dir` (created if needed).
pub fn save_hf(lm: &LoadedModel, dir: &Path) -> Result<()> {
    save_hf_with(lm, dir, ExportOptions::default())
}

/// [`save_hf`] with the weights in `opts.dtype`, sharded past `opts.max_shard_bytes`.
pub fn save_hf_with(lm: &LoadedModel, dir: &Path, opts: ExportOptions) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let merged;
    let model = if lm.model.has_lora() {
        merged = lm.model.clone().merge_lora();
        &merged
    } else {
        &lm.model
    };

    let tensors = tensors_of(model, &lm.config, opts.dtype)?;
    // Phi-3 checkpoints keep q/k/v and gate/up fused: write them back that way (rows concatenate
    // byte for byte, in any dtype).
    let tensors: Vec<Out> = if lm.config.family() == crate::config::Family::Phi3 {
        let named = tensors.into_iter().map(|t| Named { name: t.name, shape: t.shape, bytes: t.bytes }).collect();
        fuse_for_export(named)?.into_iter().map(|t| Out { name: t.name, shape: t.shape, bytes: t.bytes }).collect()
    } else {
        tensors
    };
    write_weights(dir, &tensors, opts.dtype, opts.max_shard_bytes)?;

    let tok = &lm.tokenizer;
    let mut cfg = lm.config.clone();
    cfg.tie_word_embeddings = model.lm_head.is_none();
    cfg.eos_token_id = match tok.eos_ids.len() {
        0 => cfg.eos_token_id,
        1 => Some(TokenIds::One(tok.eos_ids[0])),
        _ => Some(TokenIds::Many(tok.eos_ids.clone())),
    };
    cfg.bos_token_id = tok.bos_id.or(cfg.bos_token_id);
    let mut cfg_json = serde_json::to_value(&cfg)?;
    if let Some(o) = cfg_json.as_object_mut() {
        o.insert("torch_dtype".into(), json!(opts.dtype.torch_name()));
        o.retain(|_, v| !v.is_null());
    }
    write(&dir.join("config.json"), serde_json::to_string_pretty(&cfg_json)?)?;
    write(&dir.join("tokenizer.json"), tok.to_json_string()?)?;

    let mut tc = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": false,
        "model_max_length": cfg.max_position_embeddings,
    });
    if let Some(b) = &tok.bos_token {
        tc["bos_token"] = json!(b);
    }
    if let Some(e) = &tok.eos_token {
        tc["eos_token"] = json!(e);
    }
    if let Some(t) = lm.chat.source() {
        tc["chat_template"] = json!(t);
    }
    write(&dir.join("tokenizer_config.json"), serde_json::to_string_pretty(&tc)?)?;

    let mut gc = json!({"_from_model_config": false});
    if let Some(b) = tok.bos_id {
        gc["bos_token_id"] = json!(b);
    }
    if !tok.eos_ids.is_empty() {
        gc["eos_token_id"] = json!(tok.eos_ids);
    }
    write(&dir.join("generation_config.json"), serde_json::to_string_pretty(&gc)?)?;
    Ok(())
}
