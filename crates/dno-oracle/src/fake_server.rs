//! A small in-process OpenAI-compatible server for tests and benchmarks (HTTP/1.1 keep-alive on
//! a tokio `TcpListener`), with fault injection. Not for production use.
//!
//! Its "judge" knows the truth from markers in the responses: a response containing `<<q=N>>`
//! has quality `N` (an integer). For a pairwise prompt (two markers) it answers `[[A]]`, `[[B]]` or
//! `[[tie]]` by comparing the qualities; when logprobs are requested it also returns token
//! logprobs with `P(A) = sigmoid(q_first - q_second)` at the verdict token. For a score prompt
//! (rendered `[Response i]` blocks) it answers a fenced JSON object with `score = clamp(q, 0, 6)`.
//! `/completions` answers `"echo: <first 20 chars>"`.
//!
//! Faults are injected on a fraction `fault_rate` of requests, chosen among `faults`. A server
//! can also die (stop accepting and drop its open connections) after a number of requests, or
//! when [`FakeServer::kill`] is called, to test clients spreading over several servers.

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A fault the server can inject instead of a good answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// 429 with `Retry-After: secs`.
    RateLimited { retry_after_secs: f64 },
    /// 500.
    ServerError,
    /// Waits this long before answering (beyond the client's timeout in tests).
    Slow { ms: u64 },
    /// 200 with the JSON body cut in half.
    TruncatedJson,
    /// 200 with a non-JSON body.
    Garbage,
    /// A well-formed completion whose text has no verdict / no scores.
    WrongFormat,
    /// Closes the connection without answering.
    Disconnect,
    /// Any HTTP status with a small JSON error body (e.g. 400, 401, 503).
    Status(u16),
    /// 200 with a well-formed completion whose `message.content` is null (as for a refusal or a
    /// tool call).
    NullContent,
    /// 200 with a JSON body of the wrong shape: the choice has a `delta` (as in a stream chunk)
    /// instead of a `message`.
    WrongShape,
}

/// A custom reply chosen by [`FakeConfig::override_fn`].
#[derive(Debug, Clone)]
pub enum Reply {
    /// A normal completion with this text.
    Text(String),
    /// A fault.
    Fault(Fault),
}

type OverrideFn = dyn Fn(&Value) -> Option<Reply> + Send + Sync;

#[derive(Clone)]
pub struct FakeConfig {
    pub fault_rate: f64,
    pub faults: Vec<Fault>,
    pub seed: u64,
    /// Added delay before every answer.
    pub latency_ms: u64,
    /// Consulted first for every request body; `Some` replaces the normal behaviour.
    pub override_fn: Option<Arc<OverrideFn>>,
    /// Die after answering this many requests: later requests on open connections are dropped
    /// unanswered and new connections are refused.
    pub die_after_requests: Option<u64>,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig { fault_rate: 0.0, faults: Vec::new(), seed: 1, latency_ms: 0, override_fn: None, die_after_requests: None }
    }
}

/// Counters of what the server saw.
#[derive(Debug, Default)]
pub struct FakeStats {
    /// HTTP requests received (not counting those a dead server dropped).
    pub requests: AtomicU64,
    /// Requests answered with a fault.
    pub faults: AtomicU64,
    /// Requests answered normally.
    pub ok: AtomicU64,
    /// The last `Authorization` header seen (tests check the API key handling).
    pub last_authorization: std::sync::Mutex<Option<String>>,
    /// The last request body seen.
    pub last_body: std::sync::Mutex<Option<Value>>,
    /// Set once the server died (`die_after_requests` or [`FakeServer::kill`]).
    pub dead: AtomicBool,
}

