//! One writer per output: a stage holds an advisory lock (`flock`) on `<out>.lock` beside its
//! output (a file, or a directory for `dno train`) for as long as it runs. A second process
//! writing the same output is refused with one line naming the holder's pid; the lock goes with
//! its holder's file descriptor, so a writer killed with SIGKILL never leaves a stale lock that
//! blocks a rerun (the left-over file is reused).

use anyhow::{bail, Context, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Held while a stage writes its output; dropping it removes the lock file and releases the lock.
#[derive(Debug)]
pub struct OutputLock {
    path: PathBuf,
    file: File,
}

impl OutputLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Removed while still locked: a process that opened the file meanwhile notices that the
        // path no longer names the file it locked, and starts over.
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

/// `<out>.lock`, beside the output.
pub fn lock_path(out: &Path) -> PathBuf {
    let name = out.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    out.with_file_name(format!("{name}.lock"))
}

/// Take the lock of `out` or fail with `OUT is being written by pid N (lock PATH, host H); ...`.
pub fn lock_output(out: &Path) -> Result<OutputLock> {
    let path = lock_path(out);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create directory", dir.display()))?;
    }
    loop {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("{}: cannot open the output lock", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let (pid, host) = parse_holder(&holder);
                bail!(
                    "{} is being written by pid {pid} (lock {}, host {host}); wait for it to finish or stop it, then rerun",
                    out.display(),
                    path.display()
                );
            }
            Err(TryLockError::Error(e)) => return Err(e).with_context(|| format!("{}: cannot lock", path.display())),
        }
        if !names_same_file(&path, &file) {
            continue; // its holder removed it between our open and our lock
        }
        let me = format!("pid {}\nhost {}\n", std::process::id(), hostname());
        file.set_len(0)
            .and_then(|_| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(me.as_bytes()))
            .and_then(|_| file.flush())
            .with_context(|| format!("{}: cannot write the output lock", path.display()))?;
        return Ok(OutputLock { path, file });
    }
}

/// (pid, host) from a lock file's text; `?` for what is missing (a holder still writing it).
fn parse_holder(text: &str) -> (String, String) {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "?".into())
    };
    (field("pid "), field("host "))
}

#[cfg(unix)]
fn names_same_file(path: &Path, file: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(path), file.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn names_same_file(path: &Path, _file: &File) -> bool {
    path.exists()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_with_the_holder_pid_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("sub").join("prefs.parquet");
        let l = lock_output(&out).unwrap();
        assert_eq!(l.path(), dir.path().join("sub").join("prefs.parquet.lock"));
        // flock locks belong to open file descriptions: a second open in the same process conflicts.
        let e = lock_output(&out).unwrap_err().to_string();
        assert!(e.contains(&format!("is being written by pid {}", std::process::id())), "{e}");
        assert!(e.contains("prefs.parquet.lock"), "{e}");
        drop(l);
        assert!(!lock_path(&out).exists(), "lock file removed");
        // A left-over lock file (as a SIGKILLed writer leaves) does not block.
        std::fs::write(lock_path(&out), "pid 999999\nhost x\n").unwrap();
        let l = lock_output(&out).unwrap();
        assert!(std::fs::read_to_string(l.path()).unwrap().contains(&format!("pid {}", std::process::id())));
    }
}
