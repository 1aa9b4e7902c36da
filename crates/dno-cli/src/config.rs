//! `--config FILE`: a TOML file whose keys mirror the command-line flags.
//!
//! ```toml
//! [sample]                 # one table per subcommand (`[prompts.import]` for nested ones)
//! k = 5
//! temperature = 0.7
//! include-reference = true # booleans turn a flag on
//! ```
//! Flags given on the command line win over the file, however they are spelt there (`-k 8`,
//! `--k 8`, `--k=8`): clap parses the command line first and reports, per argument, whether its
//! value came from the command line. Keys are long flag names without the leading dashes
//! (`top_p` and `top-p` are both accepted). The file's values are turned into flags placed right
//! after the subcommand, so clap validates them exactly like typed flags.

use anyhow::{bail, Context, Result};
use clap::parser::ValueSource;
use std::ffi::OsString;

/// `argv` with the flags of the `--config` file (if any) that the command line does not set;
/// `cli` is the program's clap command, which knows every flag.
pub fn expand_args(argv: Vec<OsString>, cli: clap::Command) -> Result<Vec<OsString>> {
    let strs: Vec<String> = argv.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let mut cfg_path = None;
    for (i, a) in strs.iter().enumerate() {
        if a == "--config" {
            cfg_path = strs.get(i + 1).cloned();
        } else if let Some(p) = a.strip_prefix("--config=") {
            cfg_path = Some(p.to_string());
        }
    }
    let Some(path) = cfg_path else { return Ok(argv) };
    let text = std::fs::read_to_string(&path).with_context(|| format!("{path}: cannot read config file"))?;
    let table: toml::Table = toml::from_str(&text).with_context(|| format!("{path}: invalid TOML"))?;
    // The subcommand path (`sample`, `prompts import`): the leading words after the program
    // name (and its global flags) that name subcommands.
    let mut sub_end = 1;
    let mut subs: Vec<String> = Vec::new();
    let mut command = cli.clone();
    let mut i = 1;
    while i < strs.len() {
        let a = &strs[i];
        if a == "--config" {
            i += 2;
            continue;
        }
        if a.starts_with('-') && subs.is_empty() {
            i += 1;
            continue;
        }
        let Some(sub) = command.find_subcommand(a).cloned() else { break };
        command = sub;
        subs.push(a.clone());
        sub_end = i + 1;
        i += 1;
        if !command.has_subcommands() {
            break;
        }
    }
    if subs.is_empty() {
        return Ok(argv);
    }
    // What the command line sets, as clap sees it (required arguments may still be missing
    // here: they can come from the file, so errors are ignored in this first pass; a request
    // for help or the version returns argv as it is).
    let Ok(mut matches) = cli.ignore_errors(true).try_get_matches_from(&argv) else { return Ok(argv) };
    for s in &subs {
        matches = match matches.remove_subcommand() {
            Some((name, m)) if name == *s => m,
            _ => return Ok(argv),
        };
    }
    let mut extra: Vec<String> = Vec::new();
    let mut add = |key: &str, v: &toml::Value, origin: &str| -> Result<()> {
        let name = key.replace('_', "-");
        if name == "config" {
            return Ok(());
        }
        let Some(arg) = command.get_arguments().find(|a| a.get_long() == Some(name.as_str()) || a.get_all_aliases().is_some_and(|al| al.contains(&name.as_str())))
        else {
            bail!("{path}: key '{origin}{key}' is not a flag of `dno {}`", subs.join(" "));
        };
        if matches.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine) {
            return Ok(());
        }
        let flag = arg.get_long().expect("found by its long name");
        match v {
            toml::Value::Boolean(true) => extra.push(format!("--{flag}")),
            toml::Value::Boolean(false) => {}
            toml::Value::String(s) => extra.push(format!("--{flag}={s}")),
            toml::Value::Integer(n) => extra.push(format!("--{flag}={n}")),
            toml::Value::Float(x) => extra.push(format!("--{flag}={x}")),
            toml::Value::Array(items) => {
                for it in items {
                    match it {
                        toml::Value::String(s) => extra.push(format!("--{flag}={s}")),
                        other => extra.push(format!("--{flag}={other}")),
                    }
                }
            }
            _ => bail!("{path}: key '{origin}{key}' must be a string, number, boolean or array"),
        }
        Ok(())
    };
    let section = subs.join(".");
    if let Some((k, _)) = table.iter().find(|(_, v)| !v.is_table()) {
        bail!("{path}: key '{k}' must sit in a table named after the subcommand, e.g. [sample]");
    }
    let mut node = Some(&table);
    for s in &subs {
        node = node.and_then(|t| t.get(s)).and_then(|v| v.as_table());
    }
    if let Some(t) = node {
        for (k, v) in t {
            if !v.is_table() {
                add(k, v, &format!("{section}."))?;
            }
        }
    }
    let mut out: Vec<OsString> = argv[..sub_end].to_vec();
    out.extend(extra.into_iter().map(OsString::from));
    out.extend(argv[sub_end..].iter().cloned());
    Ok(out)
}
