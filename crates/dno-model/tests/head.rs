//! The chunked output head equals the plain one (full logits, burn's log-softmax, burn's
//! autodiff): sequence log-probs, loss, and gradients w.r.t. the hidden states, the head weight
//! and a layer weight, for tied and untied heads and chunk sizes that do and do not divide the
//! number of scored positions.

mod common;

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, IndexingUpdateOp, Int, Tensor, TensorData};
use common::Tiny;
use dno_model::score::{value_and_grad, Scored};
use dno_model::{load_model, Llama};

const ROWS: usize = 2;
const WIDTH: usize = 7;
const TOKENS: [i64; ROWS * WIDTH] = [104, 101, 108, 108, 111, 32, 119, 119, 111, 114, 108, 100, 33, 10];
// Nine scored positions over three sequences (row 0 holds two, as a packed pair would).
const POSITIONS: [i64; 9] = [1, 2, 3, 1, 4, 7, 8, 9, 12];
const TARGETS: [i64; 9] = [108, 108, 111, 109, 32, 111, 114, 108, 10];
const SEQ_OF: [usize; 9] = [0, 0, 0, 2, 2, 1, 1, 1, 1];
const SEQS: usize = 3;

fn scored() -> Scored<'static> {
    Scored { positions: &POSITIONS, targets: &TARGETS, seq_of: &SEQ_OF, seqs: SEQS }
}

/// A loss that is not linear in the sequence log-probs, so every sequence gets its own upstream
/// gradient.
fn loss(s: Tensor<1>) -> Tensor<1> {
    let device = s.device();
    let c = Tensor::<1>::from_data(TensorData::new(vec![0.7f32, -1.3, 0.4], [SEQS]), &device);
    (s.clone() * c).sum() + s.square().sum().mul_scalar(0.05)
}

fn hidden(model: &Llama, device: &Device) -> Tensor<2> {
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(TOKENS.to_vec(), [ROWS, WIDTH]), device);
    let h = model.forward_hidden(tokens);
    let d = h.dims()[2];
    h.reshape([ROWS * WIDTH, d])
}

/// The plain head: every selected position's full logits, burn's log-softmax, burn's backward.
fn plain_seq_logps(model: &Llama, hidden: Tensor<2>) -> Tensor<1> {
    let device = hidden.device();
    let idx = Tensor::<1, Int>::from_data(TensorData::new(POSITIONS.to_vec(), [9]), &device);
    let tgt = Tensor::<2, Int>::from_data(TensorData::new(TARGETS.to_vec(), [9, 1]), &device);
    let lp = log_softmax(model.lm_head(hidden.select(0, idx)), 1).gather(1, tgt).reshape([9]);
    let owner = Tensor::<1, Int>::from_data(TensorData::new(SEQ_OF.iter().map(|&q| q as i64).collect::<Vec<_>>(), [9]), &device);
    Tensor::zeros([SEQS], &device).select_assign(0, owner, lp, IndexingUpdateOp::Add)
}

fn vals<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.inner().into_data().try_to_vec::<f32>().unwrap()
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
    assert!(scale > 0.0, "{what}: all zero, the test would prove nothing");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "{what}[{i}]: chunked {g} vs plain {w}");
    }
}

fn head_weight(model: &Llama) -> Tensor<2> {
    match &model.lm_head {
        Some(l) => l.weight.val(),
        None => model.embed_tokens.val(),
    }
}

#[test]
fn chunked_head_equals_plain_head_forward_and_gradients() {
    let device = Device::flex().autodiff();
    for tied in [true, false] {
        let tiny = Tiny::new(false, tied, 11);
        let dir = tempfile::tempdir().unwrap();
        tiny.write_hf(dir.path());
        let model = load_model(dir.path(), &device).unwrap().model;

        // Hidden states as a leaf: gradients w.r.t. the hidden states and the head weight only.
        let h0 = hidden(&model, &device).detach();
        let leaf = h0.clone().require_grad();
        let want_seq = plain_seq_logps(&model, leaf.clone());
        let want_loss = loss(want_seq.clone());
        let g = want_loss.backward();
        let (want_dh, want_dw) = (vals(leaf.grad(&g).unwrap()), vals(head_weight(&model).grad(&g).unwrap()));
        // Through the whole model: a layer's weight gradient.
        let want_dq = {
            let g = loss(plain_seq_logps(&model, hidden(&model, &device))).backward();
            vals(model.layers[0].self_attn.q_proj.weight.val().grad(&g).unwrap())
        };

        for chunk in [1, 2, 3, 4, 9, 256] {
            let what = |x: &str| format!("tied={tied} chunk={chunk}: {x}");
            let leaf = h0.clone().require_grad();
            let (l, seq, g) = value_and_grad(&model, leaf.clone(), scored(), chunk, |s| Ok(loss(s))).unwrap();
            assert_close(&what("sequence log-probs"), &vals(seq), &vals(want_seq.clone()));
            assert_close(&what("loss"), &vals(l), &vals(want_loss.clone()));
            assert_close(&what("d/d hidden"), &vals(leaf.grad(&g).unwrap()), &want_dh);
            assert_close(&what("d/d head weight"), &vals(head_weight(&model).grad(&g).unwrap()), &want_dw);
            let (_, _, g) = value_and_grad(&model, hidden(&model, &device), scored(), chunk, |s| Ok(loss(s))).unwrap();
            assert_close(&what("d/d layer-0 q_proj"), &vals(model.layers[0].self_attn.q_proj.weight.val().grad(&g).unwrap()), &want_dq);
        }
    }
}
