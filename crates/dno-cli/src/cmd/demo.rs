//! `dno demo init`: the embedded quickstart task. It writes a tiny random Llama-architecture
//! policy (HF format, a byte-level tokenizer, a one-line chat template) and a synthetic task with
//! verifiable answers: two-number addition. No downloads. The SFT demonstrations come from a
//! careless teacher who forgets the carry in 60% of them, so the SFT policy is imperfect in a way
//! the verifier's preferences can correct. `pipelines/quickstart.sh` then runs SFT and T DNO
//! iterations on it with the verifier oracle.

use anyhow::{bail, Context, Result};
use dno_data::{DatasetWriter, PromptRow, Provenance};
use serde::Serialize;
use serde_json::json;
use std::path::{Path, PathBuf};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Create the tiny policy and the arithmetic prompt sets in OUT.
    Init(InitArgs),
}

#[derive(clap::Args, Serialize)]
pub struct InitArgs {
    #[arg(long, short)]
    pub out: PathBuf,
    /// DNO iterations to make prompt partitions for (the paper uses non-overlapping partitions).
    #[arg(long, default_value_t = 3)]
    pub iterations: usize,
    /// Prompts per DNO iteration.
    #[arg(long, default_value_t = 256)]
    pub prompts_per_iteration: usize,
    /// SFT prompts (with references).
    #[arg(long, default_value_t = 1024)]
    pub sft_prompts: usize,
    /// Held-out eval prompts.
    #[arg(long, default_value_t = 192)]
    pub eval_prompts: usize,
    /// Largest operand (63: 4096 problems, room for ~2000 distinct ones across the sets).
    #[arg(long, default_value_t = 63)]
    pub max_operand: u64,
    /// Fraction of SFT demonstrations written by a careless teacher who forgets the carry
    /// (17+35 -> "42"). The SFT policy imitates this mixture; the verifier knows better, which is
    /// the gap preference learning is meant to close. 0 = clean demonstrations.
    #[arg(long, default_value_t = 0.6)]
    pub sft_carry_noise: f64,
    #[arg(long, default_value_t = 128)]
    pub hidden: usize,
    #[arg(long, default_value_t = 2)]
    pub layers: usize,
    #[arg(long, default_value_t = dno_math::rng::DEFAULT_SEED)]
    pub seed: u64,
    #[arg(long)]
    pub force: bool,
}

pub fn run(c: Command) -> Result<()> {
    match c {
        Command::Init(a) => init(a),
    }
}

/// dno-math's SplitMix64, for reproducible weights and prompts.
use dno_math::SplitMix64 as Rng;

/// Approximately normal (sum of four uniforms), scaled.
fn normal(rng: &mut Rng, std: f32) -> f32 {
    let s: f64 = (0..4).map(|_| rng.next_f64()).sum::<f64>() - 2.0;
    (s * (3.0f64).sqrt()) as f32 * std
}

const EOS: &str = "<|endoftext|>";
/// The chat template: the user turn followed by "=" (so a prompt renders as "12+34="); an
/// assistant turn is "=" + answer + EOS, so `dno train` ends answers with the EOS token.
const TEMPLATE: &str = "{% for message in messages %}{% if message['role'] == 'user' %}{{ message['content'] }}{% elif message['role'] == 'assistant' %}={{ message['content'] }}{{ eos_token }}{% endif %}{% endfor %}{% if add_generation_prompt %}={% endif %}";

/// GPT-2's byte-to-unicode table, so every byte is one token of a byte-level BPE without merges.
fn byte_chars() -> Vec<char> {
    let direct = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut extra = 0;
    (0..256u32)
        .map(|b| {
            if direct(b) {
                char::from_u32(b).unwrap()
            } else {
                extra += 1;
                char::from_u32(255 + extra).unwrap()
            }
        })
        .collect()
}