pub struct FakeServer {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT/v1`
    pub base_url: String,
    pub stats: Arc<FakeStats>,
    death: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeServer {
    /// Binds 127.0.0.1 on a free port and serves until dropped.
    pub async fn start(cfg: FakeConfig) -> std::io::Result<FakeServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(FakeStats::default());
        let counter = Arc::new(AtomicU64::new(0));
        let cfg = Arc::new(cfg);
        let st = stats.clone();
        let death = Arc::new(tokio::sync::Notify::new());
        let d = death.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    r = listener.accept() => {
                        let Ok((sock, _)) = r else { continue };
                        if st.dead.load(Ordering::SeqCst) {
                            break;
                        }
                        let _ = sock.set_nodelay(true);
                        tokio::spawn(serve_conn(sock, cfg.clone(), st.clone(), counter.clone(), d.clone()));
                    }
                    _ = d.notified() => break,
                }
            }
            // The listener is dropped here: new connections are refused.
        });
        Ok(FakeServer { addr, base_url: format!("http://{addr}/v1"), stats, death, task })
    }

    pub fn requests(&self) -> u64 {
        self.stats.requests.load(Ordering::Relaxed)
    }

    /// Dies now: the port stops accepting and requests on open connections go unanswered.
    pub fn kill(&self) {
        self.stats.dead.store(true, Ordering::SeqCst);
        self.death.notify_one();
    }
}

fn mix(seed: u64, n: u64) -> u64 {
    crate::pairs::splitmix64(seed ^ crate::pairs::splitmix64(n))
}

async fn serve_conn(
    mut sock: TcpStream,
    cfg: Arc<FakeConfig>,
    stats: Arc<FakeStats>,
    counter: Arc<AtomicU64>,
    death: Arc<tokio::sync::Notify>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    loop {
        // Read the head.
        let head_end = loop {
            if let Some(p) = find(&buf, b"\r\n\r\n") {
                break p;
            }
            let mut chunk = [0u8; 8192];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or("").to_string();
        let mut content_length = 0usize;
        let mut close = false;
        let mut authorization = None;
        for l in lines {
            if let Some((k, v)) = l.split_once(':') {
                let k = k.trim().to_ascii_lowercase();
                if k == "content-length" {
                    content_length = v.trim().parse().unwrap_or(0);
                } else if k == "authorization" {
                    authorization = Some(v.trim().to_string());
                } else if k == "connection" && v.trim().eq_ignore_ascii_case("close") {
                    close = true;
                }
            }
        }
        let body_start = head_end + 4;
        while buf.len() < body_start + content_length {
            let mut chunk = [0u8; 65536];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf[body_start..body_start + content_length].to_vec();
        buf.drain(..body_start + content_length);
        if stats.dead.load(Ordering::SeqCst) {
            return;
        }
        let n = counter.fetch_add(1, Ordering::Relaxed);
        if cfg.die_after_requests.is_some_and(|d| n >= d) {
            stats.dead.store(true, Ordering::SeqCst);
            death.notify_one();
            return;
        }
        stats.requests.fetch_add(1, Ordering::Relaxed);
        *stats.last_authorization.lock().unwrap_or_else(|e| e.into_inner()) = authorization;
        let path = request_line.split_whitespace().nth(1).unwrap_or("").to_string();
        let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        *stats.last_body.lock().unwrap_or_else(|e| e.into_inner()) = Some(req.clone());

        if cfg.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(cfg.latency_ms)).await;
        }
        let mut reply = cfg.override_fn.as_ref().and_then(|f| f(&req));
        if reply.is_none() && !cfg.faults.is_empty() {
            let u = (mix(cfg.seed, n) >> 11) as f64 / (1u64 << 53) as f64;
            if u < cfg.fault_rate {
                let k = (mix(cfg.seed ^ 0xABCD, n) % cfg.faults.len() as u64) as usize;
                reply = Some(Reply::Fault(cfg.faults[k].clone()));
            }
        }
        let (status, extra, body): (u16, String, Vec<u8>) = match reply {
            Some(Reply::Fault(f)) => {
                stats.faults.fetch_add(1, Ordering::Relaxed);
                match f {
                    Fault::RateLimited { retry_after_secs } => {
                        (429, format!("Retry-After: {retry_after_secs}\r\n"), br#"{"error":{"message":"rate limited"}}"#.to_vec())
                    }
                    Fault::ServerError => (500, String::new(), br#"{"error":{"message":"internal"}}"#.to_vec()),
                    Fault::Slow { ms } => {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        (200, String::new(), answer(&path, &req, None).to_string().into_bytes())
                    }
                    Fault::TruncatedJson => {
                        let full = answer(&path, &req, None).to_string().into_bytes();
                        (200, String::new(), full[..full.len() / 2].to_vec())
                    }
                    Fault::Garbage => (200, String::new(), b"<html>502 Bad Gateway</html>".to_vec()),
                    Fault::WrongFormat => (
                        200,
                        String::new(),
                        answer(&path, &req, Some("Both responses have merits; I will not pick one.".into()))
                            .to_string()
                            .into_bytes(),
                    ),
                    Fault::Disconnect => return,
                    Fault::Status(code) => (code, String::new(), br#"{"error":{"message":"injected status"}}"#.to_vec()),
                    Fault::NullContent => {
                        let mut v = answer(&path, &req, None);
                        for c in v["choices"].as_array_mut().into_iter().flatten() {
                            if let Some(m) = c.get_mut("message") {
                                m["content"] = Value::Null;
                            }
                            c["text"] = Value::Null;
                        }
                        (200, String::new(), v.to_string().into_bytes())
                    }
                    Fault::WrongShape => {
                        let mut v = answer(&path, &req, None);
                        for c in v["choices"].as_array_mut().into_iter().flatten() {
                            let text = c.get("message").and_then(|m| m.get("content")).cloned().unwrap_or(Value::Null);
                            if let Some(o) = c.as_object_mut() {
                                o.remove("message");
                                o.remove("text");
                                o.insert("delta".into(), json!({ "content": text }));
                            }
                        }
                        (200, String::new(), v.to_string().into_bytes())
                    }
                }
            }
            Some(Reply::Text(t)) => {
                stats.ok.fetch_add(1, Ordering::Relaxed);
                (200, String::new(), answer(&path, &req, Some(t)).to_string().into_bytes())
            }
            None => {
                stats.ok.fetch_add(1, Ordering::Relaxed);
                (200, String::new(), answer(&path, &req, None).to_string().into_bytes())
            }
        };
        let reason = match status {
            200 => "OK",
            429 => "Too Many Requests",
            _ => "Error",
        };
        let mut out = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(&body);
        if sock.write_all(&out).await.is_err() || close {
            return;
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Qualities `<<q=N>>` in order of appearance.
pub fn qualities(text: &str) -> Vec<i64> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("<<q=") {
        let after = &rest[i + 4..];
        let end = after.find(">>").unwrap_or(after.len());
        if let Ok(q) = after[..end].trim().parse() {
            out.push(q);
        }
        rest = &after[end.min(after.len())..];
    }
    out
}

fn last_user_text(req: &Value) -> String {
    req.get("messages")
        .and_then(|m| m.as_array())
        .and_then(|a| a.iter().rev().find(|m| m.get("role").and_then(|r| r.as_str()) == Some("user")))
        .and_then(|m| m.get("content"))
        .and_then(|c| c.as_str())
        .unwrap_or("")
        .to_string()
}

/// The normal (or forced-text) answer body for a request.
fn answer(path: &str, req: &Value, forced: Option<String>) -> Value {
    if path.ends_with("/completions") && !path.ends_with("/chat/completions") {
        let prompt = req.get("prompt").and_then(|p| p.as_str()).unwrap_or("");
        let text = forced.unwrap_or_else(|| format!("echo: {}", prompt.chars().take(20).collect::<String>()));
        return json!({
            "object": "text_completion",
            "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": null}],
            "usage": {"prompt_tokens": prompt.len() / 4, "completion_tokens": 4}
        });
    }
    let user = last_user_text(req);
    let want_lp = req.get("logprobs").and_then(|l| l.as_bool()).unwrap_or(false);
    let n = req.get("n").and_then(|x| x.as_u64()).unwrap_or(1).max(1);
    let qs = qualities(&user);
    let mut logprobs = Value::Null;
    let text = if let Some(t) = forced {
        t
    } else if user.contains("[Response 1]") {
        let mut obj = serde_json::Map::new();
        for (i, q) in qs.iter().enumerate() {
            obj.insert(
                (i + 1).to_string(),
                json!({"justification": format!("quality {q}; {{braces}} are fine"), "score": (*q).clamp(0, 6)}),
            );
        }
        format!("Here are my scores.\n```json\n{}\n```\n", Value::Object(obj))
    } else if qs.len() == 2 {
        let v = match qs[0].cmp(&qs[1]) {
            std::cmp::Ordering::Greater => "A",
            std::cmp::Ordering::Less => "B",
            std::cmp::Ordering::Equal => "tie",
        };
        if want_lp {
            let p = 1.0 / (1.0 + (-((qs[0] - qs[1]) as f64)).exp());
            let chosen_lp = if v == "B" { (1.0 - p).ln() } else { p.ln() };
            let plain = |t: &str| json!({"token": t, "logprob": -0.01, "top_logprobs": []});
            logprobs = json!({"content": [
                plain("Verdict"), plain(":"), plain(" [["),
                {"token": if v == "tie" { "A" } else { v }, "logprob": chosen_lp,
                 "top_logprobs": [{"token": "A", "logprob": p.ln()}, {"token": "B", "logprob": (1.0 - p).ln()}]},
                plain("]]")
            ]});
        }
        format!("Verdict: [[{v}]]")
    } else {
        "I cannot find two responses to compare.".to_string()
    };
    let choices: Vec<Value> = (0..n)
        .map(|i| {
            json!({"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop", "logprobs": logprobs})
        })
        .collect();
    json!({
        "object": "chat.completion",
        "model": req.get("model").cloned().unwrap_or(Value::Null),
        "choices": choices,
        "usage": {"prompt_tokens": user.len() / 4, "completion_tokens": text.len() / 4}
    })
}
