//! `Dtype`: the floating-point precision a model is loaded, run, trained and exported in
//! (`--dtype f32|bf16|f16` on `dno sample`, `train` and `export`).
//!
//! burn 0.22 types tensors at run time: every float tensor carries a `DType`, set when it is
//! created (`Tensor::from_data(data, (&device, DType::BF16))`, else the device's default, f32)
//! and changed only by `Tensor::cast`. burn-flex (the CPU backend) has bf16 and f16 kernels
//! (element-wise ops widen each element to f32 and narrow the result; matmuls convert through
//! f32), so the reduced-precision path runs on the CPU. Its binary ops assume both operands share
//! a dtype and do not check it in release builds, so the model keeps every tensor it builds (RoPE
//! tables, masks, caches) in its compute dtype ([`crate::model::Llama::compute_dtype`]).

use anyhow::{bail, Result};
use burn::tensor::{DType, FloatDType};
use std::fmt;
use std::str::FromStr;

use crate::device::DeviceSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    F32,
    Bf16,
    F16,
}

impl Dtype {
    /// The default for a device: bf16 on CUDA (tensor cores, half the memory), f32 elsewhere
    /// (the CPU backend computes bf16 by widening to f32, so training is slower there; wgpu
    /// devices often store bf16 without arithmetic on it). On a CPU with AVX512-BF16, `dno sample
    /// --dtype bf16` is the faster choice ([`crate::model::Llama::for_cpu_decoding`]); it stays
    /// opt-in so that the default samples do not depend on the CPU's features.
    pub fn default_for(device: &DeviceSpec) -> Dtype {
        match device {
            DeviceSpec::Cuda(_) => Dtype::Bf16,
            DeviceSpec::Cpu | DeviceSpec::Wgpu(_) | DeviceSpec::WgpuCpu => Dtype::F32,
        }
    }

    /// `--dtype` when given, else [`Dtype::default_for`] the device.
    pub fn resolve(flag: Option<&str>, device: &DeviceSpec) -> Result<Dtype> {
        match flag {
            Some(s) => s.parse(),
            None => Ok(Dtype::default_for(device)),
        }
    }

    pub fn burn(self) -> DType {
        match self {
            Dtype::F32 => DType::F32,
            Dtype::Bf16 => DType::BF16,
            Dtype::F16 => DType::F16,
        }
    }

    pub fn float(self) -> FloatDType {
        match self {
            Dtype::F32 => FloatDType::F32,
            Dtype::Bf16 => FloatDType::BF16,
            Dtype::F16 => FloatDType::F16,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::Bf16 | Dtype::F16 => 2,
        }
    }

    /// `config.json`'s `torch_dtype`.
    pub fn torch_name(self) -> &'static str {
        match self {
            Dtype::F32 => "float32",
            Dtype::Bf16 => "bfloat16",
            Dtype::F16 => "float16",
        }
    }

    pub fn safetensors(self) -> safetensors::Dtype {
        match self {
            Dtype::F32 => safetensors::Dtype::F32,
            Dtype::Bf16 => safetensors::Dtype::BF16,
            Dtype::F16 => safetensors::Dtype::F16,
        }
    }

    /// The `Dtype` of a burn float dtype, if it is one of ours.
    pub fn of(dtype: DType) -> Option<Dtype> {
        match dtype {
            DType::F32 => Some(Dtype::F32),
            DType::BF16 => Some(Dtype::Bf16),
            DType::F16 => Some(Dtype::F16),
            _ => None,
        }
    }
}

impl FromStr for Dtype {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "float32" | "fp32" => Ok(Dtype::F32),
            "bf16" | "bfloat16" => Ok(Dtype::Bf16),
            "f16" | "float16" | "fp16" => Ok(Dtype::F16),
            other => bail!("invalid dtype {other:?}: expected f32, bf16 or f16"),
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dtype::F32 => "f32",
            Dtype::Bf16 => "bf16",
            Dtype::F16 => "f16",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_defaults() {
        assert_eq!("bf16".parse::<Dtype>().unwrap(), Dtype::Bf16);
        assert_eq!("float16".parse::<Dtype>().unwrap(), Dtype::F16);
        assert!("f8".parse::<Dtype>().is_err());
        assert_eq!(Dtype::default_for(&DeviceSpec::Cpu), Dtype::F32);
        assert_eq!(Dtype::default_for(&DeviceSpec::Cuda(0)), Dtype::Bf16);
        assert_eq!(Dtype::resolve(Some("f16"), &DeviceSpec::Cpu).unwrap(), Dtype::F16);
        assert_eq!(Dtype::Bf16.to_string(), "bf16");
    }
}
