//! Reduced precision (`Dtype::Bf16` / `F16`) on the CPU: weights load in the dtype (from f32
//! safetensors, bf16 safetensors without an f32 round trip, GGUF), the forward runs in it, and
//! mixed-precision gradients (f32 master weights, bf16 compute, f32 chunked head) follow the f32
//! ones. Tolerances are stated per assertion: bf16 keeps 8 significant bits (relative rounding
//! 2^-9 ≈ 0.2% per value).

mod common;

use burn::module::Module;
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use common::Tiny;
use dno_model::score::{value_and_grad, Scored};
use dno_model::{load_model_as, Dtype, Llama};

const ROWS: usize = 2;
const WIDTH: usize = 7;
const TOKENS: [i64; ROWS * WIDTH] = [104, 101, 108, 108, 111, 32, 119, 119, 111, 114, 108, 100, 33, 10];
const POSITIONS: [i64; 9] = [1, 2, 3, 1, 4, 7, 8, 9, 12];
const TARGETS: [i64; 9] = [108, 108, 111, 109, 32, 111, 114, 108, 10];
const SEQ_OF: [usize; 9] = [0, 0, 0, 2, 2, 1, 1, 1, 1];
const SEQS: usize = 3;

fn tokens(device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(TOKENS.to_vec(), [ROWS, WIDTH]), device)
}

fn vals<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.inner().into_data().try_into_vec_as::<f32>().unwrap()
}

/// max |a − b| / max |b|.
fn rel_max(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
    assert!(scale > 0.0, "all zero: the comparison would prove nothing");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max) / scale
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let n = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

#[test]
fn bf16_and_f16_forward_follow_f32() {
    let device = Device::flex();
    for tied in [true, false] {
        let tiny = Tiny::new(true, tied, 5);
        let dir = tempfile::tempdir().unwrap();
        tiny.write_hf(dir.path());
        let f32_model = load_model_as(dir.path(), &device, Dtype::F32).unwrap().model;
        let want = vals(f32_model.forward(tokens(&device)));
        for (dtype, tol) in [(Dtype::Bf16, 3e-2), (Dtype::F16, 4e-3)] {
            let m = load_model_as(dir.path(), &device, dtype).unwrap().model;
            assert_eq!(m.weight_dtype(), dtype.burn(), "weights stored in {dtype}");
            let out = m.forward(tokens(&device));
            assert_eq!(out.dtype(), dtype.burn(), "activations in {dtype}");
            let d = rel_max(&vals(out), &want);
            eprintln!("tied={tied} {dtype}: max |logit - f32 logit| / max |f32 logit| = {d:.2e}");
            assert!(d < tol, "{dtype}: relative logit error {d} over {tol}");
        }
    }
}

#[test]
fn bf16_safetensors_and_gguf_load_as_bf16() {
    let device = Device::flex();
    let tiny = Tiny::new(false, true, 7);
    let dir = tempfile::tempdir().unwrap();
    tiny.write_hf(dir.path());
    let f32_lm = load_model_as(dir.path(), &device, Dtype::F32).unwrap();
    // A bf16 checkpoint (what `dno export --dtype bf16` writes) loads as bf16 with identical
    // values to the f32 source rounded once.
    let bf16_dir = tempfile::tempdir().unwrap();
    dno_model::save_hf_with(&f32_lm, bf16_dir.path(), dno_model::ExportOptions { dtype: Dtype::Bf16, ..Default::default() }).unwrap();
    let direct = load_model_as(bf16_dir.path(), &device, Dtype::Bf16).unwrap().model;
    let rounded = load_model_as(dir.path(), &device, Dtype::Bf16).unwrap().model;
    assert_eq!(direct.weight_dtype(), DType::BF16);
    let a = vals(direct.forward(tokens(&device)));
    let b = vals(rounded.forward(tokens(&device)));
    assert_eq!(a, b, "bf16 file and f32 file narrowed at load are the same model");
    // GGUF dequantises into bf16.
    let gguf = dir.path().join("tiny.gguf");
    tiny.write_gguf(&gguf, false);
    let g32 = load_model_as(&gguf, &device, Dtype::F32).unwrap().model;
    let g16 = load_model_as(&gguf, &device, Dtype::Bf16).unwrap().model;
    assert_eq!(g16.weight_dtype(), DType::BF16);
    let d = rel_max(&vals(g16.forward(tokens(&device))), &vals(g32.forward(tokens(&device))));
    assert!(d < 3e-2, "gguf bf16 vs f32: {d}");
}

