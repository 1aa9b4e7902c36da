//! Provenance written into every output's metadata: which stage, which `dno`, the full resolved
//! configuration, and the inputs with content fingerprints.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Files above this size are fingerprinted by their size plus the first and last
/// [`SAMPLE_BYTES`] bytes, so that a multi-GB checkpoint does not cost a full read.
const FULL_HASH_LIMIT: u64 = 256 << 20;
const SAMPLE_BYTES: u64 = 8 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputRef {
    pub path: String,
    /// `sha256:<hex>` of the whole file, or `sha256-sampled:<hex>` for very large files.
    pub fingerprint: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub stage: String,
    pub dno_version: String,
    pub created_at: String,
    pub command: Vec<String>,
    pub config: serde_json::Value,
    pub inputs: Vec<InputRef>,
}

impl Provenance {
    pub fn new(stage: &str, config: &impl Serialize) -> Result<Self> {
        Ok(Provenance {
            stage: stage.to_string(),
            dno_version: env!("CARGO_PKG_VERSION").to_string(),
            created_at: now_rfc3339(),
            command: std::env::args().collect(),
            config: serde_json::to_value(config).context("serialising the stage configuration")?,
            inputs: Vec::new(),
        })
    }

    /// Record inputs (files, or directories whose files are all recorded).
    pub fn add_inputs(&mut self, paths: &[PathBuf]) -> Result<()> {
        for p in paths {
            if p.is_dir() {
                let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                    .with_context(|| format!("{}: cannot list directory", p.display()))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|f| f.is_file() && !is_temp_name(f))
                    .collect();
                files.sort();
                for f in files {
                    self.inputs.push(fingerprint(&f)?);
                }
            } else {
                self.inputs.push(fingerprint(p)?);
            }
        }
        Ok(())
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("provenance serialises")
    }
}

pub(crate) fn is_temp_name(p: &Path) -> bool {
    p.file_name().and_then(|n| n.to_str()).map(|n| n.starts_with('.') || n.ends_with(".tmp")).unwrap_or(false)
}

/// Content fingerprint of one file.
pub fn fingerprint(path: &Path) -> Result<InputRef> {
    let mut f = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let bytes = f.metadata().with_context(|| format!("{}: cannot stat", path.display()))?.len();
    let mut h = Sha256::new();
    let kind = if bytes <= FULL_HASH_LIMIT {
        std::io::copy(&mut f, &mut h).with_context(|| format!("{}: read error", path.display()))?;
        "sha256"
    } else {
        h.update(bytes.to_le_bytes());
        let mut buf = vec![0u8; SAMPLE_BYTES as usize];
        f.read_exact(&mut buf).with_context(|| format!("{}: read error", path.display()))?;
        h.update(&buf);
        f.seek(SeekFrom::End(-(SAMPLE_BYTES as i64)))?;
        f.read_exact(&mut buf).with_context(|| format!("{}: read error", path.display()))?;
        h.update(&buf);
        "sha256-sampled"
    };
    Ok(InputRef { path: path.display().to_string(), fingerprint: format!("{kind}:{}", hex::encode(h.finalize())), bytes })
}

/// Current UTC time as RFC 3339 (seconds precision), without a date-time crate.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's public-domain algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}
