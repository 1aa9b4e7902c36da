//! Async client for OpenAI-compatible `/v1/chat/completions` and `/v1/completions` servers
//! (OpenAI, vLLM, llama.cpp server, SGLang, TGI, Ollama...).
//!
//! What it adds over a bare HTTP call:
//! * bounded concurrency (a semaphore; `max_concurrency` requests in flight at most);
//! * requests-per-minute and tokens-per-minute limiters (token buckets; tokens are estimated as
//!   `chars/4 + max_tokens` before the call and corrected from `usage` after it);
//! * retries with exponential backoff and jitter on 408 / 409 / 429 / 5xx, timeouts, connection
//!   errors, unreadable bodies and 200 answers of the wrong shape (no `choices`, a choice without
//!   `message`, a null `content`), honouring a `Retry-After` header (seconds); such an answer is a
//!   failed attempt, never an empty response;
//! * several servers (`base_url` = `A,B,C`): requests go round-robin, a retry goes to another
//!   server than the one that just failed, and a server whose last [`SERVER_DOWN_AFTER`] attempts
//!   failed to connect (or timed out) is left out of the rotation, probed again every
//!   [`SERVER_PROBE_SECS`] seconds;
//! * a stop after `max_consecutive_failures` requests in a row failed for good, or after
//!   `max_consecutive_failures × (max_retries + 1)` HTTP attempts in a row failed for reasons other
//!   than rate limiting (so a dead server is noticed even while a long queue of first attempts is
//!   still waiting): every later call returns a [`Stopped`] error at once;
//! * [`Accounting`]: calls, HTTP attempts, retries, failures, prompt/completion tokens, wall time.
//!
//! The API key is read from the environment variable *named* by [`ClientConfig::api_key_env`]
//! (default `OPENAI_API_KEY`). It is kept in memory only, never logged, printed (Debug redacts it)
//! or written anywhere. A missing key is fine: no `Authorization` header is sent (local servers).

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Client settings. `Default` gives a local-server friendly configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientConfig {
    /// e.g. `https://api.openai.com/v1` or `http://127.0.0.1:8000/v1` (the `/chat/completions`
    /// path is appended; a trailing `/` is fine). Several servers serving the same model:
    /// comma-separated, used round-robin.
    pub base_url: String,
    pub model: String,
    /// NAME of the environment variable holding the API key (never the key itself).
    pub api_key_env: String,
    /// Per-request timeout (connect + response + body).
    pub timeout_secs: f64,
    /// Requests in flight at most, over all servers together.
    pub max_concurrency: usize,
    /// Requests per minute; `None` = unlimited.
    pub rpm: Option<u32>,
    /// Tokens (prompt + completion) per minute; `None` = unlimited.
    pub tpm: Option<u32>,
    /// Retries after the first attempt (so `max_retries + 1` attempts at most).
    pub max_retries: u32,
    /// First backoff delay; doubles per retry, capped at `backoff_max_secs`, with ±50% jitter.
    pub backoff_base_secs: f64,
    pub backoff_max_secs: f64,
    /// Longest `Retry-After` honoured (longer values are capped to this).
    pub max_retry_after_secs: f64,
    /// Stop (every later call fails with [`Stopped`]) after this many requests in a row failed
    /// after all their retries. 0 disables the stop.
    pub max_consecutive_failures: u32,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            base_url: "http://127.0.0.1:8000/v1".into(),
            model: "default".into(),
            api_key_env: "OPENAI_API_KEY".into(),
            timeout_secs: 120.0,
            max_concurrency: 16,
            rpm: None,
            tpm: None,
            max_retries: 6,
            backoff_base_secs: 1.0,
            backoff_max_secs: 60.0,
            max_retry_after_secs: 300.0,
            max_consecutive_failures: 20,
        }
    }
}

/// Chat message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn system(s: impl Into<String>) -> Self {
        Message { role: "system".into(), content: s.into() }
    }
    pub fn user(s: impl Into<String>) -> Self {
        Message { role: "user".into(), content: s.into() }
    }
    pub fn assistant(s: impl Into<String>) -> Self {
        Message { role: "assistant".into(), content: s.into() }
    }
}

