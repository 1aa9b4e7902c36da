//! LoRA: merged == unmerged logits; only adapters receive gradients.

mod common;

use burn::module::Param;
use burn::tensor::{Device, Int, Tensor, TensorData};
use common::Tiny;
use dno_model::lora::LORA_TARGETS;
use dno_model::model::to_vec_f32;
use dno_model::load_model;

fn ids(device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(vec![104i64, 101, 108, 108, 111], [1, 5]), device)
}

#[test]
fn merged_lora_equals_unmerged() {
    let tiny = Tiny::new(true, true, 2);
    let dir = tempfile::tempdir().unwrap();
    tiny.write_hf(dir.path());
    let device = Device::flex();
    let lm = load_model(dir.path(), &device).unwrap();
    let base = to_vec_f32(lm.model.forward(ids(&device))).unwrap();
    let mut m = lm.model.attach_lora(4, 8.0, LORA_TARGETS, &device).unwrap();
    // fresh adapters are a no-op
    let fresh = to_vec_f32(m.forward(ids(&device))).unwrap();
    assert!(base.iter().zip(&fresh).all(|(a, b)| (a - b).abs() < 1e-6));
    // give every b a non-zero value so the adapters matter
    for layer in m.layers.iter_mut() {
        for lin in [&mut layer.self_attn.q_proj, &mut layer.mlp.down_proj, &mut layer.self_attn.v_proj] {
            let l = lin.lora.as_mut().unwrap();
            let [r, o] = l.b.dims();
            let v: Vec<f32> = (0..r * o).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.02).collect();
            l.b = Param::from_tensor(Tensor::from_data(TensorData::new(v, [r, o]), &device));
        }
    }
    let unmerged = to_vec_f32(m.forward(ids(&device))).unwrap();
    let changed = base.iter().zip(&unmerged).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(changed > 1e-3, "adapters had no effect");
    let merged = m.merge_lora();
    assert!(!merged.has_lora());
    let out = to_vec_f32(merged.forward(ids(&device))).unwrap();
    let d = unmerged.iter().zip(&out).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    println!("merged vs unmerged: max |dlogit| = {d:e}");
    assert!(d < 1e-4);
}

#[test]
fn only_adapters_get_gradients() {
    let tiny = Tiny::new(false, true, 4);
    let dir = tempfile::tempdir().unwrap();
    tiny.write_hf(dir.path());
    let device = Device::flex().autodiff();
    let lm = load_model(dir.path(), &device).unwrap();
    let m = lm.model.attach_lora(2, 4.0, &["q_proj", "v_proj"], &device).unwrap();
    let loss = m.forward(ids(&device)).square().mean();
    let grads = loss.backward();
    let l0 = &m.layers[0].self_attn;
    assert!(l0.q_proj.weight.val().grad(&grads).is_none(), "base q weight got a gradient");
    assert!(m.embed_tokens.val().grad(&grads).is_none(), "embeddings got a gradient");
    assert!(l0.q_proj.lora.as_ref().unwrap().a.val().grad(&grads).is_some());
    assert!(l0.v_proj.lora.as_ref().unwrap().b.val().grad(&grads).is_some());
    assert!(m.layers[0].self_attn.k_proj.lora.is_none());
    assert!(m.clone().attach_lora(2, 4.0, &["qkv"], &device).is_err());
}

#[test]
fn full_model_trains_on_autodiff_device() {
    let tiny = Tiny::new(true, false, 6);
    let dir = tempfile::tempdir().unwrap();
    tiny.write_hf(dir.path());
    let device = Device::flex().autodiff();
    let lm = load_model(dir.path(), &device).unwrap();
    let pairs = vec![(vec![104u32, 101], vec![108u32, 108, 111]), (vec![119u32], vec![111u32])];
    let (_, _, grads) = dno_model::score::score_value_and_grad(&lm.model, &pairs, |s| Ok(s.sum())).unwrap();
    assert!(lm.model.layers[1].mlp.up_proj.weight.val().grad(&grads).is_some());
    assert!(lm.model.embed_tokens.val().grad(&grads).is_some());
}
