//! Test fixtures built in Rust: a tiny random Llama/Qwen2 model written as an HF directory or a
//! GGUF file, with a byte-level tokenizer, and a naive f64 reference forward pass.
#![allow(dead_code)]

use dno_model::generate::Rng;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;

pub struct Tiny {
    pub cfg: serde_json::Value,
    /// HF names -> (shape, data) in PyTorch layout.
    pub weights: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    pub vocab: usize,
    pub d: usize,
    pub ff: usize,
    pub layers: usize,
    pub nh: usize,
    pub nkv: usize,
    pub qwen2: bool,
    pub tied: bool,
}

pub const SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
pub const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// GPT-2 byte -> printable char mapping.
pub fn byte_chars() -> Vec<char> {
    let mut keep: Vec<u32> = (33..=126).chain(161..=172).chain(174..=255).collect();
    let mut map = vec!['\0'; 256];
    let mut extra = 0;
    for b in 0..256u32 {
        if keep.contains(&b) {
            map[b as usize] = char::from_u32(b).unwrap();
        } else {
            map[b as usize] = char::from_u32(256 + extra).unwrap();
            extra += 1;
        }
    }
    keep.clear();
    map
}

/// Vocabulary: 256 byte tokens, two merges ("h"+"e", "he"+"l") and 3 specials.
pub fn vocab_tokens() -> (Vec<String>, Vec<String>) {
    let mut toks: Vec<String> = byte_chars().into_iter().map(|c| c.to_string()).collect();
    toks.push("he".into());
    toks.push("hel".into());
    for s in SPECIALS {
        toks.push(s.into());
    }
    (toks, vec!["h e".into(), "he l".into()])
}

