//! Phi-3's fused projections. Its checkpoints store q, k and v as one `self_attn.qkv_proj`
//! (rows: the q heads, then the k heads, then the v heads) and the MLP's gate and up as one
//! `mlp.gate_up_proj` (gate rows, then up rows). [`FusedSource`] splits them while loading, so
//! the model keeps its separate projections; [`fuse_for_export`] concatenates them back, so the
//! exported directory has the layout transformers' `Phi3ForCausalLM` loads.

use anyhow::{bail, Result};

use crate::config::LlamaConfig;
use crate::model::WeightSource;

/// A weight source that serves `q_proj` / `k_proj` / `v_proj` / `gate_proj` / `up_proj` as row
/// ranges of the fused tensors of `inner`.
pub struct FusedSource<'a> {
    inner: &'a mut dyn WeightSource,
    q_rows: usize,
    kv_rows: usize,
    /// The last fused tensor read: (name, shape, data); each is asked for two or three times in a row.
    last: Option<(String, Vec<usize>, Vec<f32>)>,
}

impl<'a> FusedSource<'a> {
    pub fn new(inner: &'a mut dyn WeightSource, cfg: &LlamaConfig) -> Self {
        let hd = cfg.head_dim();
        FusedSource { inner, q_rows: cfg.num_attention_heads * hd, kv_rows: cfg.n_kv_heads() * hd, last: None }
    }

    /// Rows `start..start + n` of the fused tensor `name`.
    fn rows(&mut self, name: &str, start: usize, n: usize, parts: &[usize]) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
        if self.last.as_ref().map(|l| l.0.as_str()) != Some(name) {
            let Some((shape, data)) = self.inner.tensor(name)? else { return Ok(None) };
            let total: usize = parts.iter().sum();
            if shape.is_empty() || shape[0] != total {
                bail!("tensor {name} in {} has shape {shape:?}, expected {total} rows ({parts:?})", self.inner.origin());
            }
            self.last = Some((name.to_string(), shape, data));
        }
        let (_, shape, data) = self.last.as_ref().expect("just set");
        let width: usize = shape[1..].iter().product();
        let mut out_shape = shape.clone();
        out_shape[0] = n;
        Ok(Some((out_shape, data[start * width..(start + n) * width].to_vec())))
    }
}

/// `model.layers.N.self_attn.q_proj.weight` -> (`model.layers.N.self_attn`, `q_proj`, `weight`).
fn split_name(name: &str) -> Option<(&str, &str, &str)> {
    let (rest, kind) = name.rsplit_once('.')?;
    let (module, proj) = rest.rsplit_once('.')?;
    Some((module, proj, kind))
}

impl WeightSource for FusedSource<'_> {
    fn tensor(&mut self, name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
        let Some((module, proj, kind)) = split_name(name) else { return self.inner.tensor(name) };
        let (q, kv) = (self.q_rows, self.kv_rows);
        match proj {
            "q_proj" | "k_proj" | "v_proj" if module.ends_with(".self_attn") => {
                let start = match proj {
                    "q_proj" => 0,
                    "k_proj" => q,
                    _ => q + kv,
                };
                let n = if proj == "q_proj" { q } else { kv };
                self.rows(&format!("{module}.qkv_proj.{kind}"), start, n, &[q, kv, kv])
            }
            "gate_proj" | "up_proj" if module.ends_with(".mlp") => {
                let fused = format!("{module}.gate_up_proj.{kind}");
                // The intermediate size is half the fused rows.
                let half = match self.last.as_ref().filter(|l| l.0 == fused) {
                    Some(l) => l.1[0] / 2,
                    None => {
                        let Some((shape, data)) = self.inner.tensor(&fused)? else { return Ok(None) };
                        let half = shape.first().copied().unwrap_or(0) / 2;
                        self.last = Some((fused.clone(), shape, data));
                        half
                    }
                };
                let start = if proj == "gate_proj" { 0 } else { half };
                self.rows(&fused, start, half, &[half, half])
            }
            _ => self.inner.tensor(name),
        }
    }

    fn origin(&self) -> String {
        self.inner.origin()
    }
}

