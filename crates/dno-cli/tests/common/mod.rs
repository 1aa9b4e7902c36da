#![allow(dead_code)]
//! Helpers shared by the CLI tests: run the real `dno` binary the way a user does.

use std::path::Path;
use std::process::{Command, Output};

pub fn dno(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dno")).args(args).current_dir(cwd).output().expect("run dno")
}

pub fn ok(args: &[&str], cwd: &Path) -> String {
    let o = dno(args, cwd);
    assert!(o.status.success(), "dno {args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs dno expecting failure; returns stderr and checks it is one `error:` line.
pub fn fails(args: &[&str], cwd: &Path) -> String {
    let o = dno(args, cwd);
    assert!(!o.status.success(), "dno {args:?} should have failed");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    err
}

/// The `dno` binary as a `Command`, for tests that set the environment, spawn or kill it.
pub fn dno_cmd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dno"))
}

/// Runs dno (in the current directory) and asserts that it succeeded.
pub fn run_ok(args: &[&str]) -> Output {
    let out = dno_cmd().args(args).output().expect("run dno");
    assert!(out.status.success(), "dno {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Writes sample rows as a dno samples file.
pub fn write_samples(path: &Path, rows: Vec<dno_data::SampleRow>) {
    let prov = dno_data::Provenance::new("test", &serde_json::json!({})).unwrap();
    let mut w = dno_data::DatasetWriter::<dno_data::SampleRow>::create(path, &prov, false).unwrap();
    w.write_all(rows).unwrap();
    w.finish().unwrap();
}

pub fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// The Python interpreter with Polars (CI sets DNO_PYTHON to its venv).
pub fn python() -> String {
    std::env::var("DNO_PYTHON").unwrap_or_else(|_| "python3".into())
}
