//! Sampling throughput on CPU: 16 prompts (~64 tokens) x K samples, 128 new tokens, T = 0.7.
//!
//! cargo run --release -p dno-model --example bench_sample -- [MODEL] [--prompts N] [--k K]
//!     [--new N] [--batch B[,B2...]]
//! MODEL defaults to $HOME/.cache/dno/models/SmolLM2-135M-Instruct.Q4_1.gguf.

use anyhow::{Context, Result};
use dno_model::{generate, load_model, GenRequest, SamplingParams};
use std::time::Instant;

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// User + system CPU seconds of this process (/proc/self/stat, 100 ticks per second).
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit(')').next()?.to_string();
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
        })
        .unwrap_or(f64::NAN)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

const TOPICS: [&str; 16] = [
    "the water cycle", "how vaccines work", "the history of the printing press", "photosynthesis",
    "why the sky is blue", "how a bicycle stays upright", "the rules of chess", "compound interest",
    "black holes", "the French revolution", "how to bake bread", "plate tectonics",
    "the immune system", "how airplanes fly", "recycling plastics", "the life of honey bees",
];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut model = format!(
        "{}/.cache/dno/models/SmolLM2-135M-Instruct.Q4_1.gguf",
        std::env::var("HOME").unwrap_or_default()
    );
    let (mut n_prompts, mut k, mut new_tokens) = (16usize, 8usize, 128usize);
    let mut batches = vec![128usize];
    let mut i = 0;
    while i < args.len() {
        let next = |i: usize| args.get(i + 1).cloned().context("missing value");
        match args[i].as_str() {
            "--prompts" => n_prompts = next(i)?.parse()?,
            "--k" => k = next(i)?.parse()?,
            "--new" => new_tokens = next(i)?.parse()?,
            "--batch" => batches = next(i)?.split(',').map(|b| b.parse()).collect::<Result<_, _>>()?,
            other => {
                model = other.to_string();
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    let device = dno_model::DeviceSpec::Cpu.device()?;
    let t0 = Instant::now();
    let lm = load_model(std::path::Path::new(&model), &device)?;
    println!("loaded {model} in {:.1}s, peak RSS {:.0} MB", t0.elapsed().as_secs_f64(), peak_rss_mb());

    let reqs: Vec<GenRequest> = (0..n_prompts)
        .map(|p| {
            let user = format!(
                "Please write a short, clear explanation of {} for a curious twelve-year-old student. \
                 Use simple words, one concrete example, and finish with a question.",
                TOPICS[p % TOPICS.len()]
            );
            let text = lm.chat.render(None, &user, true)?;
            let prompt = lm.tokenizer.encode(&text, false)?;
            Ok(GenRequest { prompt, seeds: (0..k as u64).map(|s| 1000 * p as u64 + s).collect() })
        })
        .collect::<Result<_>>()?;
    let mean_len = reqs.iter().map(|r| r.prompt.len()).sum::<usize>() as f64 / reqs.len() as f64;
    println!("{n_prompts} prompts (mean {mean_len:.0} tokens) x K={k}, {new_tokens} new tokens, T=0.7, EOS ignored");

    println!("| max_batch | samples | generated tokens | wall s | tok/s (wall) | CPU s | tok per CPU-s | peak RSS MB | load avg before |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for &b in &batches {
        let params = SamplingParams { temperature: 0.7, max_new_tokens: new_tokens, max_batch: b, ..Default::default() };
        let mut lm_no_eos = lm_clone_no_eos(&lm)?;
        lm_no_eos.tokenizer.eos_ids.clear();
        let load = load_average();
        let cpu0 = cpu_seconds();
        let t = Instant::now();
        let out = generate(&lm_no_eos, &reqs, &params, |_| {})?;
        let secs = t.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu0;
        let toks: usize = out.iter().flatten().map(|g| g.tokens.len()).sum();
        println!(
            "| {b} | {} | {toks} | {secs:.1} | {:.1} | {cpu:.1} | {:.1} | {:.0} | {load} |",
            n_prompts * k,
            toks as f64 / secs,
            toks as f64 / cpu,
            peak_rss_mb()
        );
        if b == batches[0] {
            eprintln!("sample: {:?}", out[0][0].text.chars().take(200).collect::<String>());
        }
    }
    Ok(())
}

/// The benchmark measures a fixed number of tokens, so EOS is disabled on a shallow copy.
fn lm_clone_no_eos(lm: &dno_model::LoadedModel) -> Result<dno_model::LoadedModel> {
    Ok(dno_model::LoadedModel {
        model: lm.model.clone(),
        config: lm.config.clone(),
        tokenizer: without_eos(&lm.tokenizer),
        chat: dno_model::ChatTemplate::new(
            lm.chat.source().map(|s| s.to_string()),
            lm.chat.bos_token.clone(),
            lm.chat.eos_token.clone(),
        )?,
    })
}

/// The tokenizer with no end-of-sequence ids (generation runs to its length).
fn without_eos(t: &dno_model::Tok) -> dno_model::Tok {
    let mut t = t.clone();
    t.eos_ids.clear();
    t
}