pub fn tokenizer_json() -> serde_json::Value {
    let (toks, merges) = vocab_tokens();
    let vocab: serde_json::Map<String, serde_json::Value> =
        toks.iter().enumerate().map(|(i, t)| (t.clone(), json!(i))).collect();
    let added: Vec<_> = SPECIALS
        .iter()
        .map(|s| json!({"id": toks.iter().position(|t| t == s).unwrap(), "content": s, "single_word": false,
            "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
        .collect();
    json!({"version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges}})
}

impl Tiny {
    pub fn new(qwen2: bool, tied: bool, seed: u64) -> Tiny {
        let vocab = vocab_tokens().0.len();
        let (d, ff, layers, nh, nkv) = (32, 48, 2, 4, 2);
        let hd = d / nh;
        let mut rng = Rng::new(seed);
        let mut w = BTreeMap::new();
        let mut rand = |shape: Vec<usize>, scale: f32| {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n).map(|_| (rng.next_f32() * 2.0 - 1.0) * scale).collect();
            (shape, v)
        };
        w.insert("model.embed_tokens.weight".to_string(), rand(vec![vocab, d], 1.0));
        for l in 0..layers {
            let p = format!("model.layers.{l}");
            let (s, mut v) = rand(vec![d], 0.2);
            v.iter_mut().for_each(|x| *x += 1.0);
            w.insert(format!("{p}.input_layernorm.weight"), (s, v));
            let (s, mut v) = rand(vec![d], 0.2);
            v.iter_mut().for_each(|x| *x += 1.0);
            w.insert(format!("{p}.post_attention_layernorm.weight"), (s, v));
            w.insert(format!("{p}.self_attn.q_proj.weight"), rand(vec![nh * hd, d], 0.3));
            w.insert(format!("{p}.self_attn.k_proj.weight"), rand(vec![nkv * hd, d], 0.3));
            w.insert(format!("{p}.self_attn.v_proj.weight"), rand(vec![nkv * hd, d], 0.3));
            w.insert(format!("{p}.self_attn.o_proj.weight"), rand(vec![d, nh * hd], 0.3));
            if qwen2 {
                w.insert(format!("{p}.self_attn.q_proj.bias"), rand(vec![nh * hd], 0.3));
                w.insert(format!("{p}.self_attn.k_proj.bias"), rand(vec![nkv * hd], 0.3));
                w.insert(format!("{p}.self_attn.v_proj.bias"), rand(vec![nkv * hd], 0.3));
            }
            w.insert(format!("{p}.mlp.gate_proj.weight"), rand(vec![ff, d], 0.3));
            w.insert(format!("{p}.mlp.up_proj.weight"), rand(vec![ff, d], 0.3));
            w.insert(format!("{p}.mlp.down_proj.weight"), rand(vec![d, ff], 0.3));
        }
        let (s, mut v) = rand(vec![d], 0.2);
        v.iter_mut().for_each(|x| *x += 1.0);
        w.insert("model.norm.weight".into(), (s, v));
        if !tied {
            w.insert("lm_head.weight".into(), rand(vec![vocab, d], 0.5));
        }
        let eos = vocab - 1; // <|im_end|>
        let cfg = json!({
            "architectures": [if qwen2 {"Qwen2ForCausalLM"} else {"LlamaForCausalLM"}],
            "model_type": if qwen2 {"qwen2"} else {"llama"},
            "vocab_size": vocab, "hidden_size": d, "intermediate_size": ff,
            "num_hidden_layers": layers, "num_attention_heads": nh, "num_key_value_heads": nkv,
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": tied,
            "max_position_embeddings": 512, "hidden_act": "silu", "eos_token_id": eos,
        });
        Tiny { cfg, weights: w, vocab, d, ff, layers, nh, nkv, qwen2, tied }
    }

    /// The same model with every 2-D weight replaced by its Q8_0 round trip (as `write_gguf(q8)`).
    pub fn q8_roundtrip(&self) -> Tiny {
        let mut t = Tiny { cfg: self.cfg.clone(), weights: self.weights.clone(), ..*self };
        for (shape, data) in t.weights.values_mut() {
            if shape.len() != 2 {
                continue;
            }
            for blk in data.chunks_mut(32) {
                let amax = blk.iter().fold(0f32, |m, x| m.max(x.abs()));
                let dsc = amax / 127.0;
                let inv = if dsc > 0.0 { 1.0 / dsc } else { 0.0 };
                let d16 = half::f16::from_f32(dsc).to_f32();
                for x in blk.iter_mut() {
                    *x = ((*x * inv).round() as i8) as f32 * d16;
                }
            }
        }
        t
    }

    pub fn write_hf(&self, dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("config.json"), self.cfg.to_string()).unwrap();
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = self
            .weights
            .iter()
            .map(|(n, (s, v))| (n.clone(), s.clone(), v.iter().flat_map(|x| x.to_le_bytes()).collect()))
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
            .iter()
            .map(|(n, s, b)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
        std::fs::write(dir.join("tokenizer.json"), tokenizer_json().to_string()).unwrap();
        std::fs::write(
            dir.join("tokenizer_config.json"),
            json!({"eos_token": "<|im_end|>", "chat_template": CHATML}).to_string(),
        )
        .unwrap();
        std::fs::write(dir.join("generation_config.json"), json!({"eos_token_id": [self.vocab - 1]}).to_string()).unwrap();
    }

    /// Writes a GGUF file the way llama.cpp's converter would: Q/K rows permuted for `llama`,
    /// ggml dim order, F32 tensors (or Q8_0 for 2-D weights when `q8`).
    pub fn write_gguf(&self, path: &Path, q8: bool) {
        let arch = if self.qwen2 { "qwen2" } else { "llama" };
        let mut kv: Vec<(String, Vec<u8>)> = Vec::new();
        let s = |x: &str| -> Vec<u8> {
            let mut b = (x.len() as u64).to_le_bytes().to_vec();
            b.extend(x.as_bytes());
            b
        };
        let typed = |t: u32, v: Vec<u8>| -> Vec<u8> {
            let mut b = t.to_le_bytes().to_vec();
            b.extend(v);
            b
        };
        let u32v = |x: u32| typed(4, x.to_le_bytes().to_vec());
        let f32v = |x: f32| typed(6, x.to_le_bytes().to_vec());
        let strv = |x: &str| typed(8, s(x));
        let str_arr = |xs: &[String]| {
            let mut b = 8u32.to_le_bytes().to_vec();
            b.extend((xs.len() as u64).to_le_bytes());
            for x in xs {
                b.extend(s(x));
            }
            typed(9, b)
        };
        let i32_arr = |xs: &[i32]| {
            let mut b = 5u32.to_le_bytes().to_vec();
            b.extend((xs.len() as u64).to_le_bytes());
            for x in xs {
                b.extend(x.to_le_bytes());
            }
            typed(9, b)
        };
        let (toks, merges) = vocab_tokens();
        let types: Vec<i32> = toks.iter().map(|t| if SPECIALS.contains(&t.as_str()) { 3 } else { 1 }).collect();
        kv.push(("general.architecture".into(), strv(arch)));
        kv.push((format!("{arch}.block_count"), u32v(self.layers as u32)));
        kv.push((format!("{arch}.context_length"), u32v(512)));
        kv.push((format!("{arch}.embedding_length"), u32v(self.d as u32)));
        kv.push((format!("{arch}.feed_forward_length"), u32v(self.ff as u32)));
        kv.push((format!("{arch}.attention.head_count"), u32v(self.nh as u32)));
        kv.push((format!("{arch}.attention.head_count_kv"), u32v(self.nkv as u32)));
        kv.push((format!("{arch}.rope.freq_base"), f32v(10000.0)));
        kv.push((format!("{arch}.attention.layer_norm_rms_epsilon"), f32v(1e-5)));
        kv.push(("tokenizer.ggml.model".into(), strv("gpt2")));
        kv.push(("tokenizer.ggml.pre".into(), strv("gpt-2")));
        kv.push(("tokenizer.ggml.tokens".into(), str_arr(&toks)));
        kv.push(("tokenizer.ggml.merges".into(), str_arr(&merges)));
        kv.push(("tokenizer.ggml.token_type".into(), i32_arr(&types)));
        kv.push(("tokenizer.ggml.eos_token_id".into(), u32v(self.vocab as u32 - 1)));
        kv.push(("tokenizer.chat_template".into(), strv(CHATML)));

        let hd = self.d / self.nh;
        let mut tensors: Vec<(String, Vec<usize>, u32, Vec<u8>)> = Vec::new();
        for (name, (shape, data)) in &self.weights {
            let gname = dno_model::gguf::gguf_name(name, false).unwrap();
            let mut data = data.clone();
            let is_qk = name.contains("q_proj") || name.contains("k_proj");
            if !self.qwen2 && is_qk {
                let heads = if name.contains("q_proj") { self.nh } else { self.nkv };
                let cols = if shape.len() > 1 { shape[1] } else { 1 };
                let mut out = data.clone();
                for h in 0..heads {
                    for i in 0..2 {
                        for j in 0..hd / 2 {
                            let src = h * hd + i * hd / 2 + j;
                            let dst = h * hd + 2 * j + i;
                            out[dst * cols..(dst + 1) * cols].copy_from_slice(&data[src * cols..(src + 1) * cols]);
                        }
                    }
                }
                data = out;
            }
            let dims: Vec<usize> = shape.iter().rev().copied().collect();
            if q8 && shape.len() == 2 {
                let mut b = Vec::new();
                for blk in data.chunks(32) {
                    let amax = blk.iter().fold(0f32, |m, x| m.max(x.abs()));
                    let dsc = amax / 127.0;
                    let inv = if dsc > 0.0 { 1.0 / dsc } else { 0.0 };
                    b.extend(half::f16::from_f32(dsc).to_le_bytes());
                    b.extend(blk.iter().map(|x| (x * inv).round() as i8 as u8));
                }
                tensors.push((gname, dims, 8, b));
            } else {
                tensors.push((gname, dims, 0, data.iter().flat_map(|x| x.to_le_bytes()).collect()));
            }
        }
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend((tensors.len() as u64).to_le_bytes());
        out.extend((kv.len() as u64).to_le_bytes());
        for (k, v) in &kv {
            out.extend(s(k));
            out.extend(v);
        }
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for (_, _, _, b) in &tensors {
            offsets.push(offset);
            offset += (b.len() as u64).div_ceil(32) * 32;
        }
        for ((n, dims, ty, _), off) in tensors.iter().zip(&offsets) {
            out.extend(s(n));
            out.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend((*d as u64).to_le_bytes());
            }
            out.extend(ty.to_le_bytes());
            out.extend(off.to_le_bytes());
        }
        while out.len() % 32 != 0 {
            out.push(0);
        }
        for (_, _, _, b) in &tensors {
            out.extend(b);
            while out.len() % 32 != 0 {
                out.push(0);
            }
        }
        std::fs::write(path, out).unwrap();
    }

    /// Naive f64 forward of one sequence: logits [T][V].
    pub fn reference_logits(&self, tokens: &[u32]) -> Vec<Vec<f64>> {
        let w = |n: &str| -> &Vec<f32> { &self.weights[n].1 };
        let (d, nh, nkv) = (self.d, self.nh, self.nkv);
        let hd = d / nh;
        let t = tokens.len();
        let emb = w("model.embed_tokens.weight");
        let mut x: Vec<Vec<f64>> = tokens.iter().map(|&id| (0..d).map(|j| emb[id as usize * d + j] as f64).collect()).collect();
        let rms = |v: &[f64], g: &[f32]| -> Vec<f64> {
            let ms = v.iter().map(|a| a * a).sum::<f64>() / v.len() as f64;
            let inv = 1.0 / (ms + 1e-5).sqrt();
            v.iter().zip(g).map(|(a, &b)| a * inv * b as f64).collect()
        };
        // y = W x (+ b), W [out, in]
        let mv = |wt: &[f32], b: Option<&Vec<f32>>, v: &[f64], out: usize| -> Vec<f64> {
            (0..out)
                .map(|o| {
                    let s: f64 = (0..v.len()).map(|i| wt[o * v.len() + i] as f64 * v[i]).sum();
                    s + b.map(|b| b[o] as f64).unwrap_or(0.0)
                })
                .collect()
        };
        let rope = |v: &mut [f64], pos: usize| {
            for h in 0..v.len() / hd {
                for i in 0..hd / 2 {
                    let f = 1.0 / 10000f64.powf((2 * i) as f64 / hd as f64);
                    let (c, s) = ((pos as f64 * f).cos(), (pos as f64 * f).sin());
                    let (a, b) = (v[h * hd + i], v[h * hd + i + hd / 2]);
                    v[h * hd + i] = a * c - b * s;
                    v[h * hd + i + hd / 2] = b * c + a * s;
                }
            }
        };
        for l in 0..self.layers {
            let p = format!("model.layers.{l}");
            let bias = |n: &str| self.weights.get(&format!("{p}.self_attn.{n}.bias")).map(|x| &x.1);
            let h: Vec<Vec<f64>> = x.iter().map(|v| rms(v, w(&format!("{p}.input_layernorm.weight")))).collect();
            let mut q: Vec<Vec<f64>> = h.iter().map(|v| mv(w(&format!("{p}.self_attn.q_proj.weight")), bias("q_proj"), v, nh * hd)).collect();
            let mut k: Vec<Vec<f64>> = h.iter().map(|v| mv(w(&format!("{p}.self_attn.k_proj.weight")), bias("k_proj"), v, nkv * hd)).collect();
            let vv: Vec<Vec<f64>> = h.iter().map(|v| mv(w(&format!("{p}.self_attn.v_proj.weight")), bias("v_proj"), v, nkv * hd)).collect();
            for i in 0..t {
                rope(&mut q[i], i);
                rope(&mut k[i], i);
            }
            for i in 0..t {
                let mut att = vec![0f64; nh * hd];
                for hh in 0..nh {
                    let kvh = hh / (nh / nkv);
                    let scores: Vec<f64> = (0..=i)
                        .map(|j| (0..hd).map(|e| q[i][hh * hd + e] * k[j][kvh * hd + e]).sum::<f64>() / (hd as f64).sqrt())
                        .collect();
                    let m = scores.iter().cloned().fold(f64::MIN, f64::max);
                    let z: f64 = scores.iter().map(|s| (s - m).exp()).sum();
                    for (j, s) in scores.iter().enumerate() {
                        let pj = (s - m).exp() / z;
                        for e in 0..hd {
                            att[hh * hd + e] += pj * vv[j][kvh * hd + e];
                        }
                    }
                }
                let o = mv(w(&format!("{p}.self_attn.o_proj.weight")), None, &att, d);
                for e in 0..d {
                    x[i][e] += o[e];
                }
            }
            for i in 0..t {
                let h = rms(&x[i], w(&format!("{p}.post_attention_layernorm.weight")));
                let g = mv(w(&format!("{p}.mlp.gate_proj.weight")), None, &h, self.ff);
                let u = mv(w(&format!("{p}.mlp.up_proj.weight")), None, &h, self.ff);
                let a: Vec<f64> = g.iter().zip(&u).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect();
                let o = mv(w(&format!("{p}.mlp.down_proj.weight")), None, &a, d);
                for e in 0..d {
                    x[i][e] += o[e];
                }
            }
        }
        let head = if self.tied { w("model.embed_tokens.weight") } else { w("lm_head.weight") };
        x.iter()
            .map(|v| {
                let h = rms(v, w("model.norm.weight"));
                mv(head, None, &h, self.vocab)
            })
            .collect()
    }
}
