//! Content-addressed, append-only answer cache (JSONL), which is also the resume mechanism.
//!
//! Each line is `{"k": "<sha256 hex>", "v": <answer>}`. The key hashes the oracle's config
//! fingerprint and the exact content shown to it (prompt, responses in shown order), so a changed
//! template, model or response never hits a stale answer, while a re-run (or a run killed with
//! SIGKILL and restarted) re-pays nothing already answered.
//!
//! * Only answers are stored; failures never are, so they are retried on the next run.
//! * Each entry is written with one `write` call as soon as it is known (a killed process loses
//!   nothing the OS has received); the file is `fsync`ed every `sync_every` entries and on
//!   [`Cache::sync`] (the driver calls it at the end of a run).
//! * On load, a truncated last line (a crash mid-write) is ignored, and so is any other corrupt
//!   line (with a warning): the cache is an optimisation, the worst case is paying again.
//! * One process at a time per file: two concurrent writers would duplicate work, not corrupt
//!   answers (duplicate keys: first one wins on load).
//! * Memory: only an index (SHA-256 of the key -> offset and length of its line) is kept; an answer
//!   is read back from the file on a hit, so a cache of millions of judgments stays small.

use anyhow::{Context, Result};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// SHA-256 (hex) of length-prefixed parts (unambiguous: `["ab","c"] != ["a","bc"]`).
pub fn hash_parts(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Where an entry's line sits in the file.
#[derive(Clone, Copy)]
struct Span {
    offset: u64,
    len: u32,
}

struct Inner {
    path: PathBuf,
    index: Mutex<HashMap<[u8; 32], Span>>,
    file: Mutex<Writer>,
    /// A read handle for answers (positional reads, shared by threads).
    reader: File,
    sync_every: usize,
}

struct Writer {
    file: File,
    /// Current file length: where the next line starts.
    len: u64,
    unsynced: usize,
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The `v` of one cache line.
fn parse_line(line: &[u8]) -> Option<(String, Value)> {
    let mut v: Value = serde_json::from_slice(line).ok()?;
    let k = v.get("k")?.as_str()?.to_string();
    Some((k, v.get_mut("v")?.take()))
}

/// The cache handle (cheap to clone; clones share the file).
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cache({}, {} entries)", self.inner.path.display(), self.len())
    }
}

impl Cache {
    /// Opens (creating if needed) the cache file at `path` and loads its entries.
    pub fn open(path: impl AsRef<Path>) -> Result<Cache> {
        Self::open_with(path, 64)
    }

    /// Like [`Cache::open`], fsyncing every `sync_every` new entries (≥ 1).
    pub fn open_with(path: impl AsRef<Path>, sync_every: usize) -> Result<Cache> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating cache directory {}", dir.display()))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .with_context(|| format!("opening judge cache {}", path.display()))?;
        let mut index = HashMap::new();
        let mut bad = 0usize;
        let mut offset = 0u64;
        let mut torn = false;
        let mut lines = BufReader::new(&file);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = lines.read_until(b'\n', &mut line).with_context(|| format!("reading judge cache {}", path.display()))?;
            if n == 0 {
                break;
            }
            let complete = line.last() == Some(&b'\n');
            if !line.iter().all(|b| b.is_ascii_whitespace()) {
                match parse_line(&line) {
                    Some((k, _)) => {
                        index.entry(digest(&k)).or_insert(Span { offset, len: n as u32 });
                    }
                    None if !complete => {
                        log::info!("judge cache {}: ignoring a truncated last line", path.display());
                    }
                    None => bad += 1,
                }
            }
            torn = !complete;
            offset += n as u64;
        }
        if bad > 0 {
            log::warn!("judge cache {}: skipped {bad} corrupt line(s)", path.display());
        }
        if torn {
            // Terminate the torn line so the next entry starts on its own line.
            file.seek(SeekFrom::End(0)).ok();
            file.write_all(b"\n").with_context(|| format!("writing judge cache {}", path.display()))?;
            offset += 1;
        }
        let reader = File::open(&path).with_context(|| format!("opening judge cache {}", path.display()))?;
        Ok(Cache {
            inner: Arc::new(Inner {
                path,
                index: Mutex::new(index),
                file: Mutex::new(Writer { file, len: offset, unsynced: 0 }),
                reader,
                sync_every: sync_every.max(1),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub fn len(&self) -> usize {
        self.inner.index.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cached answer, read back from the file (`None` when absent or unreadable).
    pub fn get(&self, key: &str) -> Option<Value> {
        let span = *self.inner.index.lock().unwrap_or_else(|e| e.into_inner()).get(&digest(key))?;
        let mut buf = vec![0u8; span.len as usize];
        self.inner.reader.read_exact_at(&mut buf, span.offset).ok()?;
        parse_line(&buf).filter(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.inner.index.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&digest(key))
    }

    /// Stores an answer (appends one line). Only call this with real answers, never failures.
    pub fn put(&self, key: &str, value: &Value) -> Result<()> {
        let d = digest(key);
        let mut line = serde_json::to_string(&serde_json::json!({ "k": key, "v": value }))
            .context("serialising a cache entry")?;
        line.push('\n');
        // Lock order: file, then index.
        let mut w = self.inner.file.lock().unwrap_or_else(|e| e.into_inner());
        if self.contains(key) {
            return Ok(());
        }
        w.file
            .write_all(line.as_bytes())
            .with_context(|| format!("writing judge cache {}", self.inner.path.display()))?;
        let span = Span { offset: w.len, len: line.len() as u32 };
        w.len += line.len() as u64;
        self.inner.index.lock().unwrap_or_else(|e| e.into_inner()).insert(d, span);
        w.unsynced += 1;
        if w.unsynced >= self.inner.sync_every {
            w.file.sync_data().with_context(|| format!("fsync judge cache {}", self.inner.path.display()))?;
            w.unsynced = 0;
        }
        Ok(())
    }

    /// fsyncs pending entries.
    pub fn sync(&self) -> Result<()> {
        let mut w = self.inner.file.lock().unwrap_or_else(|e| e.into_inner());
        if w.unsynced > 0 {
            w.file.sync_data().with_context(|| format!("fsync judge cache {}", self.inner.path.display()))?;
            w.unsynced = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_last_line_is_ignored_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.jsonl");
        {
            let c = Cache::open(&p).unwrap();
            c.put("k1", &serde_json::json!({"p": 1.0})).unwrap();
            c.put("k2", &serde_json::json!({"p": 0.0})).unwrap();
            c.sync().unwrap();
        }
        // Simulate a crash mid-write.
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"k\":\"k3\",\"v\":{\"p\"").unwrap();
        drop(f);
        let c = Cache::open(&p).unwrap();
        assert_eq!(c.len(), 2);
        assert!(c.get("k3").is_none());
        c.put("k3", &serde_json::json!({"p": 0.5})).unwrap();
        c.sync().unwrap();
        let c2 = Cache::open(&p).unwrap();
        assert_eq!(c2.len(), 3);
        assert_eq!(c2.get("k3").unwrap()["p"], 0.5);
    }

    #[test]
    fn hash_parts_is_unambiguous() {
        assert_ne!(hash_parts(&["ab", "c"]), hash_parts(&["a", "bc"]));
        assert_eq!(hash_parts(&["x"]).len(), 64);
    }
}
