//! `DeviceSpec`: "cpu" | "cuda" | "cuda:N" | "wgpu" | "wgpu:N" | "wgpu:cpu" -> a burn `Device`
//! (never `Device::default()`).

use anyhow::{bail, Result};
use burn::tensor::Device;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// burn's pure-Rust `flex` CPU backend.
    Cpu,
    /// CUDA device index (needs the `cuda` cargo feature).
    Cuda(usize),
    /// burn's wgpu backend (needs the `wgpu` cargo feature): `None` is wgpu's default adapter
    /// (any kind, software Vulkan included; `CUBECL_WGPU_DEFAULT_DEVICE` overrides it), `Some(N)`
    /// the N-th discrete GPU.
    Wgpu(Option<usize>),
    /// wgpu's CPU adapter (a software driver such as Mesa's lavapipe): a second wgpu device beside
    /// `wgpu` on a machine whose only adapter is that driver, which is how the device suite runs
    /// multi-device training without a GPU.
    WgpuCpu,
}

impl FromStr for DeviceSpec {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        match s {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            "wgpu" => Ok(DeviceSpec::Wgpu(None)),
            "wgpu:cpu" => Ok(DeviceSpec::WgpuCpu),
            _ => {
                let index = |n: &str| n.parse::<usize>().ok();
                if let Some(i) = s.strip_prefix("cuda:").and_then(index) {
                    Ok(DeviceSpec::Cuda(i))
                } else if let Some(i) = s.strip_prefix("wgpu:").and_then(index) {
                    Ok(DeviceSpec::Wgpu(Some(i)))
                } else {
                    bail!("invalid device {s:?}: expected cpu, cuda, cuda:N, wgpu, wgpu:N or wgpu:cpu")
                }
            }
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(i) => write!(f, "cuda:{i}"),
            DeviceSpec::Wgpu(None) => write!(f, "wgpu"),
            DeviceSpec::Wgpu(Some(i)) => write!(f, "wgpu:{i}"),
            DeviceSpec::WgpuCpu => write!(f, "wgpu:cpu"),
        }
    }
}

impl DeviceSpec {
    /// The inference device. For training use `.device()?.autodiff()`.
    pub fn device(&self) -> Result<Device> {
        match self {
            DeviceSpec::Cpu => {
                tune_allocator();
                Ok(Device::flex())
            }
            #[cfg(feature = "cuda")]
            DeviceSpec::Cuda(i) => Ok(Device::cuda(*i)),
            #[cfg(not(feature = "cuda"))]
            DeviceSpec::Cuda(i) => {
                bail!("device cuda:{i} requested but dno was built without the `cuda` feature")
            }
            #[cfg(feature = "wgpu")]
            DeviceSpec::Wgpu(kind) => {
                use burn::tensor::DeviceKind;
                Ok(Device::wgpu(kind.map_or(DeviceKind::DefaultDevice, DeviceKind::DiscreteGpu)))
            }
            #[cfg(feature = "wgpu")]
            DeviceSpec::WgpuCpu => Ok(Device::wgpu(burn::tensor::DeviceKind::Cpu)),
            #[cfg(not(feature = "wgpu"))]
            DeviceSpec::Wgpu(_) | DeviceSpec::WgpuCpu => bail!("device {self} requested but dno was built without the `wgpu` feature"),
        }
    }
}

/// Whether `device` is the plain CPU device: burn-flex without autodiff, where tensors are host
/// memory that dno's own kernels may read and write (`Device`'s `==` ignores autodiff).
pub fn is_plain_cpu(device: &Device) -> bool {
    *device == Device::flex() && !device.is_autodiff()
}

/// Whether burn has a collective (`burn::tensor::distributed::all_reduce`) on `device`: CUDA only
/// in burn 0.22 (NCCL through cudarc, one node); its other backends (flex, wgpu) have none.
pub fn has_collective(device: &Device) -> bool {
    #[cfg(feature = "cuda")]
    {
        let plain = device.clone().inner();
        (0..MAX_CUDA_DEVICES).any(|i| Device::cuda(i) == plain)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = device;
        false
    }
}

/// The CUDA device indices [`has_collective`] recognises (a node's GPUs).
#[cfg(feature = "cuda")]
const MAX_CUDA_DEVICES: usize = 64;

/// How many data-parallel shards a batch is split into on `device` (a plain or autodiff device):
/// one per rayon thread (at most [`MAX_CPU_SHARDS`]) on the CPU, where burn's backend runs element-wise ops on the calling
/// thread and only matmuls on all cores, so shards run side by side keep every core busy; 1 on
/// a GPU, which parallelises inside each op.
pub fn data_parallel_shards(device: &Device) -> usize {
    let plain = device.clone().inner();
    if plain == Device::flex() {
        // Each shard holds a full set of gradients until they are summed; past a few shards the
        // matmuls inside each shard use the remaining cores anyway.
        rayon::current_num_threads().min(MAX_CPU_SHARDS)
    } else {
        1
    }
}

/// Upper bound of the default CPU shard count (`dno train --shards` overrides it).
pub const MAX_CPU_SHARDS: usize = 4;

/// Keeps freed tensor buffers inside the process. burn's CPU backend allocates a fresh buffer for
/// almost every op; with glibc's defaults each buffer over the (adaptive) mmap threshold is mapped
/// and unmapped every time, so every op paid page faults and page zeroing. Raising the threshold to
/// glibc's maximum (32 MiB) and never trimming the heap made the SmolLM2 reference pass ~30%
/// faster (`bench_train`, 19.6 s -> 14.1 s). No-op outside Linux/glibc; runs once.
pub fn tune_allocator() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes allocator tunables; it is safe to call at any time.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
            libc::mallopt(libc::M_TOP_PAD, 64 << 20);
        }
    });
}

/// Makes the process allocate from one malloc arena instead of glibc's default of up to 8 per
/// core; `dno train` calls it first thing, before any thread allocates. Each training shard thread
/// otherwise frees its activations into an arena of its own, where the holes stay resident and
/// other threads' allocations cannot reuse them. Measured (`bench_train --steps 3 --batch 8
/// --seq-len 120 --dtype bf16 --gradient-checkpointing`, 2 cores, 2 shards, interleaved runs):
/// peak RSS 2740-2767 MiB with one arena vs 2847-2895 MiB by default, at the same tokens/s (108.4
/// vs 108.9). Sampling keeps the default: with one arena it ran 6% slower. No-op outside
/// Linux/glibc.
pub fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tunables; it is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_specs() {
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        assert!("gpu".parse::<DeviceSpec>().is_err());
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
        assert_eq!(DeviceSpec::Cuda(2).to_string(), "cuda:2");
        assert_eq!("wgpu:cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::WgpuCpu);
        assert_eq!(DeviceSpec::WgpuCpu.to_string(), "wgpu:cpu");
        assert!(DeviceSpec::Cpu.device().is_ok());
        // burn 0.22's collective is CUDA's: the CPU has none, plain or autodiff.
        assert!(!has_collective(&Device::flex()));
        assert!(!has_collective(&Device::flex().autodiff()));
    }
}