fn write_model(dir: &Path, a: &InitArgs) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let chars = byte_chars();
    let vocab_n = 257;
    let mut vocab = serde_json::Map::new();
    for (i, c) in chars.iter().enumerate() {
        vocab.insert(c.to_string(), json!(i));
    }
    vocab.insert(EOS.into(), json!(256));
    let tokenizer = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [{"id": 256, "content": EOS, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false, "vocab": vocab, "merges": []}
    });
    let (d, layers) = (a.hidden, a.layers);
    let (heads, kv_heads, ff) = (4, 2, d * 3);
    let config = json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": d, "intermediate_size": ff,
        "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
        "vocab_size": vocab_n, "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": true, "bos_token_id": 256, "eos_token_id": 256, "hidden_act": "silu", "torch_dtype": "float32"
    });
    let tok_cfg = json!({"eos_token": EOS, "bos_token": null, "chat_template": TEMPLATE, "model_max_length": 64, "tokenizer_class": "PreTrainedTokenizerFast"});
    let gen_cfg = json!({"eos_token_id": 256, "bos_token_id": 256});
    for (name, v) in [("tokenizer.json", &tokenizer), ("config.json", &config), ("tokenizer_config.json", &tok_cfg), ("generation_config.json", &gen_cfg)] {
        std::fs::write(dir.join(name), serde_json::to_string_pretty(v)?).with_context(|| format!("{}: write", dir.join(name).display()))?;
    }
    // Random weights, N(0, 0.02) like HF's initialiser; norms at 1.
    let mut rng = Rng::new(a.seed ^ 0x5eed);
    let hd = d / heads;
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut add = |name: String, shape: Vec<usize>, ones: bool, rng: &mut Rng| {
        let n: usize = shape.iter().product();
        let data: Vec<u8> = (0..n).flat_map(|_| (if ones { 1.0f32 } else { normal(rng, 0.02) }).to_le_bytes()).collect();
        tensors.push((name, shape, data));
    };
    add("model.embed_tokens.weight".into(), vec![vocab_n, d], false, &mut rng);
    add("model.norm.weight".into(), vec![d], true, &mut rng);
    for l in 0..layers {
        let p = format!("model.layers.{l}");
        add(format!("{p}.self_attn.q_proj.weight"), vec![heads * hd, d], false, &mut rng);
        add(format!("{p}.self_attn.k_proj.weight"), vec![kv_heads * hd, d], false, &mut rng);
        add(format!("{p}.self_attn.v_proj.weight"), vec![kv_heads * hd, d], false, &mut rng);
        add(format!("{p}.self_attn.o_proj.weight"), vec![d, heads * hd], false, &mut rng);
        add(format!("{p}.mlp.gate_proj.weight"), vec![ff, d], false, &mut rng);
        add(format!("{p}.mlp.up_proj.weight"), vec![ff, d], false, &mut rng);
        add(format!("{p}.mlp.down_proj.weight"), vec![d, ff], false, &mut rng);
        add(format!("{p}.input_layernorm.weight"), vec![d], true, &mut rng);
        add(format!("{p}.post_attention_layernorm.weight"), vec![d], true, &mut rng);
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, s, b)| Ok((n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)?)))
        .collect::<Result<_, safetensors::SafeTensorError>>()?;
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors"))?;
    Ok(())
}

/// Digit-wise addition that drops every carry (17+35 = 42): a plausible, systematic mistake.
fn add_without_carry(mut x: u64, mut y: u64) -> u64 {
    let (mut sum, mut place) = (0, 1);
    while x > 0 || y > 0 {
        sum += ((x % 10 + y % 10) % 10) * place;
        x /= 10;
        y /= 10;
        place *= 10;
    }
    sum
}

fn write_prompts(path: &Path, rows: Vec<PromptRow>, prov: &Provenance, force: bool) -> Result<()> {
    let mut w = DatasetWriter::<PromptRow>::create(path, prov, force)?;
    w.write_all(rows)?;
    w.finish()?;
    Ok(())
}

fn init(a: InitArgs) -> Result<()> {
    if a.out.join("model").exists() && !a.force {
        bail!("{}: already initialised (pass --force to recreate)", a.out.display());
    }
    if !(0.0..=1.0).contains(&a.sft_carry_noise) {
        bail!("--sft-carry-noise must be in [0, 1]");
    }
    if a.hidden % 4 != 0 || a.hidden == 0 {
        bail!("--hidden must be a positive multiple of 4 (4 attention heads)");
    }
    write_model(&a.out.join("model"), &a)?;
    let prov = Provenance::new("demo init", &a)?;
    // Distinct problems across all sets, drawn without replacement.
    let mut rng = Rng::new(a.seed);
    let mut seen = std::collections::HashSet::new();
    let mut problem = |tag: &str, i: usize| loop {
        let (x, y) = (rng.below(a.max_operand + 1), rng.below(a.max_operand + 1));
        if seen.insert((x, y)) || seen.len() as u64 > (a.max_operand + 1).pow(2) / 2 {
            return PromptRow {
                prompt_id: format!("{tag}-{i:05}"),
                prompt: format!("{x}+{y}"),
                system: None,
                history: None,
                reference: Some((x + y).to_string()),
                answer: Some((x + y).to_string()),
                constraints: None,
            };
        }
    };
    let mut sft: Vec<PromptRow> = (0..a.sft_prompts).map(|i| problem("sft", i)).collect();
    // The careless teacher: a seeded fraction of SFT references add digit by digit without
    // carrying. Only `reference` (the demonstration) changes; `answer` (what the verifier checks)
    // stays the true sum.
    let mut noise_rng = Rng::new(a.seed ^ 0xca77);
    for row in &mut sft {
        if noise_rng.next_f64() < a.sft_carry_noise {
            let (x, y) = row.prompt.split_once('+').context("demo prompt is not x+y")?;
            row.reference = Some(add_without_carry(x.parse()?, y.parse()?).to_string());
        }
    }
    let eval: Vec<PromptRow> = (0..a.eval_prompts).map(|i| problem("eval", i)).collect();
    let iters: Vec<Vec<PromptRow>> = (1..=a.iterations).map(|t| (0..a.prompts_per_iteration).map(|i| problem(&format!("it{t}"), i)).collect()).collect();
    write_prompts(&a.out.join("sft_prompts.parquet"), sft, &prov, a.force)?;
    write_prompts(&a.out.join("eval_prompts.parquet"), eval, &prov, a.force)?;
    for (t, rows) in iters.into_iter().enumerate() {
        write_prompts(&a.out.join(format!("prompts-iter-{}.parquet", t + 1)), rows, &prov, a.force)?;
    }
    eprintln!("demo task written to {}: model/, sft_prompts.parquet, eval_prompts.parquet, prompts-iter-1..{}.parquet", a.out.display(), a.iterations);
    Ok(())
}
