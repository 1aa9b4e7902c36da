//! Loading a Hugging Face model directory: config.json, model.safetensors (or a sharded
//! model.safetensors.index.json), tokenizer.json, tokenizer_config.json / chat_template.jinja and
//! generation_config.json.

use anyhow::{bail, Context, Result};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, TensorData};

use crate::chat::ChatTemplate;
use crate::config::LlamaConfig;
use crate::dtype::Dtype as Precision;
use crate::model::{Llama, WeightSource};
use crate::tokenizer::Tok;
use crate::LoadedModel;

/// Weights from one or more memory-mapped safetensors files.
pub struct SafetensorsSource {
    files: Vec<(PathBuf, Mmap)>,
    /// tensor name -> index into `files`
    index: HashMap<String, usize>,
}

impl SafetensorsSource {
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for (i, path) in paths.iter().enumerate() {
            let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
            // SAFETY: the file is opened read-only and is not modified while mapped.
            let mmap = unsafe { Mmap::map(&file) }.with_context(|| format!("mapping {}", path.display()))?;
            let st = SafeTensors::deserialize(&mmap)
                .map_err(|e| anyhow::anyhow!("{}: invalid safetensors file: {e}", path.display()))?;
            for name in st.names() {
                index.insert(name.to_string(), i);
            }
            files.push((path.clone(), mmap));
        }
        Ok(SafetensorsSource { files, index })
    }
}

/// Converts raw little-endian tensor bytes to f32.
pub fn bytes_to_f32(dtype: Dtype, bytes: &[u8], name: &str) -> Result<Vec<f32>> {
    Ok(match dtype {
        Dtype::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
            .collect(),
        other => bail!("tensor {name}: unsupported safetensors dtype {other}"),
    })
}

impl SafetensorsSource {
    /// `name`'s shape, little-endian bytes (borrowed from the mapping) and dtype.
    fn view(&self, name: &str) -> Result<Option<(Vec<usize>, &[u8], safetensors::Dtype)>> {
        let Some(&i) = self.index.get(name) else { return Ok(None) };
        let (path, mmap) = &self.files[i];
        let st = SafeTensors::deserialize(mmap)
            .map_err(|e| anyhow::anyhow!("{}: invalid safetensors file: {e}", path.display()))?;
        let view = st
            .tensor(name)
            .map_err(|e| anyhow::anyhow!("{}: tensor {name}: {e}", path.display()))?;
        Ok(Some((view.shape().to_vec(), view.data(), view.dtype())))
    }
}

impl WeightSource for SafetensorsSource {
    fn tensor(&mut self, name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
        let Some((shape, bytes, dtype)) = self.view(name)? else { return Ok(None) };
        let data = bytes_to_f32(dtype, bytes, name).with_context(|| format!("in {}", self.origin()))?;
        Ok(Some((shape, data)))
    }

    /// A tensor already stored in `want` (bf16 weights loaded as bf16) is copied out of the
    /// mapping as it is; others convert through f32, one tensor at a time.
    fn tensor_as(&mut self, name: &str, want: Precision) -> Result<Option<(Vec<usize>, TensorData)>> {
        let Some((shape, bytes, st_dtype)) = self.view(name)? else { return Ok(None) };
        if st_dtype == want.safetensors() && cfg!(target_endian = "little") {
            return Ok(Some((shape.clone(), TensorData::from_bytes_vec(bytes.to_vec(), shape, want.burn()))));
        }
        let data = bytes_to_f32(st_dtype, bytes, name).with_context(|| format!("in {}", self.origin()))?;
        let t = TensorData::new(data, shape.clone());
        Ok(Some((shape, if want == Precision::F32 { t } else { t.convert_dtype(want.burn()) })))
    }

    fn origin(&self) -> String {
        self.files.iter().map(|(p, _)| p.display().to_string()).collect::<Vec<_>>().join(", ")
    }
}

