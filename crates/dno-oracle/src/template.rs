//! Prompt templates: plain text with `{name}` placeholders.
//!
//! Rendering is a single pass over the template: only the known names are replaced, every other
//! brace is left as it is (so templates can show JSON examples), and text substituted in is never
//! scanned again (a response containing `{response_b}` stays literal).

use anyhow::{bail, Context, Result};
use std::path::Path;

/// Loads a template from `path`, or returns `default` when `path` is `None`.
/// `required` placeholders must appear in it.
pub fn load(path: Option<&Path>, default: &str, required: &[&str]) -> Result<String> {
    let text = match path {
        Some(p) => std::fs::read_to_string(p).with_context(|| format!("reading judge template {}", p.display()))?,
        None => default.to_string(),
    };
    let missing: Vec<String> =
        required.iter().filter(|r| !text.contains(&format!("{{{r}}}"))).map(|r| format!("{{{r}}}")).collect();
    if !missing.is_empty() {
        let origin = path.map(|p| p.display().to_string()).unwrap_or_else(|| "built-in template".into());
        bail!("judge template {origin} lacks the placeholder(s) {}", missing.join(", "));
    }
    Ok(text)
}

/// Replaces `{name}` by its value for each `(name, value)` in `vars`, in one pass.
pub fn render(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + vars.iter().map(|v| v.1.len()).sum::<usize>());
    let mut rest = template;
    while let Some(pos) = rest.find('{') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let hit = after.find('}').and_then(|end| {
            let name = &after[..end];
            vars.iter().find(|(n, _)| *n == name).map(|(_, v)| (end, *v))
        });
        match hit {
            Some((end, value)) => {
                out.push_str(value);
                rest = &after[end + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_is_single_pass_and_keeps_unknown_braces() {
        let t = "Q: {prompt}\nA: {response_a}\nB: {response_b}\nJSON: {\"1\": {\"score\": 3}} {unknown}";
        let r = render(t, &[("prompt", "p{response_b}"), ("response_a", "x"), ("response_b", "y")]);
        assert_eq!(r, "Q: p{response_b}\nA: x\nB: y\nJSON: {\"1\": {\"score\": 3}} {unknown}");
    }

    #[test]
    fn load_checks_placeholders() {
        assert!(load(None, "{prompt} {response_a}", &["prompt", "response_b"]).is_err());
        assert!(load(None, "{prompt} {response_b}", &["prompt", "response_b"]).is_ok());
    }
}
