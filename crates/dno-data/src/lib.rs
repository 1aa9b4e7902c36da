//! `dno-data`: the fixed Arrow schemas of every dataset that flows between `dno` stages, their
//! typed rows, and the Parquet I/O every stage shares (streaming validated reads, atomic writes,
//! resumable part files, one writer per output, provenance).

pub mod import;
pub mod io;
pub mod lock;
pub mod pair;
pub mod parts;
pub mod progress;
pub mod provenance;
pub mod rows;
pub mod schema;
pub mod shard;

pub use io::{check_output, read_metadata, read_provenance, read_validated, resolve_inputs, write_atomic, DatasetReader, DatasetWriter};
pub use lock::{lock_output, OutputLock};
pub use parts::PartStore;
pub use progress::{Reporter, Silent};
pub use provenance::{fingerprint, InputRef, Provenance};
pub use rows::{conversation, judge_view, parse_history, EvalRow, MetricRow, PairRow, PreferenceRow, PromptRow, Row, SampleRow, Turn};
pub use schema::{Dataset, META_PROVENANCE, META_SCHEMA, META_VERSION};
pub use shard::{PromptOrder, Shard, ShardMeta, ShardSet, META_SHARD};

/// A stable 64-bit hash (FNV-1a) used for deterministic ids, seeds and shard assignment.
/// Unlike `std`'s hasher it never changes between Rust releases.
pub fn stable_hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.as_bytes().iter().chain(std::iter::once(&0xffu8)) {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// `--shard I/N`: which shard a prompt belongs to, by a stable hash of its id.
pub fn shard_of(prompt_id: &str, n: u32) -> u32 {
    (stable_hash(&[prompt_id]) % n as u64) as u32
}

/// Degenerate-output rule (the paper's "defect detection"): a response is repetitive when it
/// has at least 16 word 4-grams and more than half of them repeat an earlier 4-gram, or (for
/// text without spaces) at least 64 character 8-grams of which more than half repeat.
pub fn is_repetitive(text: &str) -> bool {
    fn repeat_share<T: std::hash::Hash + Eq>(grams: Vec<T>) -> f64 {
        let n = grams.len();
        let distinct: std::collections::HashSet<T> = grams.into_iter().collect();
        1.0 - distinct.len() as f64 / n as f64
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.len() >= 19 {
        return repeat_share(words.windows(4).collect()) > 0.5;
    }
    let chars: Vec<char> = text.chars().collect();
    if chars.len() >= 71 {
        return repeat_share(chars.windows(8).collect()) > 0.5;
    }
    false
}

/// Deterministic sample ids: a hash of (prompt_id, policy, sample_index, seed).
pub fn sample_id(prompt_id: &str, policy: &str, index: i32, seed: u64) -> String {
    format!("{:016x}", stable_hash(&[prompt_id, policy, &index.to_string(), &seed.to_string()]))
}

/// The sample id of a prompt's reference answer.
pub fn reference_id(prompt_id: &str) -> String {
    format!("ref-{:016x}", stable_hash(&[prompt_id, "reference"]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repetition_rule() {
        assert!(!is_repetitive("The answer is 42 because six times seven is forty-two."));
        assert!(is_repetitive(&"the cat sat on the mat ".repeat(10)));
        assert!(is_repetitive(&"0".repeat(200)));
        assert!(!is_repetitive(&(0..100).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ")));
    }

    #[test]
    fn ids_are_deterministic_and_distinct() {
        assert_eq!(sample_id("p", "m", 0, 1), sample_id("p", "m", 0, 1));
        assert_ne!(sample_id("p", "m", 0, 1), sample_id("p", "m", 1, 1));
        assert_ne!(sample_id("p", "m", 0, 1), sample_id("p", "m", 0, 2));
        assert_ne!(reference_id("p"), reference_id("q"));
    }
}
