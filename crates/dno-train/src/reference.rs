//! Reference log-probabilities log π_t(y|x) of the input model M (= π_t, the previous iterate;
//! Alg. 1 line 4 and Eq. 13 use it in every log-ratio). They are computed once, in a no-grad
//! pass before training, and cached in `out_dir/ref_logps.json` under a fingerprint of the model
//! (its files, [`model_files_fingerprint`]), the examples and `max_len`; a later run (a resume in particular) with the same
//! fingerprint reads the cache instead of recomputing.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};
use dno_model::Llama;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::batch::{sequence_logps, share_limit, to_host, PackedBatch};
use crate::parallel::{split_even, ShardPlan};
use crate::TrainExample;

pub const CACHE_FILE: &str = "ref_logps.json";

/// Reference log-probs of one example: chosen, and rejected when present.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RefLogps {
    pub chosen: f64,
    pub rejected: Option<f64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct CacheFile {
    fingerprint: String,
    /// Keyed by example id.
    logps: BTreeMap<String, RefLogps>,
}

struct HashParams<'a>(&'a mut Sha256);

impl ModuleVisitor for HashParams<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let data = param.val().into_data();
        self.0.update(format!("{:?}{:?}", data.shape(), data.dtype()).as_bytes());
        self.0.update(data.as_bytes());
    }
}

/// Files up to this size are hashed whole; larger ones are sampled (see [`model_files_fingerprint`]).
const WHOLE_FILE_LIMIT: u64 = 16 << 20;
/// Sampled blocks of a large file, and their size.
const SAMPLE_BLOCKS: u64 = 64;
const BLOCK: u64 = 64 << 10;

/// Fingerprint of a model on disk (a GGUF/safetensors file, or an HF directory: every regular,
/// non-hidden file at its top level), read in constant time instead of hashing every weight.
///
/// Per file: its name, size and modification time (nanoseconds), and its bytes, all of them for
/// files up to 16 MiB (config.json, tokenizer files, small models), else the first MiB (the
/// GGUF metadata; the whole safetensors header when it is longer: tensor names, dtypes, shapes,
/// offsets), 64 blocks of 64 KiB spread evenly over the file, and its last block. A retrained or
/// replaced model rewrites its files, which changes their modification time even when size and
/// sampled bytes agree; copying a model elsewhere changes it too, which only costs a recompute.
pub fn model_files_fingerprint(path: &Path) -> Result<String> {
    let mut files = Vec::new();
    if path.is_dir() {
        for e in fs::read_dir(path).with_context(|| format!("{}: cannot list", path.display()))? {
            let p = e.with_context(|| format!("{}: cannot list", path.display()))?.path();
            let hidden = p.file_name().and_then(|n| n.to_str()).is_none_or(|n| n.starts_with('.'));
            if p.is_file() && !hidden {
                files.push(p);
            }
        }
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    let mut h = Sha256::new();
    h.update(b"dno model files v1\n");
    for f in &files {
        hash_model_file(&mut h, f).with_context(|| format!("{}: cannot fingerprint", f.display()))?;
    }
    Ok(hex::encode(h.finalize()))
}

fn hash_model_file(h: &mut Sha256, path: &Path) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let meta = fs::metadata(path)?;
    let size = meta.len();
    let mtime = meta.modified()?.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    h.update((name.len() as u64).to_le_bytes());
    h.update(name.as_bytes());
    h.update(size.to_le_bytes());
    h.update(mtime.to_le_bytes());
    let mut file = fs::File::open(path)?;
    let mut read_at = |h: &mut Sha256, offset: u64, len: u64| -> std::io::Result<()> {
        file.seek(SeekFrom::Start(offset))?;
        let mut buf = Vec::with_capacity(len as usize);
        (&mut file).take(len).read_to_end(&mut buf)?;
        h.update(offset.to_le_bytes());
        h.update(&buf);
        Ok(())
    };
    if size <= WHOLE_FILE_LIMIT {
        return read_at(h, 0, size);
    }
    let mut head = 1u64 << 20;
    if path.extension().is_some_and(|e| e == "safetensors") {
        let mut len = [0u8; 8];
        fs::File::open(path)?.read_exact(&mut len)?;
        head = head.max(8 + u64::from_le_bytes(len)).min(size);
    }
    read_at(h, 0, head)?;
    for i in 0..SAMPLE_BLOCKS {
        read_at(h, i * (size / SAMPLE_BLOCKS), BLOCK)?;
    }
    read_at(h, size - BLOCK, BLOCK)
}

/// Fingerprint of a model held in memory (shapes, dtypes and bytes of every parameter), for
/// models that have no files; it copies every weight to the host, so prefer
/// [`model_files_fingerprint`] for a model read from disk.
pub fn weights_fingerprint(model: &Llama) -> String {
    let mut h = Sha256::new();
    h.update(b"dno model weights v1\n");
    model.visit(&mut HashParams(&mut h));
    hex::encode(h.finalize())
}

/// Fingerprint of the examples' ids and tokens and of `max_len` (which decides truncation).
pub fn examples_fingerprint(examples: &[TrainExample], max_len: usize) -> String {
    let mut h = Sha256::new();
    h.update(b"dno train examples v1\n");
    h.update(max_len.to_le_bytes());
    let mut tokens = |t: &[u32]| {
        h.update((t.len() as u64).to_le_bytes());
        for x in t {
            h.update(x.to_le_bytes());
        }
    };
    for ex in examples {
        tokens(ex.id.as_bytes().iter().map(|&b| b as u32).collect::<Vec<_>>().as_slice());
        tokens(&ex.prompt_tokens);
        tokens(&ex.chosen_tokens);
        match &ex.rejected_tokens {
            Some(r) => tokens(r),
            None => tokens(&[u32::MAX]),
        }
    }
    hex::encode(h.finalize())
}