/// Sampling parameters; `None` fields are not sent (the server's default applies).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    pub n: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    /// Sent as the top-level `top_k` extra field that vLLM, SGLang and llama.cpp's server accept
    /// (OpenAI itself rejects it).
    pub top_k: Option<u32>,
    /// Sent as the top-level `min_p` extra field (vLLM, SGLang, llama.cpp's server).
    pub min_p: Option<f64>,
    pub max_tokens: Option<u32>,
    pub seed: Option<u64>,
    /// Return the chosen tokens' log-probabilities.
    pub logprobs: bool,
    /// With `logprobs`: how many alternatives per position (OpenAI allows up to 20).
    pub top_logprobs: Option<u32>,
    pub stop: Vec<String>,
}

/// One generated token with its log-probability and the top alternatives at its position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f64,
    pub top: Vec<(String, f64)>,
}

/// One returned choice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    pub index: u32,
    pub text: String,
    pub finish_reason: Option<String>,
    /// Present when logprobs were requested and the server returned them.
    pub logprobs: Option<Vec<TokenLogprob>>,
}

/// A successful response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    pub choices: Vec<Choice>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// Usage counters. `Accounting::delta` gives the cost of a span of work.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Accounting {
    /// Logical requests started (one per `chat`/`complete` call).
    pub calls: u64,
    /// HTTP attempts sent (calls + retries).
    pub http_attempts: u64,
    pub retries: u64,
    /// Calls that failed after all retries.
    pub failures: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Answers served from the cache (filled by the annotate driver).
    pub cache_hits: u64,
    /// Judge answers that could not be parsed and were asked again (filled by the judge).
    pub parse_retries: u64,
    /// Wall-clock seconds (filled by the annotate driver for its run).
    pub wall_secs: f64,
}

impl Accounting {
    /// `self - earlier` for the counters (wall time is left at 0).
    pub fn delta(&self, earlier: &Accounting) -> Accounting {
        Accounting {
            calls: self.calls - earlier.calls,
            http_attempts: self.http_attempts - earlier.http_attempts,
            retries: self.retries - earlier.retries,
            failures: self.failures - earlier.failures,
            prompt_tokens: self.prompt_tokens - earlier.prompt_tokens,
            completion_tokens: self.completion_tokens - earlier.completion_tokens,
            cache_hits: self.cache_hits - earlier.cache_hits,
            parse_retries: self.parse_retries - earlier.parse_retries,
            wall_secs: 0.0,
        }
    }
}

/// Error returned by every call once the client has stopped after too many consecutive failures.
#[derive(Debug, Clone)]
pub struct Stopped(pub String);

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Stopped {}

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    http_attempts: AtomicU64,
    retries: AtomicU64,
    failures: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    parse_retries: AtomicU64,
}

/// Token bucket: `capacity` units, refilled at `rate` units per second.
struct Bucket {
    capacity: f64,
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    fn per_minute(limit: u32) -> Bucket {
        let capacity = limit.max(1) as f64;
        Bucket { capacity, rate: capacity / 60.0, state: Mutex::new((capacity, Instant::now())) }
    }

    async fn acquire(&self, amount: f64) {
        let amount = amount.min(self.capacity);
        loop {
            let wait = {
                let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * self.rate).min(self.capacity);
                s.1 = now;
                if s.0 >= amount {
                    s.0 -= amount;
                    return;
                }
                (amount - s.0) / self.rate
            };
            tokio::time::sleep(Duration::from_secs_f64(wait.clamp(0.001, 60.0))).await;
        }
    }

    /// Correct a reservation once the real cost is known (may go negative: later calls wait).
    fn adjust(&self, extra: f64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.0 = (s.0 - extra).min(self.capacity);
    }
}

/// A server is left out of the rotation after this many attempts in a row that failed to
/// connect, timed out or lost the connection (only when there are several servers).
pub const SERVER_DOWN_AFTER: u32 = 3;
/// A server out of the rotation gets one probe request this often (seconds).
pub const SERVER_PROBE_SECS: f64 = 30.0;

