//! Sharded stage outputs (`--shard I/N` on sample, annotate and eval).
//!
//! A shard run keeps the prompts whose stable hash of `prompt_id` falls in shard I of N
//! ([`crate::shard_of`]) and writes one file carrying the `dno.shard` metadata key: the shard,
//! and the position of each of its prompts in the unsharded order. A directory (or list) of the
//! N shard files then reads as the unsharded output, row for row and in the same order
//! ([`crate::DatasetReader::read_all`]). Reading checks that the set is one run's shards: every
//! file is a shard of the same N, no shard index appears twice (the same shard run on two
//! machines), no prompt is in two files, every row lies in its file's shard, and, unless a
//! single shard file is given on its own, all N shards are present.

use crate::shard_of;
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

/// Parquet key-value metadata key of a shard output.
pub const META_SHARD: &str = "dno.shard";

/// `--shard I/N`: shard `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// Parses `I/N` with 0 <= I < N.
    pub fn parse(s: &str) -> Result<Shard> {
        let (i, n) = s.split_once('/').ok_or_else(|| anyhow!("--shard '{s}': expected I/N, e.g. 0/4"))?;
        let index: u32 = i.trim().parse().map_err(|_| anyhow!("--shard '{s}': I is not a number"))?;
        let count: u32 = n.trim().parse().map_err(|_| anyhow!("--shard '{s}': N is not a number"))?;
        if count == 0 || index >= count {
            bail!("--shard '{s}': need 0 <= I < N");
        }
        Ok(Shard { index, count })
    }

    /// Whether `prompt_id` belongs to this shard.
    pub fn contains(&self, prompt_id: &str) -> bool {
        shard_of(prompt_id, self.count) == self.index
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The `dno.shard` metadata of one shard file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardMeta {
    pub index: u32,
    pub count: u32,
    /// Position of each prompt of the file in the unsharded order (what a merge sorts by).
    pub order: BTreeMap<String, u64>,
}

impl ShardMeta {
    pub fn new(shard: Shard, order: BTreeMap<String, u64>) -> Self {
        ShardMeta { index: shard.index, count: shard.count, order }
    }
    pub fn shard(&self) -> Shard {
        Shard { index: self.index, count: self.count }
    }
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("shard metadata serialises")
    }
}

/// A validated set of shard files read together.
#[derive(Debug, Clone)]
pub struct ShardSet {
    count: u32,
    /// Per file (in the reader's file order), its shard.
    shards: Vec<Shard>,
    /// prompt_id -> (file index, position in the unsharded order).
    order: HashMap<String, (usize, u64)>,
}

impl ShardSet {
    /// Checks the `dno.shard` metadata of `files` (None where a file has none). Returns None when
    /// no file is a shard output. `complete`: all N shards must be present.
    pub fn check(files: &[PathBuf], metas: Vec<Option<ShardMeta>>, complete: bool) -> Result<Option<ShardSet>> {
        let Some(first) = metas.iter().position(|m| m.is_some()) else { return Ok(None) };
        if let Some(plain) = metas.iter().position(|m| m.is_none()) {
            bail!(
                "{}: not a shard output, but {} is (shard {}); read one stage's shard outputs together, without other files",
                files[plain].display(),
                files[first].display(),
                metas[first].as_ref().unwrap().shard()
            );
        }
        let metas: Vec<ShardMeta> = metas.into_iter().map(Option::unwrap).collect();
        let count = metas[first].count;
        let mut by_index: HashMap<u32, usize> = HashMap::new();
        let mut order: HashMap<String, (usize, u64)> = HashMap::new();
        for (fi, m) in metas.iter().enumerate() {
            if m.count != count || m.index >= m.count {
                bail!("{}: shard {}, but {} is shard {}: shards of different runs (or a different N) cannot be read together", files[fi].display(), m.shard(), files[0].display(), metas[0].shard());
            }
            if let Some(&other) = by_index.get(&m.index) {
                bail!(
                    "{} and {} are both shard {}: the same shard was run twice (e.g. on two machines); keep one of them",
                    files[other].display(),
                    files[fi].display(),
                    m.shard()
                );
            }
            by_index.insert(m.index, fi);
            for (pid, &pos) in &m.order {
                if let Some((other, _)) = order.insert(pid.clone(), (fi, pos)) {
                    bail!("prompt '{pid}' is in two shard outputs, {} and {}: overlapping shards are never merged", files[other].display(), files[fi].display());
                }
            }
        }
        if complete && by_index.len() < count as usize {
            let missing: Vec<String> = (0..count).filter(|i| !by_index.contains_key(i)).map(|i| format!("{i}/{count}")).collect();
            let dir = files[0].parent().map(Path::display).map(|d| d.to_string()).unwrap_or_default();
            bail!("{dir}: incomplete shard outputs: shard {} missing ({} of {count} present)", missing.join(", "), by_index.len());
        }
        Ok(Some(ShardSet { count, shards: metas.iter().map(ShardMeta::shard).collect(), order }))
    }

    /// N of the shards.
    pub fn count(&self) -> u32 {
        self.count
    }
    /// The shard of file `file_index`.
    pub fn shard_of_file(&self, file_index: usize) -> Shard {
        self.shards[file_index]
    }
    /// Position of `prompt_id` in the unsharded order.
    pub fn position(&self, prompt_id: &str) -> Option<u64> {
        self.order.get(prompt_id).map(|&(_, p)| p)
    }

