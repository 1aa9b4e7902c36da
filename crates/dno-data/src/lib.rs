//! `dno-data`: the fixed Arrow schemas of every dataset that flows between `dno` stages, their
//! typed rows, and the Parquet I/O every stage shares (streaming validated reads, atomic writes,
//! resumable part files, one writer per output, provenance).

pub mod io;
pub mod lock;
pub mod parts;
pub mod provenance;
pub mod rows;
pub mod schema;

pub use io::{check_output, read_metadata, read_provenance, read_validated, resolve_inputs, write_atomic, DatasetReader, DatasetWriter};
pub use lock::{lock_output, OutputLock};
pub use parts::PartStore;
pub use provenance::{fingerprint, InputRef, Provenance};
pub use rows::{EvalRow, MetricRow, PairRow, PreferenceRow, PromptRow, Row, SampleRow};
pub use schema::{Dataset, META_PROVENANCE, META_SCHEMA, META_VERSION};

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