/// The safetensors files of a model directory (single file or sharded index).
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index_path = dir.join("model.safetensors.index.json");
    if index_path.is_file() {
        let text = std::fs::read_to_string(&index_path)
            .with_context(|| format!("reading {}", index_path.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("parsing {}", index_path.display()))?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .with_context(|| format!("{}: missing weight_map", index_path.display()))?;
        let shards: BTreeSet<String> =
            map.values().filter_map(|f| f.as_str().map(|s| s.to_string())).collect();
        return Ok(shards.into_iter().map(|s| dir.join(s)).collect());
    }
    bail!(
        "no weights in {}: expected model.safetensors or model.safetensors.index.json",
        dir.display()
    )
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(Some(v))
}

/// `bos_token` / `eos_token` in tokenizer_config.json: a string or `{"content": ...}`.
fn token_str(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(|s| s.to_string()),
        _ => None,
    }
}

fn ids_of(v: Option<&serde_json::Value>) -> Vec<u32> {
    match v {
        Some(serde_json::Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|x| x.as_u64()).map(|x| x as u32).collect(),
        _ => vec![],
    }
}

/// Loads an HF model directory (in f32).
pub fn load_hf_dir(dir: &Path, device: &Device) -> Result<LoadedModel> {
    load_hf_dir_as(dir, device, Precision::F32)
}

/// Loads an HF model directory with its weights in `dtype`.
pub fn load_hf_dir_as(dir: &Path, device: &Device, dtype: Precision) -> Result<LoadedModel> {
    let config = LlamaConfig::from_file(&dir.join("config.json"))?;
    let files = weight_files(dir)?;
    let mut src = SafetensorsSource::open(&files)?;
    let model = if config.family() == crate::config::Family::Phi3 {
        Llama::from_source_as(&config, &mut crate::fused::FusedSource::new(&mut src, &config), device, dtype)?
    } else {
        Llama::from_source_as(&config, &mut src, device, dtype)?
    };

    let tok_cfg = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or(serde_json::Value::Null);
    let gen_cfg = read_json(&dir.join("generation_config.json"))?.unwrap_or(serde_json::Value::Null);
    let tok_path = dir.join("tokenizer.json");
    if !tok_path.is_file() {
        bail!("missing tokenizer: {} not found", tok_path.display());
    }
    let bos_token = token_str(tok_cfg.get("bos_token"));
    let eos_token = token_str(tok_cfg.get("eos_token"));
    let mut tokenizer = Tok::from_file(&tok_path, bos_token.clone(), eos_token.clone())?;

    // EOS ids: union of generation_config, config and tokenizer_config's eos_token.
    let mut eos: Vec<u32> = ids_of(gen_cfg.get("eos_token_id"));
    for id in config.eos_ids() {
        if !eos.contains(&id) {
            eos.push(id);
        }
    }
    if let Some(id) = eos_token.as_deref().and_then(|t| tokenizer.token_to_id(t)) {
        if !eos.contains(&id) {
            eos.push(id);
        }
    }
    tokenizer.eos_ids = eos;
    if tokenizer.bos_id.is_none() {
        tokenizer.bos_id = ids_of(gen_cfg.get("bos_token_id")).first().copied().or(config.bos_token_id);
    }

    let jinja_path = dir.join("chat_template.jinja");
    let template = if jinja_path.is_file() {
        Some(std::fs::read_to_string(&jinja_path).with_context(|| format!("reading {}", jinja_path.display()))?)
    } else {
        match tok_cfg.get("chat_template") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            // A list of named templates: use "default".
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .and_then(|t| t.get("template").and_then(|s| s.as_str()))
                .map(|s| s.to_string()),
            _ => None,
        }
    };
    let chat = ChatTemplate::new(
        template,
        tokenizer.bos_token.clone().unwrap_or_default(),
        tokenizer.eos_token.clone().unwrap_or_default(),
    )
    .with_context(|| format!("chat template of {}", dir.display()))?;
    Ok(LoadedModel { model, config, tokenizer, chat })
}
