//! Global gradient-norm clipping with one read-back equals the per-tensor computation it
//! replaced (each tensor's squared norm read back on its own, summed in f64 on the host).

mod common;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor, TensorData};
use dno_train::optim::clip_global_norm;

/// Per parameter (in visiting order): the gradient's values and its squared norm read back alone.
struct PerTensor<'a> {
    grads: &'a GradientsParams,
    values: Vec<Vec<f32>>,
    squares: f64,
}

impl ModuleVisitor for PerTensor<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            let sq: f32 = g.clone().square().sum().into_scalar();
            self.squares += sq as f64;
            self.values.push(g.into_data().try_to_vec::<f32>().unwrap());
        }
    }
}

fn per_tensor(model: &dno_model::Llama, grads: &GradientsParams) -> (Vec<Vec<f32>>, f64) {
    let mut v = PerTensor { grads, values: Vec::new(), squares: 0.0 };
    model.visit(&mut v);
    (v.values, v.squares.sqrt())
}

#[test]
fn one_sync_clipping_equals_per_tensor_clipping() {
    let device = Device::flex().autodiff();
    let model = common::tiny_model(5, &device).model.train();
    let gradients = || {
        let t = Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, 5, 9, 20, 3, 7], [1, 6]), &device);
        let loss = model.forward(t).square().mean().mul_scalar(100.0);
        GradientsParams::from_grads(loss.backward(), &model)
    };
    let (before, want_norm) = per_tensor(&model, &gradients());
    assert!(before.len() > 10, "every parameter has a gradient");
    for max_norm in [0.0, want_norm * 0.3, want_norm * 2.0] {
        let (clipped, norm) = clip_global_norm(&model, gradients(), max_norm).unwrap();
        assert!((norm - want_norm).abs() <= 1e-9 * want_norm, "norm {norm} vs per-tensor {want_norm}");
        let factor = if max_norm > 0.0 && want_norm > max_norm { max_norm / (want_norm + 1e-6) } else { 1.0 };
        let (after, _) = per_tensor(&model, &clipped);
        for (k, (a, b)) in after.iter().zip(&before).enumerate() {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                let want = (*y as f64 * factor) as f32;
                assert!((x - want).abs() <= 1e-6 * (1.0 + want.abs()), "max_norm {max_norm}: tensor {k}[{i}] {x} vs {want}");
            }
        }
    }
}