/// One server of the rotation.
struct Server {
    /// Base URL without the trailing `/`.
    base: String,
    /// Attempts in a row that failed before any HTTP answer (connect error, timeout, reset).
    transport_failures: AtomicU64,
    /// Out of the rotation until then (`None` = in it).
    down_until: Mutex<Option<Instant>>,
}

/// The shared client. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct Client {
    cfg: ClientConfig,
    servers: Vec<Server>,
    next_server: AtomicU64,
    http: reqwest::Client,
    api_key: Option<String>,
    sem: Semaphore,
    rpm: Option<Bucket>,
    tpm: Option<Bucket>,
    counters: Counters,
    consecutive_failures: AtomicU64,
    consecutive_attempt_failures: AtomicU64,
    stopped: AtomicBool,
    stop_reason: Mutex<String>,
    jitter_state: AtomicU64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.cfg.base_url)
            .field("model", &self.cfg.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// How an attempt failed.
enum AttemptError {
    /// Worth another try; `retry_after` from the server when it said so; `transport` when no
    /// HTTP answer came (connect error, timeout, dropped connection).
    Retryable { msg: String, retry_after: Option<Duration>, rate_limited: bool, transport: bool },
    Fatal(String),
    /// The client stopped while this attempt waited for a slot.
    Stopped,
}

impl Client {
    /// Build a client. Reads the API key from `cfg.api_key_env` (absent = no auth header).
    pub fn new(cfg: ClientConfig) -> Result<Client> {
        let servers: Vec<Server> = cfg
            .base_url
            .split(',')
            .map(|u| u.trim().trim_end_matches('/'))
            .filter(|u| !u.is_empty())
            .map(|u| Server { base: u.to_string(), transport_failures: AtomicU64::new(0), down_until: Mutex::new(None) })
            .collect();
        if servers.is_empty() {
            bail!("client: base_url is empty");
        }
        if cfg.max_concurrency == 0 {
            bail!("client: max_concurrency must be at least 1");
        }
        if !cfg.timeout_secs.is_finite() || cfg.timeout_secs <= 0.0 {
            bail!("client: timeout_secs must be a finite number > 0 (got {})", cfg.timeout_secs);
        }
        for (name, v) in [
            ("backoff_base_secs", cfg.backoff_base_secs),
            ("backoff_max_secs", cfg.backoff_max_secs),
            ("max_retry_after_secs", cfg.max_retry_after_secs),
        ] {
            if !v.is_finite() || v < 0.0 {
                bail!("client: {name} must be a finite number >= 0 (got {v})");
            }
        }
        let api_key = std::env::var(&cfg.api_key_env).ok().filter(|k| !k.trim().is_empty());
        if api_key.is_none() {
            log::info!("client: env var {} not set; sending requests without an API key", cfg.api_key_env);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs_f64(cfg.timeout_secs.min(30.0)))
            .pool_max_idle_per_host(cfg.max_concurrency.max(8))
            .build()
            .context("client: building the HTTP client")?;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9);
        Ok(Client {
            servers,
            next_server: AtomicU64::new(0),
            sem: Semaphore::new(cfg.max_concurrency),
            rpm: cfg.rpm.map(Bucket::per_minute),
            tpm: cfg.tpm.map(Bucket::per_minute),
            http,
            api_key,
            counters: Counters::default(),
            consecutive_failures: AtomicU64::new(0),
            consecutive_attempt_failures: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            stop_reason: Mutex::new(String::new()),
            jitter_state: AtomicU64::new(seed | 1),
            cfg,
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// Snapshot of the usage counters since the client was built.
    pub fn accounting(&self) -> Accounting {
        let c = &self.counters;
        Accounting {
            calls: c.calls.load(Ordering::Relaxed),
            http_attempts: c.http_attempts.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            prompt_tokens: c.prompt_tokens.load(Ordering::Relaxed),
            completion_tokens: c.completion_tokens.load(Ordering::Relaxed),
            cache_hits: 0,
            parse_retries: c.parse_retries.load(Ordering::Relaxed),
            wall_secs: 0.0,
        }
    }

    /// Used by the judge to count answers it had to ask again.
    pub(crate) fn note_parse_retry(&self) {
        self.counters.parse_retries.fetch_add(1, Ordering::Relaxed);
    }

    /// `POST {base_url}/chat/completions`. An answer without `choices`, a choice without a
    /// `message` or with a null `content` is a failed attempt (retried), never an empty text.
    pub async fn chat(&self, messages: &[Message], sampling: &Sampling) -> Result<Completion> {
        let mut body = json!({ "model": self.cfg.model, "messages": messages });
        put_sampling(&mut body, sampling, true);
        let chars: usize = messages.iter().map(|m| m.content.len()).sum();
        self.post("chat/completions", true, &body, chars, sampling).await
    }

    /// `POST {base_url}/completions` with a raw prompt (no chat template applied by the server).
    pub async fn complete(&self, prompt: &str, sampling: &Sampling) -> Result<Completion> {
        let mut body = json!({ "model": self.cfg.model, "prompt": prompt });
        put_sampling(&mut body, sampling, false);
        self.post("completions", false, &body, prompt.len(), sampling).await
    }

    fn check_stopped(&self) -> Result<()> {
        if self.stopped.load(Ordering::Relaxed) {
            let reason = self.stop_reason.lock().unwrap_or_else(|e| e.into_inner()).clone();
            return Err(anyhow!(Stopped(reason)));
        }
        Ok(())
    }

    /// The server for the next attempt: round-robin over the servers in the rotation, other
    /// than `avoid` (the one that just failed) when there is another. A server out of the
    /// rotation whose probe time has come is taken first (and its next probe scheduled); when
    /// every server is out, the one due back first.
    fn pick_server(&self, avoid: Option<usize>) -> usize {
        let n = self.servers.len();
        if n == 1 {
            return 0;
        }
        let now = Instant::now();
        let mut live = Vec::with_capacity(n);
        let mut soonest: Option<(usize, Instant)> = None;
        for (i, s) in self.servers.iter().enumerate() {
            let mut down = s.down_until.lock().unwrap_or_else(|e| e.into_inner());
            match *down {
                None => live.push(i),
                Some(t) if t <= now && Some(i) != avoid => {
                    *down = Some(now + Duration::from_secs_f64(SERVER_PROBE_SECS));
                    log::info!("{}: probing a server out of the rotation", s.base);
                    return i;
                }
                Some(t) => {
                    if soonest.is_none_or(|(_, u)| t < u) {
                        soonest = Some((i, t));
                    }
                }
            }
        }
        if live.len() > 1 {
            live.retain(|&i| Some(i) != avoid);
        }
        let turn = self.next_server.fetch_add(1, Ordering::Relaxed) as usize;
        match (live.is_empty(), soonest) {
            (false, _) => live[turn % live.len()],
            (true, Some((i, _))) => i,
            (true, None) => turn % n,
        }
    }

    /// Bookkeeping of the rotation after an attempt on server `i`.
    fn note_server(&self, i: usize, transport_failure: bool) {
        if self.servers.len() == 1 {
            return;
        }
        let s = &self.servers[i];
        if !transport_failure {
            s.transport_failures.store(0, Ordering::Relaxed);
            let mut down = s.down_until.lock().unwrap_or_else(|e| e.into_inner());
            if down.take().is_some() {
                log::warn!("{}: answering again; back in the rotation", s.base);
            }
            return;
        }
        let k = s.transport_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if k >= SERVER_DOWN_AFTER as u64 {
            let mut down = s.down_until.lock().unwrap_or_else(|e| e.into_inner());
            if down.is_none() {
                log::warn!(
                    "{}: {k} attempts in a row failed to connect or timed out; out of the rotation (probed every {SERVER_PROBE_SECS} s)",
                    s.base
                );
            }
            *down = Some(Instant::now() + Duration::from_secs_f64(SERVER_PROBE_SECS));
        }
    }

    async fn post(&self, path: &str, chat: bool, body: &Value, prompt_chars: usize, sampling: &Sampling) -> Result<Completion> {
        self.check_stopped()?;
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        let est_tokens = (prompt_chars / 4) as f64
            + sampling.max_tokens.unwrap_or(256) as f64 * sampling.n.unwrap_or(1) as f64;
        let mut attempt: u32 = 0;
        let mut last_server: Option<usize> = None;
        loop {
            self.check_stopped()?;
            let server = self.pick_server(last_server);
            last_server = Some(server);
            let url = format!("{}/{path}", self.servers[server].base);
            let result = self.attempt(&url, chat, body, est_tokens).await;
            let err = match result {
                Ok(v) => {
                    self.note_server(server, false);
                    self.consecutive_failures.store(0, Ordering::Relaxed);
                    self.consecutive_attempt_failures.store(0, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(e) => e,
            };
            let (msg, retry_after, fatal) = match err {
                AttemptError::Retryable { msg, retry_after, rate_limited, transport } => {
                    self.note_server(server, transport);
                    if !rate_limited {
                        self.note_failed_attempt(&url, &msg);
                    }
                    (msg, retry_after, false)
                }
                AttemptError::Fatal(msg) => (msg, None, true),
                AttemptError::Stopped => {
                    self.check_stopped()?;
                    continue;
                }
            };
            if fatal || attempt >= self.cfg.max_retries {
                let msg = if fatal {
                    format!("{url}: {msg}")
                } else {
                    format!("{url}: {msg} (gave up after {} attempts)", attempt + 1)
                };
                self.record_failure(&msg);
                return Err(anyhow!(msg));
            }
            let delay = match retry_after {
                Some(d) => d.min(Duration::from_secs_f64(self.cfg.max_retry_after_secs)),
                None => self.backoff(attempt),
            };
            log::debug!("{url}: {msg}; retry {} in {:.2}s", attempt + 1, delay.as_secs_f64());
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    fn note_failed_attempt(&self, url: &str, msg: &str) {
        let n = self.consecutive_attempt_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let limit = self.cfg.max_consecutive_failures as u64 * (self.cfg.max_retries as u64 + 1);
        if limit > 0 && n >= limit {
            self.stop(format!(
                "stopping: {n} consecutive HTTP attempts to {} failed (no success in between); last error: {url}: {msg}",
                self.cfg.base_url
            ));
        }
    }

    fn record_failure(&self, msg: &str) {
        self.counters.failures.fetch_add(1, Ordering::Relaxed);
        let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let limit = self.cfg.max_consecutive_failures as u64;
        if limit > 0 && n >= limit {
            self.stop(format!(
                "stopping: {n} consecutive requests to {} failed after all retries; last error: {msg}",
                self.cfg.base_url
            ));
        }
    }

    fn stop(&self, reason: String) {
        // The reason is written before the flag (under the lock), so readers never see it empty.
        let mut r = self.stop_reason.lock().unwrap_or_else(|e| e.into_inner());
        if !self.stopped.load(Ordering::SeqCst) {
            log::error!("{reason}");
            *r = reason;
            self.stopped.store(true, Ordering::SeqCst);
        }
    }

    /// Exponential backoff with ±50% jitter.
    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.cfg.backoff_base_secs.max(0.0) * 2f64.powi(attempt.min(30) as i32);
        let capped = base.min(self.cfg.backoff_max_secs.max(0.0));
        let x = self.jitter_state.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        let u = (crate::pairs::splitmix64(x) >> 11) as f64 / (1u64 << 53) as f64;
        Duration::from_secs_f64(capped * (0.5 + u))
    }

    async fn attempt(&self, url: &str, chat: bool, body: &Value, est_tokens: f64) -> std::result::Result<Completion, AttemptError> {
        if let Some(b) = &self.rpm {
            b.acquire(1.0).await;
        }
        if let Some(b) = &self.tpm {
            b.acquire(est_tokens).await;
        }
        let _permit = self.sem.acquire().await.map_err(|_| AttemptError::Fatal("client closed".into()))?;
        // Waiting calls must not reach a server the client has given up on.
        if self.stopped.load(Ordering::Relaxed) {
            return Err(AttemptError::Stopped);
        }
        self.counters.http_attempts.fetch_add(1, Ordering::Relaxed);
        let mut req = self
            .http
            .post(url)
            .timeout(Duration::from_secs_f64(self.cfg.timeout_secs))
            .json(body);
        if let Some(k) = &self.api_key {
            req = req.bearer_auth(k);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                return Err(AttemptError::Retryable { msg: describe_reqwest(&e), retry_after: None, rate_limited: false, transport: true })
            }
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| Duration::from_secs_f64(s.min(86_400.0)));
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return Err(AttemptError::Retryable { msg: describe_reqwest(&e), retry_after: None, rate_limited: false, transport: true })
            }
        };
        if !status.is_success() {
            let snippet = snippet(&String::from_utf8_lossy(&bytes), 300);
            let code = status.as_u16();
            let msg = format!("HTTP {code}: {snippet}");
            return if matches!(code, 408 | 409 | 425 | 429) || status.is_server_error() {
                Err(AttemptError::Retryable { msg, retry_after, rate_limited: code == 429, transport: false })
            } else if code == 401 || code == 403 {
                Err(AttemptError::Fatal(format!(
                    "{msg} (check the API key in env var {})",
                    self.cfg.api_key_env
                )))
            } else {
                Err(AttemptError::Fatal(msg))
            };
        }
        let v: Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => {
                return Err(AttemptError::Retryable {
                    msg: format!("response body is not valid JSON ({e}): {}", snippet(&String::from_utf8_lossy(&bytes), 200)),
                    retry_after: None,
                    rate_limited: false,
                    transport: false,
                })
            }
        };
        // Tokens are counted (and paid) even when the answer turns out unusable.
        let usage = v.get("usage");
        let pt = usage.and_then(|u| u.get("prompt_tokens")).and_then(|x| x.as_u64()).unwrap_or(0);
        let ct = usage.and_then(|u| u.get("completion_tokens")).and_then(|x| x.as_u64()).unwrap_or(0);
        self.counters.prompt_tokens.fetch_add(pt, Ordering::Relaxed);
        self.counters.completion_tokens.fetch_add(ct, Ordering::Relaxed);
        if let (Some(b), true) = (&self.tpm, pt + ct > 0) {
            b.adjust((pt + ct) as f64 - est_tokens);
        }
        // A 200 of the wrong shape (some servers answer {"error": ...} on overload; a refusal
        // or a tool call has a null content) is a failed attempt, retried like a 5xx.
        parse_completion(&v, chat).map_err(|e| AttemptError::Retryable {
            msg: format!("unusable answer: {e}: {}", snippet(&v.to_string(), 200)),
            retry_after: None,
            rate_limited: false,
            transport: false,
        })
    }
}

fn describe_reqwest(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection error"
    } else if e.is_body() || e.is_decode() {
        "error reading the response body"
    } else {
        "request error"
    };
    // The source chain carries the useful detail (refused, reset...).
    let mut detail = String::new();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = src {
        detail = s.to_string();
        src = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

pub(crate) fn snippet(s: &str, max: usize) -> String {
    let t: String = s.chars().take(max).collect();
    let t = t.replace('\n', "\\n");
    if s.chars().count() > max {
        format!("{t}…")
    } else {
        t
    }
}

fn put_sampling(body: &mut Value, s: &Sampling, chat: bool) {
    let m = body.as_object_mut().expect("body is an object");
    if let Some(n) = s.n {
        m.insert("n".into(), json!(n));
    }
    if let Some(t) = s.temperature {
        m.insert("temperature".into(), json!(t));
    }
    if let Some(p) = s.top_p {
        m.insert("top_p".into(), json!(p));
    }
    if let Some(k) = s.top_k {
        m.insert("top_k".into(), json!(k));
    }
    if let Some(p) = s.min_p {
        m.insert("min_p".into(), json!(p));
    }
    if let Some(t) = s.max_tokens {
        m.insert("max_tokens".into(), json!(t));
    }
    if let Some(seed) = s.seed {
        m.insert("seed".into(), json!(seed));
    }
    if !s.stop.is_empty() {
        m.insert("stop".into(), json!(s.stop));
    }
    if s.logprobs {
        if chat {
            m.insert("logprobs".into(), json!(true));
            if let Some(k) = s.top_logprobs {
                m.insert("top_logprobs".into(), json!(k));
            }
        } else {
            // Legacy completions: `logprobs` is the number of alternatives.
            m.insert("logprobs".into(), json!(s.top_logprobs.unwrap_or(1)));
        }
    }
}

/// The choices of an answer; an error (not an empty text) for a body without a non-empty
/// `choices` array, a chat choice without a `message` object or whose `content` is not a
/// string (null included), or a completions choice whose `text` is not a string.
fn parse_completion(v: &Value, chat: bool) -> Result<Completion> {
    let arr = v.get("choices").and_then(|c| c.as_array()).context("no `choices` array")?;
    if arr.is_empty() {
        bail!("empty `choices` array");
    }
    let mut choices = Vec::with_capacity(arr.len());
    for (i, c) in arr.iter().enumerate() {
        let finish_reason = c.get("finish_reason").and_then(|f| f.as_str()).map(str::to_string);
        let text = if chat {
            let m = c.get("message").filter(|m| m.is_object()).with_context(|| format!("choice {i} has no `message` object"))?;
            match m.get("content") {
                Some(Value::String(t)) => t.clone(),
                None | Some(Value::Null) => {
                    let why = match (m.get("refusal").and_then(|r| r.as_str()), &finish_reason) {
                        (Some(r), _) => format!(" (refusal: {})", snippet(r, 100)),
                        (None, Some(f)) => format!(" (finish_reason={f})"),
                        (None, None) => String::new(),
                    };
                    bail!("choice {i} has a null `content`{why}")
                }
                Some(other) => bail!("choice {i}: `content` is not a string: {}", snippet(&other.to_string(), 80)),
            }
        } else {
            c.get("text").and_then(|t| t.as_str()).with_context(|| format!("choice {i} has no `text` string"))?.to_string()
        };
        let logprobs = c.get("logprobs").filter(|l| !l.is_null()).map(parse_logprobs);
        choices.push(Choice {
            index: c.get("index").and_then(|x| x.as_u64()).unwrap_or(i as u64) as u32,
            text,
            finish_reason,
            logprobs,
        });
    }
    let usage = v.get("usage");
    Ok(Completion {
        choices,
        prompt_tokens: usage.and_then(|u| u.get("prompt_tokens")).and_then(|x| x.as_u64()).unwrap_or(0),
        completion_tokens: usage.and_then(|u| u.get("completion_tokens")).and_then(|x| x.as_u64()).unwrap_or(0),
    })
}

/// Accepts the chat format (`{"content": [{"token","logprob","top_logprobs":[{"token","logprob"}]}]}`)
/// and the legacy completions format (`{"tokens": [], "token_logprobs": [], "top_logprobs": [{tok: lp}]}`).
fn parse_logprobs(l: &Value) -> Vec<TokenLogprob> {
    let mut out = Vec::new();
    if let Some(content) = l.get("content").and_then(|c| c.as_array()) {
        for t in content {
            let top = t
                .get("top_logprobs")
                .and_then(|x| x.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|e| Some((e.get("token")?.as_str()?.to_string(), e.get("logprob")?.as_f64()?)))
                        .collect()
                })
                .unwrap_or_default();
            out.push(TokenLogprob {
                token: t.get("token").and_then(|x| x.as_str()).unwrap_or("").to_string(),
                logprob: t.get("logprob").and_then(|x| x.as_f64()).unwrap_or(f64::NEG_INFINITY),
                top,
            });
        }
    } else if let Some(tokens) = l.get("tokens").and_then(|c| c.as_array()) {
        let lps = l.get("token_logprobs").and_then(|x| x.as_array());
        let tops = l.get("top_logprobs").and_then(|x| x.as_array());
        for (i, t) in tokens.iter().enumerate() {
            let top = tops
                .and_then(|a| a.get(i))
                .and_then(|m| m.as_object())
                .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_f64()?))).collect())
                .unwrap_or_default();
            out.push(TokenLogprob {
                token: t.as_str().unwrap_or("").to_string(),
                logprob: lps.and_then(|a| a.get(i)).and_then(|x| x.as_f64()).unwrap_or(f64::NEG_INFINITY),
                top,
            });
        }
    }
    out
}

/// Shared handle type used across the crate.
pub type SharedClient = Arc<Client>;
