//! Writes a model as an HF directory (f32 safetensors, HF names and `[out, in]` layout) that
//! `transformers` and [`crate::load_model`] can read. LoRA adapters are merged first.

use anyhow::{bail, Context, Result};
use safetensors::{tensor::TensorView, Dtype};
use serde_json::json;
use std::path::Path;

use crate::config::{LlamaConfig, TokenIds};
use crate::fused::{fuse_for_export, Named};
use crate::model::{block_norm_names, to_vec_f32, Linear, Llama, RmsNorm};
use crate::LoadedModel;

struct Out {
    name: String,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

fn push(out: &mut Vec<Out>, name: String, shape: Vec<usize>, data: Vec<f32>) {
    let bytes = data.iter().flat_map(|x| x.to_le_bytes()).collect();
    out.push(Out { name, shape, bytes });
}

fn push_linear(out: &mut Vec<Out>, prefix: &str, lin: &Linear) -> Result<()> {
    let [d_in, d_out] = lin.weight.dims();
    // stored [in, out] -> HF [out, in]
    let w = to_vec_f32(lin.weight.val().transpose())?;
    push(out, format!("{prefix}.weight"), vec![d_out, d_in], w);
    if let Some(b) = &lin.bias {
        push(out, format!("{prefix}.bias"), vec![d_out], to_vec_f32(b.val())?);
    }
    Ok(())
}

fn push_norm(out: &mut Vec<Out>, name: String, norm: &RmsNorm) -> Result<()> {
    push(out, name, norm.weight.dims().to_vec(), to_vec_f32(norm.weight.val())?);
    Ok(())
}

fn tensors_of(m: &Llama, cfg: &LlamaConfig) -> Result<Vec<Out>> {
    let mut out = Vec::new();
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
    Ok(out)
}

fn write(path: &Path, text: String) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Writes config.json, model.safetensors, tokenizer.json, tokenizer_config.json and
/// generation_config.json into `dir` (created if needed).
pub fn save_hf(lm: &LoadedModel, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let merged;
    let model = if lm.model.has_lora() {
        merged = lm.model.clone().merge_lora();
        &merged
    } else {
        &lm.model
    };

    let tensors = tensors_of(model, &lm.config)?;
    // Phi-3 checkpoints keep q/k/v and gate/up fused: write them back that way.
    let tensors: Vec<Out> = if lm.config.family() == crate::config::Family::Phi3 {
        let named = tensors.into_iter().map(|t| Named { name: t.name, shape: t.shape, bytes: t.bytes }).collect();
        fuse_for_export(named)?.into_iter().map(|t| Out { name: t.name, shape: t.shape, bytes: t.bytes }).collect()
    } else {
        tensors
    };
    let views = tensors
        .iter()
        .map(|t| {
            TensorView::new(Dtype::F32, t.shape.clone(), &t.bytes)
                .map(|v| (t.name.clone(), v))
                .map_err(|e| anyhow::anyhow!("tensor {}: {e}", t.name))
        })
        .collect::<Result<Vec<_>>>()?;
    let st_path = dir.join("model.safetensors");
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
        o.insert("torch_dtype".into(), json!("float32"));
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
