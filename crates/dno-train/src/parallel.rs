//! Data parallelism: a batch is split by pair into shards that run forward (+ backward) at the
//! same time, each on its own fork of the model (same parameter ids, its own autodiff graph),
//! and the shards' gradients are summed on the training device. This is the pattern of
//! burn-train's multi-device step (fork per device, `GradientsParams::to_device`,
//! `GradientsAccumulator`), used here without burn-train's `Learner`.
//!
//! * On the CPU there is one shard per core on the same device: burn's CPU backend runs
//!   element-wise ops on the calling thread and only matmuls on all cores, so one shard at a
//!   time left a core idle for much of each step (DPO on SmolLM2: 61 -> 100 tokens/s on 2 cores).
//! * With several accelerators (`dno train --devices cuda:0,cuda:1`) training is replicated
//!   (data-parallel, as PyTorch's DDP): device k keeps its own copy of the policy and of the
//!   optimiser state for the whole run and computes the gradients of its part of every
//!   micro-batch; after the step's backward passes the gradients are summed across the devices
//!   ([`all_reduce_gradients`]) and every device applies the same update to its copy, so the
//!   copies stay equal and no weights move between devices. The sum is burn's collective
//!   (`burn::tensor::distributed::all_reduce`, NCCL) on CUDA; burn 0.22 has no collective on its
//!   other backends, so elsewhere (several wgpu GPUs) each gradient is summed on the first device
//!   and copied back.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::distributed::{all_reduce, ReduceOperation};
use burn::tensor::{Device, Tensor};
use dno_model::Llama;

/// The device of every shard (a device appears once per shard it runs).
#[derive(Debug, Clone)]
pub struct ShardPlan {
    /// Plain (non-autodiff) devices, one per shard; never empty.
    pub devices: Vec<Device>,
}

impl ShardPlan {
    /// `devices` when given (one shard each); else `shards` (or one per core on the CPU, 1 on a
    /// GPU) on `main`.
    pub fn new(main: &Device, devices: &[Device], shards: Option<usize>) -> Self {
        if !devices.is_empty() {
            return ShardPlan { devices: devices.to_vec() };
        }
        let n = shards.unwrap_or_else(|| dno_model::device::data_parallel_shards(main)).max(1);
        ShardPlan { devices: vec![main.clone(); n] }
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Whether each shard's device keeps its own replica of the policy and optimiser for the run
    /// (several distinct accelerators) rather than a fork of the policy per micro-batch (shards on
    /// one device: the CPU's one-per-core plan shares the weights and one optimiser).
    pub fn replicated(&self) -> bool {
        let distinct = self.devices.iter().enumerate().all(|(k, d)| !self.devices[..k].contains(d));
        self.devices.len() > 1 && distinct && !self.devices.iter().any(|d| d.clone().inner() == Device::flex())
    }

    /// `model` (plain) on every shard's device: clones share weights on the same device.
    pub fn replicas(&self, model: &Llama, main: &Device) -> Vec<Llama> {
        self.devices.iter().map(|d| if d == main { model.clone() } else { model.clone().fork(d) }).collect()
    }
}

/// Sums the replicas' gradients across the devices, in place: afterwards `grads[k]` (on
/// `devices[k]`, the gradients of replica k) holds, for every parameter of `model` that has a
/// gradient on some device, the sum over all devices (zeros standing in for a device whose part
/// of the step was empty). On CUDA this is one `all_reduce` (NCCL) per parameter, issued on every
/// device in the same order and waited for once per device at the end; without a collective
/// (any other backend) each sum is taken on the first device and copied to the others.
pub fn all_reduce_gradients<M: Module>(model: &M, grads: &mut [GradientsParams], devices: &[Device]) {
    assert_eq!(grads.len(), devices.len(), "one set of gradients per device");
    let collective = devices.iter().all(dno_model::device::has_collective);
    let mut reduce = Reduce { grads, devices, collective, pending: devices.iter().map(|_| None).collect() };
    model.visit(&mut reduce);
    // One wait per device covers every collective queued on it before.
    for wait in reduce.pending.into_iter().flatten() {
        wait();
    }
}

struct Reduce<'a> {
    grads: &'a mut [GradientsParams],
    devices: &'a [Device],
    collective: bool,
    /// A wait for the last collective queued on each device, run at the end.
    pending: Vec<Option<Box<dyn FnOnce()>>>,
}