/// One loss through the chunked head; returns (loss, every parameter gradient flattened in
/// visiting order, (parameter dtype, gradient dtype) of each).
fn loss_and_grads(model: &Llama) -> (f32, Vec<Vec<f32>>, Vec<(DType, DType)>) {
    let device = model.device();
    let h = model.forward_hidden(tokens(&device));
    let d = h.dims()[2];
    let h = h.reshape([ROWS * WIDTH, d]);
    let s = Scored { positions: &POSITIONS, targets: &TARGETS, seq_of: &SEQ_OF, seqs: SEQS };
    let (l, seq, grads) = value_and_grad(model, h, s, 4, |s| {
        let c = Tensor::<1>::from_data(TensorData::new(vec![0.7f32, -1.3, 0.4], [SEQS]), &s.device());
        Ok((s.clone() * c).sum() + s.square().sum().mul_scalar(0.05))
    })
    .unwrap();
    assert_eq!(seq.dtype(), DType::F32, "sequence log-probs are f32");
    assert_eq!(l.dtype(), DType::F32, "the loss is f32");
    struct Collect<'a>(&'a burn::tensor::Gradients, Vec<Vec<f32>>, Vec<(DType, DType)>);
    impl burn::module::ModuleVisitor for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
            let g = p.val().grad(self.0).expect("every parameter has a gradient");
            self.2.push((p.val().dtype(), g.dtype()));
            self.1.push(g.into_data().try_into_vec_as::<f32>().unwrap());
        }
    }
    let mut c = Collect(&grads, vec![], vec![]);
    model.visit(&mut c);
    (vals(l)[0], c.1, c.2)
}

/// Mixed precision as the trainer runs it: a bf16 model (the trainer keeps the f32 master weights
/// in the optimiser) with f32 norm weights and an f32 residual stream gives each parameter a
/// gradient in its own dtype (bf16 but for the norms), f32 log-probs and loss, within 3% of the f32 loss and with gradient cosine similarity ≥ 0.99 and relative
/// norm difference ≤ 5% per parameter tensor, for tied and untied heads.
#[test]
fn mixed_precision_gradients_follow_f32() {
    // As the trainer does: load on the plain device, then move to autodiff with every
    // parameter trainable.
    let (device, ad) = (Device::flex(), Device::flex().autodiff());
    for tied in [true, false] {
        let tiny = Tiny::new(true, tied, 11);
        let dir = tempfile::tempdir().unwrap();
        tiny.write_hf(dir.path());
        let f32_model = load_model_as(dir.path(), &device, Dtype::F32).unwrap().model.fork(&ad).train();
        let (l32, g32, _) = loss_and_grads(&f32_model);
        let mixed = load_model_as(dir.path(), &device, Dtype::Bf16).unwrap().model.autocast().fork(&ad).train();
        assert_eq!(mixed.weight_dtype(), DType::BF16, "the trained parameters are bf16");
        let (l16, g16, dtypes) = loss_and_grads(&mixed);
        assert!(dtypes.iter().all(|(p, g)| p == g), "each gradient has its parameter's dtype: {dtypes:?}");
        // Per layer two norms (Tiny has no q/k norms), plus the final norm; every other weight bf16.
        let f32s = dtypes.iter().filter(|(p, _)| *p == DType::F32).count();
        assert_eq!(f32s, 2 * mixed.layers.len() + 1, "only the norm weights are f32: {dtypes:?}");
        let dl = ((l16 - l32) / l32).abs();
        eprintln!("tied={tied}: loss f32 {l32} vs mixed bf16 {l16} (relative {dl:.2e})");
        assert!(dl < 0.03, "loss {l16} vs f32 {l32}");
        assert_eq!(g32.len(), g16.len());
        let mut worst = (1f64, 0f64);
        for (i, (a, b)) in g16.iter().zip(&g32).enumerate() {
            let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            let (na, nb) = (norm(a), norm(b));
            if nb == 0.0 {
                assert_eq!(na, 0.0, "parameter {i}");
                continue;
            }
            let (cos, dn) = (cosine(a, b), (na - nb).abs() / nb);
            worst = (worst.0.min(cos), worst.1.max(dn));
            assert!(cos >= 0.99, "parameter {i}: gradient cosine {cos}");
            assert!(dn <= 0.05, "parameter {i}: gradient norm {na} vs f32 {nb}");
        }
        eprintln!("tied={tied}: {} gradients, worst cosine {:.5}, worst relative norm difference {:.2e}", g16.len(), worst.0, worst.1);
    }
}

