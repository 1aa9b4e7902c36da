//! Data parallelism: a batch is split by pair into shards that run forward (+ backward) at the
//! same time, each on its own fork of the model (same parameter ids, its own autodiff graph),
//! and the shards' gradients are summed on the training device. This is the pattern of
//! burn-train's multi-device step (fork per device, `GradientsParams::to_device`,
//! `GradientsAccumulator`), used here without burn-train's `Learner`.
//!
//! * On the CPU there is one shard per core on the same device: burn's CPU backend runs
//!   element-wise ops on the calling thread and only matmuls on all cores, so one shard at a
//!   time left a core idle for much of each step (DPO on SmolLM2: 61 -> 100 tokens/s on 2 cores).
//! * With several devices (`dno train --devices cuda:0,cuda:1`) shard k runs on device k. The
//!   policy is forked to every device at every micro-batch (one weight copy per device and step),
//!   which suits models that fit on one GPU.

use burn::tensor::Device;
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

    /// `model` (plain) on every shard's device: clones share weights on the same device.
    pub fn replicas(&self, model: &Llama, main: &Device) -> Vec<Llama> {
        use burn::module::Module;
        self.devices.iter().map(|d| if d == main { model.clone() } else { model.clone().fork(d) }).collect()
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
}