/// A tensor to export: HF name, shape, raw little-endian bytes (any one dtype).
pub struct Named {
    pub name: String,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

/// Concatenates each layer's `q_proj`, `k_proj`, `v_proj` into `qkv_proj` and `gate_proj`,
/// `up_proj` into `gate_up_proj` (weights and biases), in the order the tensors come.
pub fn fuse_for_export(tensors: Vec<Named>) -> Result<Vec<Named>> {
    let groups: [(&str, &[&str], &str); 2] =
        [(".self_attn.", &["q_proj", "k_proj", "v_proj"], "qkv_proj"), (".mlp.", &["gate_proj", "up_proj"], "gate_up_proj")];
    let mut out: Vec<Named> = Vec::with_capacity(tensors.len());
    let mut pending: Vec<Named> = Vec::new();
    for t in tensors {
        let Some((module, proj, kind)) = split_name(&t.name) else {
            out.push(t);
            continue;
        };
        let Some(&(_, parts, fused)) = groups.iter().find(|(m, parts, _)| format!("{module}.").contains(m) && parts.contains(&proj)) else {
            out.push(t);
            continue;
        };
        let _ = kind;
        pending.push(t);
        // A group is complete when every part of this module and kind has arrived.
        let key = |n: &Named| split_name(&n.name).map(|(m, _, k)| (m.to_string(), k.to_string()));
        let this = key(pending.last().expect("pushed"));
        let members: Vec<usize> = (0..pending.len()).filter(|&i| key(&pending[i]) == this).collect();
        if members.len() < parts.len() {
            continue;
        }
        let mut group: Vec<Named> = Vec::new();
        for &i in members.iter().rev() {
            group.push(pending.remove(i));
        }
        group.sort_by_key(|n| parts.iter().position(|p| split_name(&n.name).map(|x| x.1) == Some(*p)));
        let width = &group[0].shape[1..];
        if group.iter().any(|g| &g.shape[1..] != width) {
            bail!("cannot fuse {}: shapes differ", group[0].name);
        }
        let (m, k) = this.expect("split");
        let rows: usize = group.iter().map(|g| g.shape[0]).sum();
        let mut shape = group[0].shape.clone();
        shape[0] = rows;
        let bytes = group.into_iter().flat_map(|g| g.bytes).collect();
        out.push(Named { name: format!("{m}.{fused}.{k}"), shape, bytes });
    }
    if let Some(p) = pending.first() {
        bail!("cannot fuse {}: the other projections of its group are missing", p.name);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Map(Vec<(String, Vec<usize>, Vec<f32>)>);

    impl WeightSource for Map {
        fn tensor(&mut self, name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
            Ok(self.0.iter().find(|t| t.0 == name).map(|t| (t.1.clone(), t.2.clone())))
        }
        fn origin(&self) -> String {
            "test".into()
        }
    }

    #[test]
    fn split_and_fuse_round_trip() {
        let cfg: LlamaConfig = serde_json::from_value(serde_json::json!({
            "architectures": ["Phi3ForCausalLM"], "vocab_size": 8, "hidden_size": 4, "intermediate_size": 3,
            "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1}))
        .unwrap();
        // head_dim 2: q 4 rows, k 2, v 2; each row of width 4 holds its row index.
        let qkv: Vec<f32> = (0..8).flat_map(|r| [r as f32; 4]).collect();
        let gu: Vec<f32> = (0..6).flat_map(|r| [10.0 + r as f32; 4]).collect();
        let mut src = Map(vec![
            ("model.layers.0.self_attn.qkv_proj.weight".into(), vec![8, 4], qkv.clone()),
            ("model.layers.0.mlp.gate_up_proj.weight".into(), vec![6, 4], gu.clone()),
        ]);
        let mut f = FusedSource::new(&mut src, &cfg);
        let get = |f: &mut FusedSource, n: &str| f.tensor(&format!("model.layers.0.{n}.weight")).unwrap().unwrap();
        let k = get(&mut f, "self_attn.k_proj");
        assert_eq!(k.0, vec![2, 4]);
        assert_eq!(k.1[0], 4.0);
        assert_eq!(get(&mut f, "self_attn.v_proj").1[4], 7.0);
        assert_eq!(get(&mut f, "mlp.up_proj").1[0], 13.0);
        let parts: Vec<Named> = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj", "mlp.up_proj"]
            .iter()
            .map(|n| {
                let (shape, data) = get(&mut f, n);
                Named { name: format!("model.layers.0.{n}.weight"), shape, bytes: data.iter().flat_map(|x| x.to_le_bytes()).collect() }
            })
            .collect();
        let fused = fuse_for_export(parts).unwrap();
        assert_eq!(fused.len(), 2);
        assert_eq!(fused[0].name, "model.layers.0.self_attn.qkv_proj.weight");
        assert_eq!(fused[0].shape, vec![8, 4]);
        assert_eq!(fused[0].bytes, qkv.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>());
        assert_eq!(fused[1].name, "model.layers.0.mlp.gate_up_proj.weight");
        assert_eq!(fused[1].bytes, gu.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>());
    }
}
