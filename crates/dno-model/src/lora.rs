//! LoRA adapters on the Llama projections: `W x + (alpha / r) * B A x` (Hu et al. 2021), stored
//! in our `[in, out]` layout as `x @ a @ b` with `a: [in, r]`, `b: [r, out]`.
//! Attaching freezes every base parameter (`set_require_grad(false)`), so only adapters train.

use anyhow::{bail, Result};
use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor, TensorData};

use crate::generate::Rng;
use crate::model::{Linear, Llama, LoraAdapter};

pub const LORA_TARGETS: &[&str] =
    &["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

fn adapter(lin: &Linear, rank: usize, alpha: f64, rng: &mut Rng, device: &Device) -> LoraAdapter {
    let [d_in, d_out] = lin.weight.dims();
    // a ~ U(-1/sqrt(in), 1/sqrt(in)) (Kaiming-uniform-like), b = 0: the adapter starts as a no-op.
    let bound = 1.0 / (d_in as f32).sqrt();
    let a: Vec<f32> = (0..d_in * rank).map(|_| (rng.next_f32() * 2.0 - 1.0) * bound).collect();
    LoraAdapter {
        a: Param::from_tensor(Tensor::from_data(TensorData::new(a, [d_in, rank]), device)),
        b: Param::from_tensor(Tensor::zeros([rank, d_out], device)),
        scale: alpha / rank as f64,
    }
}

fn merged(lin: Linear) -> Linear {
    match lin.lora {
        None => lin,
        Some(l) => {
            let w = lin.weight.val();
            let delta = l.a.val().matmul(l.b.val()).mul_scalar(l.scale);
            let w = w.clone() + crate::model::like(delta, w.dtype());
            let w = w.detach();
            Linear { weight: Param::from_tensor(w), bias: lin.bias, lora: None, packed: None }
        }
    }
}

impl Llama {
    /// Freezes all base weights and attaches fresh adapters to the named projections of every
    /// layer (`targets` from [`LORA_TARGETS`]). Adapter `a` is seeded deterministically.
    pub fn attach_lora(self, rank: usize, alpha: f64, targets: &[&str], device: &Device) -> Result<Llama> {
        if rank == 0 {
            bail!("LoRA rank must be > 0");
        }
        for t in targets {
            if !LORA_TARGETS.contains(t) {
                bail!("unknown LoRA target {t:?} (expected one of {})", LORA_TARGETS.join(", "));
            }
        }
        let mut m = self.no_grad();
        let mut rng = Rng::new(0x10a5_eed5);
        for layer in m.layers.iter_mut() {
            let attn = &mut layer.self_attn;
            let mlp = &mut layer.mlp;
            let slots: [(&str, &mut Linear); 7] = [
                ("q_proj", &mut attn.q_proj),
                ("k_proj", &mut attn.k_proj),
                ("v_proj", &mut attn.v_proj),
                ("o_proj", &mut attn.o_proj),
                ("gate_proj", &mut mlp.gate_proj),
                ("up_proj", &mut mlp.up_proj),
                ("down_proj", &mut mlp.down_proj),
            ];
            for (name, lin) in slots {
                if targets.contains(&name) {
                    lin.lora = Some(adapter(lin, rank, alpha, &mut rng, device));
                }
            }
        }
        Ok(m)
    }

    /// Folds every adapter into its base weight and removes it.
    pub fn merge_lora(self) -> Llama {
        let mut m = self;
        for layer in m.layers.iter_mut() {
            let attn = &mut layer.self_attn;
            let mlp = &mut layer.mlp;
            for lin in [
                &mut attn.q_proj,
                &mut attn.k_proj,
                &mut attn.v_proj,
                &mut attn.o_proj,
                &mut mlp.gate_proj,
                &mut mlp.up_proj,
                &mut mlp.down_proj,
            ] {
                let owned = std::mem::replace(lin, placeholder(lin));
                *lin = merged(owned);
            }
        }
        m
    }

    pub fn has_lora(&self) -> bool {
        self.layers.iter().any(|l| {
            let a = &l.self_attn;
            let p = &l.mlp;
            [&a.q_proj, &a.k_proj, &a.v_proj, &a.o_proj, &p.gate_proj, &p.up_proj, &p.down_proj]
                .iter()
                .any(|x| x.lora.is_some())
        })
    }
}

/// Cheap stand-in used while moving a `Linear` out of a `&mut` slot.
fn placeholder(lin: &Linear) -> Linear {
    Linear { weight: lin.weight.clone(), bias: None, lora: None, packed: None }
}

/// The projections of every layer, by name, in [`LORA_TARGETS`] order.
fn projections(m: &mut Llama) -> Vec<(String, &mut Linear)> {
    let mut out = Vec::new();
    for (i, layer) in m.layers.iter_mut().enumerate() {
        let attn = &mut layer.self_attn;
        let mlp = &mut layer.mlp;
        for (name, lin) in [
            ("self_attn.q_proj", &mut attn.q_proj),
            ("self_attn.k_proj", &mut attn.k_proj),
            ("self_attn.v_proj", &mut attn.v_proj),
            ("self_attn.o_proj", &mut attn.o_proj),
            ("mlp.gate_proj", &mut mlp.gate_proj),
            ("mlp.up_proj", &mut mlp.up_proj),
            ("mlp.down_proj", &mut mlp.down_proj),
        ] {
            out.push((format!("model.layers.{i}.{name}"), lin));
        }
    }
    out
}

/// A LoRA adapter directory in PEFT's format, as `peft.PeftModel.from_pretrained` and vLLM's
/// `--lora-modules` read it: `adapter_config.json` (`peft_type` LORA, `r`, `lora_alpha`,
/// `target_modules`) and `adapter_model.safetensors` with keys
/// `base_model.model.<module>.lora_A.weight` `[r, in]` and `.lora_B.weight` `[out, r]` (PyTorch
/// layout: our `a` `[in, r]` and `b` `[r, out]` transposed). PEFT scales by `lora_alpha / r`, as
/// [`Llama::attach_lora`] does.
pub mod peft {
    use super::*;
    use crate::hf::SafetensorsSource;
    use crate::model::{to_vec_f32, WeightSource};
    use anyhow::Context;
    use serde_json::json;
    use std::path::Path;

    pub const CONFIG: &str = "adapter_config.json";
    pub const WEIGHTS: &str = "adapter_model.safetensors";

    fn key(module: &str, ab: &str) -> String {
        format!("base_model.model.{module}.lora_{ab}.weight")
    }

    /// (rank, alpha, targets) of an adapter directory's `adapter_config.json`.
    pub fn read_config(dir: &Path) -> Result<(usize, f64, Vec<String>)> {
        let path = dir.join(CONFIG);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let field = |k: &str| v.get(k).with_context(|| format!("{}: missing field {k}", path.display()));
        if field("peft_type")?.as_str() != Some("LORA") {
            bail!("{}: peft_type must be \"LORA\"", path.display());
        }
        for (k, off) in [("use_dora", false), ("use_rslora", false)] {
            if v.get(k).and_then(|x| x.as_bool()).unwrap_or(off) {
                bail!("{}: {k} adapters are not supported", path.display());
            }
        }
        let r = field("r")?.as_u64().with_context(|| format!("{}: field r must be a positive integer", path.display()))? as usize;
        let alpha = field("lora_alpha")?.as_f64().with_context(|| format!("{}: field lora_alpha must be a number", path.display()))?;
        let targets: Vec<String> = match field("target_modules")? {
            serde_json::Value::Array(a) => a.iter().filter_map(|t| t.as_str().map(|s| s.to_string())).collect(),
            serde_json::Value::String(s) => vec![s.clone()],
            _ => bail!("{}: field target_modules must be a list of names", path.display()),
        };
        for t in &targets {
            if !LORA_TARGETS.contains(&t.as_str()) {
                bail!("{}: target module {t:?} is not one of {}", path.display(), LORA_TARGETS.join(", "));
            }
        }
        Ok((r, alpha, targets))
    }

    /// Writes `model`'s adapters (f32) and their config into `dir`. `base` names the base model
    /// (`base_model_name_or_path`, null when unknown).
    pub fn save(model: &Llama, dir: &Path, base: Option<&str>) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut m = model.clone();
        let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        let (mut rank, mut scale, mut targets) = (0, 0.0, Vec::<String>::new());
        for (module, lin) in projections(&mut m) {
            let Some(l) = &lin.lora else { continue };
            let [d_in, r] = l.a.dims();
            let d_out = l.b.dims()[1];
            rank = r;
            scale = l.scale;
            let short = module.rsplit('.').next().unwrap_or_default().to_string();
            if !targets.contains(&short) {
                targets.push(short);
            }
            let a = to_vec_f32(l.a.val().transpose())?;
            let b = to_vec_f32(l.b.val().transpose())?;
            tensors.push((key(&module, "A"), vec![r, d_in], crate::export::f32_to_bytes(&a, crate::Dtype::F32)));
            tensors.push((key(&module, "B"), vec![d_out, r], crate::export::f32_to_bytes(&b, crate::Dtype::F32)));
        }
        if tensors.is_empty() {
            bail!("the model has no LoRA adapters to save");
        }
        let views = tensors
            .iter()
            .map(|(n, s, b)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| anyhow::anyhow!("tensor {n}: {e}"))
            })
            .collect::<Result<Vec<_>>>()?;
        let path = dir.join(WEIGHTS);
        let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
        safetensors::serialize_to_file(views, Some(meta), &path).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
                .with_context(|| format!("setting permissions of {}", path.display()))?;
        }
        let cfg = json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base,
            "r": rank,
            "lora_alpha": scale * rank as f64,
            "lora_dropout": 0.0,
            "target_modules": targets,
            "bias": "none",
            "fan_in_fan_out": false,
            "inference_mode": true,
            "init_lora_weights": true,
            "use_rslora": false,
            "use_dora": false,
            "modules_to_save": null,
        });
        let cpath = dir.join(CONFIG);
        std::fs::write(&cpath, serde_json::to_string_pretty(&cfg)?).with_context(|| format!("writing {}", cpath.display()))
    }

    /// `model` with its adapters' values replaced by those of the PEFT directory `dir` (the
    /// adapters must be attached already, with the directory's rank and targets; see
    /// [`read_config`]). Each adapter keeps its parameter id and trainability, so training
    /// continues from the loaded values.
    pub fn load_into(model: Llama, dir: &Path) -> Result<Llama> {
        let path = dir.join(WEIGHTS);
        let mut src = SafetensorsSource::open(std::slice::from_ref(&path))?;
        let mut m = model;
        let mut loaded = 0;
        for (module, lin) in projections(&mut m) {
            let Some(l) = lin.lora.as_mut() else { continue };
            let [d_in, r] = l.a.dims();
            let d_out = l.b.dims()[1];
            let device = l.a.val().device();
            let mut get = |ab: &str, shape: [usize; 2]| -> Result<Tensor<2>> {
                let name = key(&module, ab);
                let (got, data) = src.tensor(&name)?.with_context(|| format!("{}: missing tensor {name}", path.display()))?;
                if got != shape {
                    bail!("{}: tensor {name} has shape {got:?}, expected {shape:?}", path.display());
                }
                // PyTorch layout [r, in] / [out, r] -> ours [in, r] / [r, out].
                let t = Tensor::<2>::from_data(TensorData::new(data, shape), &device).transpose();
                Ok(Tensor::from_data(t.into_data(), &device))
            };
            let (a, b) = (get("A", [r, d_in])?, get("B", [d_out, r])?);
            l.a = l.a.clone().map(|old| if old.is_require_grad() { a.clone().require_grad() } else { a.clone() });
            l.b = l.b.clone().map(|old| if old.is_require_grad() { b.clone().require_grad() } else { b.clone() });
            loaded += 2;
        }
        if loaded == 0 {
            bail!("{}: the model has no adapters attached to load into", dir.display());
        }
        Ok(m)
    }
}
