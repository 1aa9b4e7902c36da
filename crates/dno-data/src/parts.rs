//! Resumable stage output: completed work is saved as atomic part files in `<out>.parts/`, and
//! the final file appears (atomically) only once everything is done. A rerun of the same command
//! after a crash or SIGKILL reads the parts back and continues where it stopped.

use crate::io::{write_atomic, DatasetReader, DatasetWriter};
use crate::provenance::Provenance;
use crate::rows::Row;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

pub struct PartStore {
    dir: PathBuf,
    next: usize,
}

const RUN_FILE: &str = "run.json";

impl PartStore {
    /// Open (or create) the part directory for `out`. `run_key` fingerprints everything that
    /// determines the output (inputs and settings); parts left by a run with another key are
    /// refused rather than mixed in, unless `force` is set, in which case they are discarded.
    pub fn open(out: &Path, run_key: &str, force: bool) -> Result<Self> {
        let name = out.file_name().and_then(|n| n.to_str()).unwrap_or("out");
        let dir = out.with_file_name(format!("{name}.parts"));
        let run_file = dir.join(RUN_FILE);
        if dir.exists() {
            let old = std::fs::read_to_string(&run_file).unwrap_or_default();
            if old.trim() != run_key {
                if force {
                    std::fs::remove_dir_all(&dir).with_context(|| format!("{}: cannot remove", dir.display()))?;
                } else {
                    bail!(
                        "{}: holds a partial run with different inputs or settings; rerun the original command to resume it, or pass --force to discard it",
                        dir.display()
                    );
                }
            }
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create directory", dir.display()))?;
        if !run_file.exists() {
            write_atomic(&run_file, run_key.as_bytes())?;
        }
        let next = Self::part_files(&dir)?.len();
        Ok(PartStore { dir, next })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn part_files(dir: &Path) -> Result<Vec<PathBuf>> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("{}: cannot list", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("part-") && n.ends_with(".parquet")))
            .collect();
        v.sort();
        Ok(v)
    }

    /// Rows saved by earlier (possibly killed) runs.
    pub fn completed<T: Row>(&self) -> Result<Vec<T>> {
        let files = Self::part_files(&self.dir)?;
        if files.is_empty() {
            return Ok(Vec::new());
        }
        DatasetReader::open(T::DATASET, &files)?.read_all()
    }

    /// Save one completed batch atomically.
    pub fn save<T: Row>(&mut self, rows: Vec<T>, provenance: &Provenance) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let path = self.dir.join(format!("part-{:06}.parquet", self.next));
        let mut w = DatasetWriter::<T>::create(&path, provenance, false)?;
        w.write_all(rows)?;
        w.finish()?;
        self.next += 1;
        Ok(())
    }

    /// Remove the part directory once the final output is in place.
    pub fn cleanup(self) -> Result<()> {
        std::fs::remove_dir_all(&self.dir).with_context(|| format!("{}: cannot remove", self.dir.display()))
    }
}
