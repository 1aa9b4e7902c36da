//! Chat templates (Jinja, as in HF `tokenizer_config.json` / GGUF `tokenizer.chat_template`)
//! rendered with minijinja, with Python string-method compatibility from minijinja-contrib,
//! and [`encode_for_training`]: a prompt and a response tokenised the way `dno train` trains on
//! them, closed with the template's own end-of-turn marker when the response ended.

use crate::tokenizer::Tok;
use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, FixedOffset, Local};
use minijinja::{context, Environment, Error, ErrorKind};
use std::sync::atomic::{AtomicBool, Ordering};

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

/// Python's `time.strftime(fmt)` for the directives chat templates use (`%d %b %Y %m %B %H %M %S
/// %y %A %a %j %%` and the rest of C89's set, in the C locale); an unknown directive is an
/// error rather than literal text. Uses chrono, already in the build through arrow/parquet.
pub fn strftime(fmt: &str, t: &DateTime<FixedOffset>) -> Result<String> {
    let items = chrono::format::StrftimeItems::new(fmt).parse().map_err(|e| anyhow!("strftime format {fmt:?}: {e}"))?;
    Ok(t.format_with_items(items.into_iter()).to_string())
}

/// What `strftime_now` reads: the local clock (as transformers' `datetime.now()`), or a fixed
/// time for reproducible renderings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Clock {
    Local,
    Fixed(DateTime<FixedOffset>),
}

impl Clock {
    fn now(self) -> DateTime<FixedOffset> {
        match self {
            Clock::Local => Local::now().fixed_offset(),
            Clock::Fixed(t) => t,
        }
    }
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
        if let Some(src) = &source {
            env.add_template_owned("chat", src.clone()).context("parsing chat template")?;
        }
        Ok(ChatTemplate { source, env, bos_token, eos_token }.with_clock(Clock::Local))
    }

    /// Sets the clock of `strftime_now` (Llama 3 templates print today's date with it).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.env.add_function("strftime_now", move |fmt: String| -> Result<String, Error> {
            strftime(&fmt, &clock.now()).map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))
        });
        self
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

    /// What the template writes after an assistant message's content when it closes the turn:
    /// `<|im_end|>\n` for ChatML, `<|eot_id|>` for Llama 3, ` </s>` for Llama 2. Found by
    /// rendering `messages` followed by an assistant message whose content is a marker, and
    /// taking the text after the marker (the assistant message is the last one, so that is the
    /// rest of the rendering). `None` when the template does not render assistant messages.
    pub fn assistant_turn_end(&self, messages: &[(&str, &str)]) -> Result<Option<String>> {
        const MARKER: &str = "DNO-ASSISTANT-CONTENT-7f3a9c";
        let mut conv = messages.to_vec();
        conv.push(("assistant", MARKER));
        let full = self.render_messages(&conv, false)?;
        Ok(full.rfind(MARKER).map(|i| full[i + MARKER.len()..].to_string()))
    }
}

static WARNED_NO_TURN_END: AtomicBool = AtomicBool::new(false);