    /// The set narrowed to file `file_index` alone (which becomes file 0).
    pub fn only_file(&self, file_index: usize) -> ShardSet {
        let order = self.order.iter().filter(|(_, &(fi, _))| fi == file_index).map(|(k, &(_, p))| (k.clone(), (0, p))).collect();
        ShardSet { count: self.count, shards: vec![self.shards[file_index]], order }
    }

    /// Row check: the row of `prompt_id` in file `file_index` must lie in that file's shard and
    /// be listed in its metadata.
    pub fn check_row(&self, file: &Path, file_index: usize, row: u64, prompt_id: &str) -> Result<()> {
        let shard = self.shards[file_index];
        if !shard.contains(prompt_id) {
            bail!(
                "{}: row {row}: prompt '{prompt_id}' belongs to shard {}/{}, not to this file's shard {shard}",
                file.display(),
                shard_of(prompt_id, shard.count),
                shard.count
            );
        }
        match self.order.get(prompt_id) {
            Some(&(fi, _)) if fi == file_index => Ok(()),
            _ => bail!("{}: row {row}: prompt '{prompt_id}' is not listed in the file's {META_SHARD} metadata", file.display()),
        }
    }
}

/// Parses a file's `dno.shard` metadata value.
pub fn parse_meta(file: &Path, value: &str) -> Result<ShardMeta> {
    serde_json::from_str(value).with_context(|| format!("{}: metadata key {META_SHARD} is not valid shard metadata", file.display()))
}

/// Positions of prompts in the unsharded order, for a stage that writes a shard of what it reads:
/// the positions recorded by an input shard set, or else each prompt's first-appearance rank in
/// the input. Call [`PromptOrder::note`] for every input row in read order, before filtering.
pub struct PromptOrder<'a> {
    input: Option<&'a ShardSet>,
    ranks: HashMap<String, u64>,
}

impl<'a> PromptOrder<'a> {
    pub fn new(input: Option<&'a ShardSet>) -> Self {
        PromptOrder { input, ranks: HashMap::new() }
    }

    /// The position of `prompt_id`.
    pub fn note(&mut self, prompt_id: &str) -> u64 {
        if let Some(p) = self.input.and_then(|s| s.position(prompt_id)) {
            return p;
        }
        let next = self.ranks.len() as u64;
        *self.ranks.entry(prompt_id.to_string()).or_insert(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(i: u32, n: u32, ids: &[&str]) -> Option<ShardMeta> {
        Some(ShardMeta::new(Shard { index: i, count: n }, ids.iter().enumerate().map(|(k, s)| (s.to_string(), k as u64)).collect()))
    }
    fn files(n: usize) -> Vec<PathBuf> {
        (0..n).map(|i| PathBuf::from(format!("d/part-{i}.parquet"))).collect()
    }

    #[test]
    fn parse_and_display() {
        assert_eq!(Shard::parse("1/4").unwrap(), Shard { index: 1, count: 4 });
        assert_eq!(Shard::parse("1/4").unwrap().to_string(), "1/4");
        for bad in ["4/4", "1", "a/2", "0/0", "-1/3"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn set_errors_name_the_files() {
        assert!(ShardSet::check(&files(2), vec![None, None], true).unwrap().is_none());
        let e = ShardSet::check(&files(2), vec![meta(1, 2, &["a"]), meta(1, 2, &["b"])], true).unwrap_err().to_string();
        assert!(e.contains("part-0") && e.contains("part-1") && e.contains("same shard was run twice"), "{e}");
        let e = ShardSet::check(&files(2), vec![meta(0, 2, &["a"]), meta(1, 2, &["a"])], true).unwrap_err().to_string();
        assert!(e.contains("prompt 'a'") && e.contains("part-0") && e.contains("part-1"), "{e}");
        let e = ShardSet::check(&files(2), vec![meta(0, 2, &["a"]), meta(1, 3, &["b"])], true).unwrap_err().to_string();
        assert!(e.contains("different N"), "{e}");
        let e = ShardSet::check(&files(2), vec![meta(0, 3, &["a"]), meta(2, 3, &["b"])], true).unwrap_err().to_string();
        assert!(e.contains("shard 1/3 missing"), "{e}");
        assert!(ShardSet::check(&files(1), vec![meta(2, 3, &["b"])], false).unwrap().is_some());
        let e = ShardSet::check(&files(2), vec![meta(0, 1, &["a"]), None], true).unwrap_err().to_string();
        assert!(e.contains("part-1") && e.contains("not a shard output"), "{e}");
    }

    #[test]
    fn order_uses_the_input_set_or_first_appearance() {
        let set = ShardSet::check(&files(1), vec![meta(0, 1, &["x", "y"])], true).unwrap().unwrap();
        let mut o = PromptOrder::new(Some(&set));
        assert_eq!((o.note("y"), o.note("x")), (1, 0));
        let mut o = PromptOrder::new(None);
        assert_eq!((o.note("b"), o.note("a"), o.note("b")), (0, 1, 0));
    }
}
