//! The README's "largest model trainable per GPU memory size" table, from `dno_train::memory`
//! (the estimate `dno train --dry-run` prints, checked against CPU peak RSS by
//! scripts/check_memory_model.sh and scripts/bench_precision.sh).
//!
//! ```text
//! cargo run --release --workspace --example memory_table -- [--rows 8] [--width 1024] [--lora-rank 16]
//! ```
//!
//! One device (1 shard), bf16 with f32 master weights and moments, gradient checkpointing on, the
//! chunked head; micro-batches of `rows` packed pair rows `width` tokens wide. Architectures are
//! the public config.json values of each model.

use anyhow::{bail, Context, Result};
use dno_model::{Dtype, LlamaConfig};
use dno_train::memory::{estimate, Workload};
use dno_train::{LoraConfig, TrainConfig};

#[allow(clippy::too_many_arguments)]
fn config(arch: &str, vocab: usize, d: usize, f: usize, layers: usize, heads: usize, kv: usize, tied: bool) -> LlamaConfig {
    serde_json::from_value(serde_json::json!({
        "architectures": [arch], "vocab_size": vocab, "hidden_size": d, "intermediate_size": f,
        "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv,
        "rms_norm_eps": 1e-6, "rope_theta": 1e6, "tie_word_embeddings": tied, "max_position_embeddings": 32768
    }))
    .expect("a valid config")
}

fn main() -> Result<()> {
    let (mut rows, mut width, mut rank) = (8usize, 1024usize, 16usize);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--rows" => rows = val()?.parse()?,
            "--width" => width = val()?.parse()?,
            "--lora-rank" => rank = val()?.parse()?,
            other => bail!("unknown argument {other}"),
        }
    }
    let q = "Qwen2ForCausalLM";
    let l = "LlamaForCausalLM";
    let models = [
        ("Qwen2.5-0.5B", config(q, 151936, 896, 4864, 24, 14, 2, true)),
        ("Qwen2.5-1.5B", config(q, 151936, 1536, 8960, 28, 12, 2, true)),
        ("Qwen2.5-3B", config(q, 151936, 2048, 11008, 36, 16, 2, true)),
        ("Qwen2.5-7B", config(q, 152064, 3584, 18944, 28, 28, 4, false)),
        ("Llama-3.1-8B", config(l, 128256, 4096, 14336, 32, 32, 8, false)),
        ("Qwen2.5-14B", config(q, 152064, 5120, 13824, 48, 40, 8, false)),
        ("Qwen2.5-32B", config(q, 152064, 5120, 27648, 64, 40, 8, false)),
        ("Llama-3.1-70B", config(l, 128256, 8192, 28672, 80, 64, 8, false)),
    ];
    let w = Workload { rows, width, shards: 1, gradient_checkpointing: true, dtype: Dtype::Bf16 };
    let full = TrainConfig::default();
    let lora = TrainConfig {
        lora: Some(LoraConfig { rank, alpha: 2.0 * rank as f64, targets: dno_model::lora::LORA_TARGETS.iter().map(|s| s.to_string()).collect() }),
        ..TrainConfig::default()
    };
    let gb = |b: u64| b as f64 / 1e9;
    println!("bf16 + f32 master weights/moments, gradient checkpointing, 1 device, {rows} rows x {width} tokens per micro-batch");
    println!();
    println!("| model | parameters | full fine-tune GB (weights + grads + AdamW + activations) | LoRA r={rank} GB |");
    println!("|---|---|---|---|");
    let mut rows_out = Vec::new();
    for (name, cfg) in &models {
        let (all, _) = dno_train::memory::parameter_counts(cfg, &full);
        let (f, lo) = (estimate(cfg, &full, &w), estimate(cfg, &lora, &w));
        println!(
            "| {name} | {:.2}B | {:.1} ({:.1} + {:.1} + {:.1} + {:.1}) | {:.1} |",
            all as f64 / 1e9,
            gb(f.total()),
            gb(f.weights),
            gb(f.gradients),
            gb(f.optimizer),
            gb(f.activations),
            gb(lo.total())
        );
        rows_out.push((name, f.total(), lo.total()));
    }
    println!();
    println!("| GPU memory | largest full fine-tune | largest LoRA r={rank} |");
    println!("|---|---|---|");
    for cap in [24u64, 80, 140] {
        // 10% headroom for the CUDA context, allocator fragmentation and the reference pass.
        let fits = |b: u64| (b as f64) * 1.1 <= cap as f64 * 1e9;
        let best = |pick: fn(&(&&str, u64, u64)) -> u64| rows_out.iter().filter(|r| fits(pick(r))).next_back().map(|r| r.0.to_string()).unwrap_or("none listed".into());
        println!("| {cap} GB | {} | {} |", best(|r| r.1), best(|r| r.2));
    }
    Ok(())
}
