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
            let w = lin.weight.val() + l.a.val().matmul(l.b.val()).mul_scalar(l.scale);
            let w = w.detach();
            Linear { weight: Param::from_tensor(w), bias: lin.bias, lora: None }
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
    Linear { weight: lin.weight.clone(), bias: None, lora: None }
}