/// The reference cache's key: the model's and the examples' fingerprints (v3: the model is
/// fingerprinted by its files when it has any; v2 hashed every weight).
pub fn fingerprint(model_fingerprint: &str, examples_fingerprint: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"dno-train reference v3 (one row per pair, model files)\n");
    h.update(model_fingerprint.as_bytes());
    h.update(b"\n");
    h.update(examples_fingerprint.as_bytes());
    hex::encode(h.finalize())
}

/// Computes log π_t(y⁺|x) and log π_t(y⁻|x) for every example with `model` (no gradients:
/// the model must be on a plain, non-autodiff device). Examples are processed in order of
/// length so that each batch pads little; `batch_pairs` pairs per batch, split into one part per
/// shard of `plan`, run side by side (part k by `replicas[k]`, see [`ShardPlan::replicas`]).
/// Returns `None` when `stop` is raised between two batches.
pub fn compute(
    replicas: &[Llama],
    plan: &ShardPlan,
    examples: &[TrainExample],
    max_len: usize,
    batch_pairs: usize,
    stop: &AtomicBool,
) -> Result<Option<Vec<RefLogps>>> {
    let mut order: Vec<usize> = (0..examples.len()).collect();
    // A pair is one row, prompt ++ chosen ++ rejected: sort by that width so batches pad little.
    let len = |e: &TrainExample| e.prompt_tokens.len() + e.chosen_tokens.len() + e.rejected_tokens.as_ref().map_or(0, |r| r.len());
    order.sort_by_key(|&i| len(&examples[i]));
    let mut out = vec![RefLogps { chosen: 0.0, rejected: None }; examples.len()];
    for chunk in order.chunks(batch_pairs.max(1)) {
        if stop.load(Ordering::SeqCst) {
            return Ok(None);
        }
        let parts = split_even(chunk, plan.len());
        let results: Vec<Result<Vec<(usize, RefLogps)>>> = parts
            .par_iter()
            .enumerate()
            .map(|(k, part)| reference_part(&replicas[k], examples, part, max_len, &plan.devices[k]))
            .collect();
        for r in results {
            for (i, logps) in r? {
                out[i] = logps;
            }
        }
    }
    Ok(Some(out))
}

/// Reference log-probs of the examples `part` in one forward (one row per pair, as in training).
fn reference_part(
    model: &Llama,
    examples: &[TrainExample],
    part: &[usize],
    max_len: usize,
    device: &Device,
) -> Result<Vec<(usize, RefLogps)>> {
    let pairs: Vec<_> = part.iter().map(|&i| examples[i].pair_tokens(true)).collect();
    let batch = PackedBatch::pack_pairs(&pairs, max_len, 0, share_limit(model))
        .with_context(|| format!("reference pass, batch starting at example {:?}", examples[part[0]].id))?;
    let logps = to_host(sequence_logps(model, &batch, device))?;
    let mut next_rejected = part.len();
    let mut out = Vec::with_capacity(part.len());
    for (k, &i) in part.iter().enumerate() {
        let rejected = examples[i].rejected_tokens.as_ref().map(|_| {
            next_rejected += 1;
            logps[next_rejected - 1]
        });
        out.push((i, RefLogps { chosen: logps[k], rejected }));
    }
    Ok(out)
}

/// Reads the cache when its fingerprint matches, else computes and writes it (atomically).
/// Returns the log-probs in example order and whether the cache was used; `None` when `stop`
/// was raised during the computation (nothing is written then).
#[allow(clippy::too_many_arguments)]
pub fn load_or_compute(
    model: &Llama,
    examples: &[TrainExample],
    fingerprint: &str,
    max_len: usize,
    batch_pairs: usize,
    out_dir: &Path,
    device: &Device,
    plan: &ShardPlan,
    stop: &AtomicBool,
) -> Result<Option<(Vec<RefLogps>, bool)>> {
    let path = out_dir.join(CACHE_FILE);
    if path.is_file() {
        let text = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let cache: CacheFile =
            serde_json::from_slice(&text).with_context(|| format!("parsing reference cache {}", path.display()))?;
        if cache.fingerprint == fingerprint {
            let mut out = Vec::with_capacity(examples.len());
            for ex in examples {
                let r = cache
                    .logps
                    .get(&ex.id)
                    .with_context(|| format!("reference cache {} has no entry for example {:?}", path.display(), ex.id))?;
                out.push(*r);
            }
            return Ok(Some((out, true)));
        }
        log::info!("reference cache {} is for another model/data; recomputing", path.display());
    }
    let Some(logps) = compute(&plan.replicas(model, device), plan, examples, max_len, batch_pairs, stop)? else {
        return Ok(None);
    };
    let cache = CacheFile {
        fingerprint: fingerprint.to_string(),
        logps: examples.iter().zip(&logps).map(|(e, r)| (e.id.clone(), *r)).collect(),
    };
    let tmp = out_dir.join(format!("{CACHE_FILE}.tmp"));
    fs::write(&tmp, serde_json::to_vec(&cache)?).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(Some((logps, false)))
}