impl ModuleVisitor for Reduce<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let local: Vec<Option<Tensor<D>>> = self.grads.iter_mut().map(|g| g.remove::<D>(param.id)).collect();
        let Some(dtype) = local.iter().flatten().next().map(Tensor::dtype) else { return };
        let shape = param.val().shape();
        let local: Vec<Tensor<D>> = local
            .into_iter()
            .zip(self.devices)
            .map(|(g, d)| g.unwrap_or_else(|| Tensor::zeros(shape.clone(), (d, dtype))))
            .collect();
        let summed: Vec<Tensor<D>> = if self.collective {
            local
                .into_iter()
                .enumerate()
                .map(|(k, g)| {
                    let c = all_reduce(g, ReduceOperation::Sum, self.devices.to_vec());
                    // SAFETY: the sums are read only after `all_reduce_gradients` has waited for
                    // every device's collectives (the `pending` handles, the last on each device).
                    let t = unsafe { c.clone().assume_resolved() };
                    self.pending[k] = Some(Box::new(move || drop(c.resolve())));
                    t
                })
                .collect()
        } else {
            let first = &self.devices[0];
            let mut it = local.into_iter();
            let mut sum = it.next().expect("at least one device");
            for g in it {
                sum = sum + g.to_device(first);
            }
            self.devices.iter().map(|d| if d == first { sum.clone() } else { sum.clone().to_device(d) }).collect()
        };
        for (g, t) in self.grads.iter_mut().zip(summed) {
            g.register::<D>(param.id, t);
        }
    }
}

/// `ids` cut into at most `n` contiguous, non-empty parts whose sizes differ by at most one.
pub fn split_even(ids: &[usize], n: usize) -> Vec<&[usize]> {
    let n = n.clamp(1, ids.len().max(1));
    let (base, extra) = (ids.len() / n, ids.len() % n);
    let mut parts = Vec::with_capacity(n);
    let mut start = 0;
    for k in 0..n {
        let len = base + usize::from(k < extra);
        parts.push(&ids[start..start + len]);
        start += len;
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_even_balances_and_keeps_order() {
        let ids: Vec<usize> = (0..7).collect();
        let parts = split_even(&ids, 3);
        assert_eq!(parts, vec![&ids[0..3], &ids[3..5], &ids[5..7]]);
        assert_eq!(split_even(&ids[..2], 4).len(), 2);
        assert_eq!(split_even(&ids, 1), vec![&ids[..]]);
    }

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    /// Without a collective (the CPU here) the sum goes through the first device; a device
    /// that had no examples (no gradients) counts as zeros, and a parameter without gradients
    /// anywhere (frozen) stays absent.
    #[test]
    fn all_reduce_sums_gradients_across_devices() {
        use burn::tensor::TensorData;
        let dev = Device::flex();
        let t2 = |v: Vec<f32>| Tensor::<2>::from_data(TensorData::new(v, [2, 2]), &dev);
        let t1 = |v: Vec<f32>| Tensor::<1>::from_data(TensorData::new(v, [2]), &dev);
        let layer = dno_model::model::Linear::new(t2(vec![0.0; 4]), Some(t1(vec![0.0; 2])));
        let (w, b) = (layer.weight.id, layer.bias.as_ref().unwrap().id);
        let devices = vec![dev.clone(), dev.clone(), dev.clone()];
        let mut grads: Vec<GradientsParams> = (0..3).map(|_| GradientsParams::new()).collect();
        grads[0].register::<2>(w, t2(vec![1.0, 2.0, 3.0, 4.0]));
        grads[1].register::<2>(w, t2(vec![10.0, 20.0, 30.0, 40.0]));
        // grads[2]: an idle device.
        all_reduce_gradients(&layer, &mut grads, &devices);
        for g in &mut grads {
            assert_eq!(values(g.remove::<2>(w).unwrap()), vec![11.0, 22.0, 33.0, 44.0]);
            assert!(g.remove::<1>(b).is_none(), "no device had a bias gradient");
        }
        assert!(!ShardPlan { devices: devices.clone() }.replicated(), "shards on one CPU share one policy");
        assert!(!ShardPlan { devices: vec![dev.clone()] }.replicated());
    }
}