/// `Llama::for_cpu_decoding` on a bf16 model: every projection and the tied head run on the
/// AVX512-BF16 kernel (`dno_model::bf16mm`), everything else in f32. Its logits, through the full
/// forward and through the KV-cached decode path, follow the f32 model's within bf16's
/// tolerance, and at least as closely as burn's all-bf16 path. On a CPU without AVX512-BF16 it
/// must leave the model as it is (reported as skipped).
#[test]
fn cpu_decoding_kernel_follows_f32() {
    let device = Device::flex();
    for (qwen2, tied) in [(true, true), (false, false)] {
        let tiny = Tiny::new(qwen2, tied, 11);
        let dir = tempfile::tempdir().unwrap();
        tiny.write_hf(dir.path());
        let f32_model = load_model_as(dir.path(), &device, Dtype::F32).unwrap().model;
        let bf16_model = load_model_as(dir.path(), &device, Dtype::Bf16).unwrap().model;
        let plain = vals(bf16_model.forward(tokens(&device)));
        let fast = bf16_model.for_cpu_decoding();
        // Each projection is packed on its own or within a fused q/k/v or gate/up matrix.
        let projections = |m: &Llama| -> Vec<bool> {
            m.layers
                .iter()
                .flat_map(|l| {
                    let (a, f) = (&l.self_attn, &l.mlp);
                    [
                        a.q_proj.packed.is_some() || a.packed_qkv.is_some(),
                        a.v_proj.packed.is_some() || a.packed_qkv.is_some(),
                        f.up_proj.packed.is_some() || f.packed_gate_up.is_some(),
                        f.down_proj.packed.is_some(),
                    ]
                })
                .collect()
        };
        if !dno_model::bf16mm::supported() {
            assert!(projections(&fast).iter().all(|p| !p), "no kernel on this CPU, so nothing may be packed");
            eprintln!("SKIPPED: this CPU has no AVX512-BF16; for_cpu_decoding left the model unchanged");
            return;
        }
        assert!(projections(&fast).iter().all(|&p| p), "every projection runs on the kernel");
        let fused = |m: &Llama| m.layers.iter().all(|l| l.self_attn.packed_qkv.is_some() && l.mlp.packed_gate_up.is_some());
        assert_eq!(fused(&fast), !qwen2, "q/k/v and gate/up are fused where there are no biases");
        assert_eq!(fast.packed_head.is_some(), tied, "the tied head is packed (an untied one is a packed Linear)");
        assert_eq!(fast.compute_dtype, DType::F32);
        let want = vals(f32_model.forward(tokens(&device)));
        let out = fast.forward(tokens(&device));
        assert_eq!(out.dtype(), DType::F32, "activations in f32");
        let (d_fast, d_plain) = (rel_max(&vals(out), &want), rel_max(&plain, &want));
        eprintln!("qwen2={qwen2} tied={tied}: relative logit error, kernel {d_fast:.2e}, all-bf16 {d_plain:.2e}");
        assert!(d_fast < 3e-2, "kernel path: relative logit error {d_fast}");
        assert!(d_fast <= d_plain * 1.5, "kernel path ({d_fast}) much further from f32 than all-bf16 ({d_plain})");
        // The decode path: prefill 5 tokens of row 0, then one cached step.
        let cached = |m: &Llama| {
            let mut cache = dno_model::model::KvCache::new(m.layers.len());
            let t = |ids: &[i64]| Tensor::<2, Int>::from_data(TensorData::new(ids.to_vec(), [1, ids.len()]), &device);
            m.forward_cached(t(&TOKENS[..5]), &[0], &[0], &mut cache);
            vals(m.lm_head(m.forward_cached(t(&TOKENS[5..6]), &[5], &[0], &mut cache)))
        };
        let d = rel_max(&cached(&fast), &cached(&f32_model));
        assert!(d < 3e-2, "cached decode step: relative logit error {d}");
    }
}
