//! Chat templates (Jinja, as in HF `tokenizer_config.json` / GGUF `tokenizer.chat_template`)
//! rendered with minijinja, with Python string-method compatibility from minijinja-contrib.

use anyhow::{bail, Context, Result};
use minijinja::{context, Environment, Error, ErrorKind};

pub struct ChatTemplate {
    source: Option<String>,
    env: Environment<'static>,
    pub bos_token: String,
    pub eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").field("has_template", &self.source.is_some()).finish()
    }
}

fn raise_exception(msg: String) -> Result<String, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, msg))
}

impl ChatTemplate {
    /// `source = None` gives a template whose `render` fails with a clear message.
    pub fn new(source: Option<String>, bos_token: String, eos_token: String) -> Result<Self> {
        let mut env = Environment::new();
        // HF renders with trim_blocks and lstrip_blocks.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", |fmt: String| -> Result<String, Error> {
            // Deterministic: templates use this for "today's date" banners only.
            let _ = fmt;
            Ok("01 Jan 2025".to_string())
        });
        if let Some(src) = &source {
            env.add_template_owned("chat", src.clone()).context("parsing chat template")?;
        }
        Ok(ChatTemplate { source, env, bos_token, eos_token })
    }

    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    /// Renders one exchange: an optional system message and a user message.
    pub fn render(&self, system: Option<&str>, user: &str, add_generation_prompt: bool) -> Result<String> {
        let mut messages = Vec::new();
        if let Some(s) = system {
            messages.push(("system", s));
        }
        messages.push(("user", user));
        self.render_messages(&messages, add_generation_prompt)
    }

    /// Renders a conversation of `(role, content)` messages.
    pub fn render_messages(&self, messages: &[(&str, &str)], add_generation_prompt: bool) -> Result<String> {
        if self.source.is_none() {
            bail!("this model has no chat template");
        }
        let messages: Vec<_> =
            messages.iter().map(|(role, content)| context! { role => *role, content => *content }).collect();
        let tmpl = self.env.get_template("chat").context("chat template")?;
        tmpl.render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.clone(),
            eos_token => self.eos_token.clone(),
        })
        .context("rendering chat template")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_chatml_with_python_methods() {
        let src = "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'].strip() + '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
        let t = ChatTemplate::new(Some(src.into()), String::new(), "<|im_end|>".into()).unwrap();
        let out = t.render(Some("sys"), " hi ", true).unwrap();
        assert_eq!(out, "<|im_start|>system\nsys<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
        let none = ChatTemplate::new(None, String::new(), String::new()).unwrap();
        assert!(none.render(None, "x", true).unwrap_err().to_string().contains("no chat template"));
    }
}