/// A prompt conversation (`messages`, rendered with the generation prompt) and one assistant
/// `response`, tokenised as `dno train` trains on them: `(prompt tokens, response tokens)`.
///
/// When the response `ended` (it was not cut off by the token limit), the template's end-of-turn
/// text ([`ChatTemplate::assistant_turn_end`]) follows it, so prompt + response equal the tokens
/// of the full conversation as transformers' `apply_chat_template` renders it, including the
/// newline ChatML puts after `<|im_end|>`. That newline is trained on, as in TRL, whose
/// preference/SFT data take the completion as everything the full conversation adds to the
/// prompt; unlike TRL's DPO, no extra EOS id is appended after the template's end of turn. A
/// truncated response gets no end-of-turn marker: the policy must not learn to stop there.
///
/// A template that writes nothing after an assistant message (or drops assistant messages)
/// has no end-of-turn text; the tokenizer's EOS token is appended instead (warned once), or it
/// is an error when the tokenizer has none.
pub fn encode_for_training(tok: &Tok, chat: &ChatTemplate, messages: &[(&str, &str)], response: &str, ended: bool) -> Result<(Vec<u32>, Vec<u32>)> {
    let prompt = tok.encode(&chat.render_messages(messages, true)?, false)?;
    if !ended {
        return Ok((prompt, tok.encode(response, false)?));
    }
    match chat.assistant_turn_end(messages)?.filter(|end| !end.trim().is_empty()) {
        Some(end) => Ok((prompt, tok.encode(&format!("{response}{end}"), false)?)),
        None => {
            let (eos, id) = tok
                .eos_token
                .as_deref()
                .and_then(|t| Some((t, tok.token_to_id(t)?)))
                .ok_or_else(|| anyhow!("the chat template writes no end of turn after an assistant message, and the tokenizer has no EOS token to end responses with"))?;
            if !WARNED_NO_TURN_END.swap(true, Ordering::Relaxed) {
                log::warn!("the chat template writes no end of turn after an assistant message; ended responses get the tokenizer's EOS token {eos}");
            }
            let mut r = tok.encode(response, false)?;
            r.push(id);
            Ok((prompt, r))
        }
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
        assert_eq!(t.assistant_turn_end(&[("user", "hi")]).unwrap().as_deref(), Some("<|im_end|>\n"));
        let drops = ChatTemplate::new(Some("{% for m in messages %}{% if m.role == 'user' %}{{ m.content }}{% endif %}{% endfor %}".into()), String::new(), String::new()).unwrap();
        assert_eq!(drops.assistant_turn_end(&[("user", "hi")]).unwrap(), None);
    }

    fn at(s: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(s).unwrap()
    }

    #[test]
    fn strftime_follows_python_for_the_directives_templates_use() {
        // 2024-02-29 was a Thursday, day 60 of a leap year; expected strings from Python's
        // datetime(2024, 2, 29, 7, 5, 9).strftime(...).
        let t = at("2024-02-29T07:05:09+00:00");
        assert_eq!(strftime("%d %b %Y", &t).unwrap(), "29 Feb 2024");
        assert_eq!(strftime("%m/%d/%y %H:%M:%S", &t).unwrap(), "02/29/24 07:05:09");
        assert_eq!(strftime("%A %a %B %j %%", &t).unwrap(), "Thursday Thu February 060 %");
        assert_eq!(strftime("%d %B %Y", &at("1999-12-31T23:59:59-05:00")).unwrap(), "31 December 1999");
        assert_eq!(strftime("%j", &at("2023-12-31T12:00:00+00:00")).unwrap(), "365");
        assert!(strftime("%Q", &t).unwrap_err().to_string().contains("%Q"));
    }

    #[test]
    fn strftime_now_reads_the_clock() {
        let src = "Today Date: {{ strftime_now('%d %b %Y') }}";
        let fixed = ChatTemplate::new(Some(src.into()), String::new(), String::new()).unwrap().with_clock(Clock::Fixed(at("2026-07-04T10:00:00+02:00")));
        assert_eq!(fixed.render_messages(&[], false).unwrap(), "Today Date: 04 Jul 2026");
        // The default clock is today's local date (re-read around the render so midnight cannot flake it).
        let live = ChatTemplate::new(Some(src.into()), String::new(), String::new()).unwrap();
        let before = strftime("%d %b %Y", &Local::now().fixed_offset()).unwrap();
        let out = live.render_messages(&[], false).unwrap();
        let after = strftime("%d %b %Y", &Local::now().fixed_offset()).unwrap();
        assert!(out == format!("Today Date: {before}") || out == format!("Today Date: {after}"), "{out}");
        let bad = ChatTemplate::new(Some("{{ strftime_now('%Q') }}".into()), String::new(), String::new()).unwrap();
        assert!(format!("{:#}", bad.render_messages(&[], false).unwrap_err()).contains("%Q"));
    }
}
