//! `--config FILE`: a TOML file whose keys mirror the command-line flags.
//!
//! ```toml
//! [sample]                 # one table per subcommand (`[prompts.import]` for nested ones)
//! k = 5
//! temperature = 0.7
//! include-reference = true # booleans turn a flag on
//! ```
//! Flags given on the command line win over the file. Keys are flag names without the leading
//! dashes (`top_p` and `top-p` are both accepted). The file's values are turned into flags placed
//! right after the subcommand, so clap validates them exactly like typed flags.

use anyhow::{bail, Context, Result};
use std::ffi::OsString;

pub fn expand_args(argv: Vec<OsString>) -> Result<Vec<OsString>> {
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
    // The subcommand path: the leading non-flag words after the program name.
    let mut sub_end = 1;
    let mut subs: Vec<String> = Vec::new();
    let mut i = 1;
    while i < strs.len() {
        let a = &strs[i];
        if a == "--config" {
            i += 2;
            continue;
        }
        if a.starts_with('-') {
            if subs.is_empty() {
                i += 1;
                continue;
            }
            break;
        }
        if subs.len() >= 2 {
            break;
        }
        subs.push(a.clone());
        sub_end = i + 1;
        i += 1;
        if !matches!(a.as_str(), "prompts" | "samples" | "pairs") {
            break;
        }
    }
    if subs.is_empty() {
        return Ok(argv);
    }
    let given: Vec<String> =
        strs.iter().filter(|a| a.starts_with("--")).map(|a| a.trim_start_matches("--").split('=').next().unwrap_or("").to_string()).collect();
    let mut extra: Vec<String> = Vec::new();
    let mut add = |key: &str, v: &toml::Value, origin: &str| -> Result<()> {
        let flag = key.replace('_', "-");
        if given.iter().any(|g| *g == flag) || flag == "config" {
            return Ok(());
        }
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
