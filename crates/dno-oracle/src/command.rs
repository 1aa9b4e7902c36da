//! Command oracle: any program that reads JSONL requests on stdin and answers one JSON line
//! `{"p_a": f}` per request on stdout, in order. The protocol is documented in `PROTOCOL.md`.
//!
//! Requests from concurrent callers are gathered into batches of up to `batch_size` (a batch is
//! closed when full or after `linger_ms` without a new request). Two process models:
//! * one process per batch (default): the batch is written to stdin, stdin is closed, the program
//!   must print exactly one line per request and exit 0;
//! * `persistent`: one long-lived process; each batch is written and flushed, then exactly as many
//!   lines are read back. If it dies or misbehaves it is killed and a fresh one is started for the
//!   next batch.
//!
//! Batches run one at a time (the program may hold a GPU). Bad output — non-JSON, missing or
//! non-numeric `p_a`, `p_a` outside `[0, 1]`, too few or too many lines, a non-zero exit, a
//! timeout — fails the whole batch with a one-line error naming the output line and the request.

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{mpsc, oneshot, OnceCell};

/// How to start the program.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Program {
    /// Run through `sh -c`.
    Shell(String),
    /// `argv[0]` with arguments, no shell.
    Argv(Vec<String>),
}

impl std::fmt::Display for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Program::Shell(s) => write!(f, "sh -c {s:?}"),
            Program::Argv(a) => write!(f, "{}", a.join(" ")),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommandConfig {
    pub program: Program,
    /// Requests per batch (≥ 1).
    pub batch_size: usize,
    /// Keep one process alive across batches.
    pub persistent: bool,
    /// Longest time a batch may take.
    pub batch_timeout_secs: f64,
    /// How long to wait for more requests before running a partial batch.
    pub linger_ms: u64,
}

impl CommandConfig {
    pub fn shell(cmd: impl Into<String>) -> CommandConfig {
        CommandConfig {
            program: Program::Shell(cmd.into()),
            batch_size: 64,
            persistent: false,
            batch_timeout_secs: 600.0,
            linger_ms: 20,
        }
    }
}

/// One request line (see PROTOCOL.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub prompt_id: String,
    pub prompt: String,
    pub sample_a: String,
    pub response_a: String,
    pub sample_b: String,
    pub response_b: String,
    pub answer: Option<String>,
}

struct Job {
    req: Request,
    reply: oneshot::Sender<std::result::Result<f64, String>>,
}

struct Proc {
    child: Child,
    stdin: ChildStdin,
    stdout: tokio::io::Lines<BufReader<ChildStdout>>,
    stderr_tail: Arc<Mutex<String>>,
}

struct Runner {
    cfg: CommandConfig,
    proc: tokio::sync::Mutex<Option<Proc>>,
}

/// The command oracle. Methods need a tokio runtime.
pub struct CommandOracle {
    runner: Arc<Runner>,
    queue: OnceCell<mpsc::Sender<Job>>,
    fingerprint: String,
}

impl CommandOracle {
    pub fn new(cfg: CommandConfig) -> Result<CommandOracle> {
        if cfg.batch_size == 0 {
            bail!("command oracle: batch_size must be at least 1");
        }
        match &cfg.program {
            Program::Shell(s) if s.trim().is_empty() => bail!("command oracle: the command is empty"),
            Program::Argv(a) if a.is_empty() => bail!("command oracle: argv is empty"),
            _ => {}
        }
        if !cfg.batch_timeout_secs.is_finite() || cfg.batch_timeout_secs <= 0.0 {
            bail!("command oracle: batch_timeout_secs must be a finite number > 0 (got {})", cfg.batch_timeout_secs);
        }
        let fingerprint =
            crate::cache::hash_parts(&["dno-oracle-command-1", &serde_json::to_string(&cfg.program)?]);
        Ok(CommandOracle { runner: Arc::new(Runner { cfg, proc: tokio::sync::Mutex::new(None) }), queue: OnceCell::new(), fingerprint })
    }

    pub fn name(&self) -> &str {
        "command"
    }

    /// Hash of the program line (cache key component).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Queues one request; it is sent with others in the next batch. Returns `p_a`.
    pub async fn ask(&self, req: Request) -> Result<f64> {
        let tx = self
            .queue
            .get_or_init(|| async {
                let (tx, rx) = mpsc::channel::<Job>(self.runner.cfg.batch_size * 4);
                tokio::spawn(batcher(self.runner.clone(), rx));
                tx
            })
            .await;
        let (reply, rx) = oneshot::channel();
        tx.send(Job { req, reply }).await.map_err(|_| anyhow!("command oracle: batch worker has stopped"))?;
        rx.await.map_err(|_| anyhow!("command oracle: batch worker dropped the request"))?.map_err(|e| anyhow!(e))
    }

    /// Runs one batch directly (no queueing); returns one `p_a` per request.
    pub async fn run_batch(&self, reqs: &[Request]) -> Result<Vec<f64>> {
        self.runner.run_batch(reqs).await
    }
}

async fn batcher(runner: Arc<Runner>, mut rx: mpsc::Receiver<Job>) {
    let linger = Duration::from_millis(runner.cfg.linger_ms);
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + linger;
        while batch.len() < runner.cfg.batch_size {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(j)) => batch.push(j),
                _ => break,
            }
        }
        let reqs: Vec<Request> = batch.iter().map(|j| j.req.clone()).collect();
        match runner.run_batch(&reqs).await {
            Ok(ps) => {
                for (j, p) in batch.into_iter().zip(ps) {
                    let _ = j.reply.send(Ok(p));
                }
            }
            Err(e) => {
                let msg = format!("{e:#}");
                for j in batch {
                    let _ = j.reply.send(Err(msg.clone()));
                }
            }
        }
    }
}

/// Parses one output line into `p_a`. `line_no` is 1-based within the batch's output.
fn parse_line(line: &str, line_no: usize, req: &Request) -> Result<f64> {
    let who = format!("request {} ({} vs {})", req.prompt_id, req.sample_a, req.sample_b);
    let v: serde_json::Value = serde_json::from_str(line.trim()).map_err(|e| {
        anyhow!("command output line {line_no} ({who}) is not JSON ({e}): {}", crate::client::snippet(line, 120))
    })?;
    let p = v
        .get("p_a")
        .and_then(|x| x.as_f64())
        .ok_or_else(|| anyhow!("command output line {line_no} ({who}) has no numeric field p_a: {}", crate::client::snippet(line, 120)))?;
    if !(0.0..=1.0).contains(&p) {
        bail!("command output line {line_no} ({who}): p_a={p} is outside [0, 1]");
    }
    Ok(p)
}

fn tail_of(s: &str) -> String {
    let t = s.trim();
    let n = t.chars().count();
    let t: String = t.chars().skip(n.saturating_sub(400)).collect();
    if t.is_empty() {
        "(empty)".into()
    } else {
        t.replace('\n', " | ")
    }
}

impl Runner {
    fn command(&self) -> Command {
        let mut c = match &self.cfg.program {
            Program::Shell(s) => {
                let mut c = Command::new("sh");
                c.arg("-c").arg(s);
                c
            }
            Program::Argv(a) => {
                let mut c = Command::new(&a[0]);
                c.args(&a[1..]);
                c
            }
        };
        c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        c
    }

    fn encode(reqs: &[Request]) -> Result<Vec<u8>> {
        let mut input = Vec::new();
        for r in reqs {
            serde_json::to_writer(&mut input, r).context("encoding a command request")?;
            input.push(b'\n');
        }
        Ok(input)
    }

    async fn run_batch(&self, reqs: &[Request]) -> Result<Vec<f64>> {
        if reqs.is_empty() {
            return Ok(Vec::new());
        }
        if self.cfg.persistent {
            self.run_persistent(reqs).await
        } else {
            self.run_once(reqs).await
        }
    }

    async fn run_once(&self, reqs: &[Request]) -> Result<Vec<f64>> {
        let prog = &self.cfg.program;
        let mut child = self.command().spawn().with_context(|| format!("starting command oracle `{prog}`"))?;
        let input = Self::encode(reqs)?;
        let mut stdin = child.stdin.take().context("command stdin")?;
        // Write in a separate task so a program that answers while reading cannot deadlock us.
        let writer = tokio::spawn(async move {
            let r = stdin.write_all(&input).await;
            drop(stdin);
            r
        });
        let timeout = Duration::from_secs_f64(self.cfg.batch_timeout_secs);
        let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(r) => r.with_context(|| format!("running command oracle `{prog}`"))?,
            Err(_) => bail!("command oracle `{prog}` did not finish a batch of {} within {:.0}s", reqs.len(), timeout.as_secs_f64()),
        };
        let write_res = writer.await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            bail!("command oracle `{prog}` exited with {}; stderr: {}", out.status, tail_of(&stderr));
        }
        if let Ok(Err(e)) = write_res {
            bail!("command oracle `{prog}` stopped reading its input ({e}); stderr: {}", tail_of(&stderr));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
        if lines.len() != reqs.len() {
            bail!(
                "command oracle `{prog}` printed {} answer line(s) for a batch of {} requests (one JSON line per request expected); stderr: {}",
                lines.len(),
                reqs.len(),
                tail_of(&stderr)
            );
        }
        lines.iter().zip(reqs).enumerate().map(|(i, (l, r))| parse_line(l, i + 1, r)).collect()
    }

    async fn spawn_persistent(&self) -> Result<Proc> {
        let prog = &self.cfg.program;
        let mut child = self.command().spawn().with_context(|| format!("starting command oracle `{prog}`"))?;
        let stdin = child.stdin.take().context("command stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("command stdout")?).lines();
        let mut stderr = child.stderr.take().context("command stderr")?;
        let stderr_tail = Arc::new(Mutex::new(String::new()));
        let tail = stderr_tail.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                t.push_str(&String::from_utf8_lossy(&buf[..n]));
                if t.len() > 8192 {
                    let cut = t.len() - 4096;
                    let cut = (cut..t.len()).find(|&i| t.is_char_boundary(i)).unwrap_or(t.len());
                    t.drain(..cut);
                }
            }
        });
        Ok(Proc { child, stdin, stdout, stderr_tail })
    }

    async fn run_persistent(&self, reqs: &[Request]) -> Result<Vec<f64>> {
        let mut guard = self.proc.lock().await;
        if guard.is_none() {
            *guard = Some(self.spawn_persistent().await?);
        }
        let proc = guard.as_mut().expect("process present");
        let res = Self::exchange(&self.cfg, proc, reqs).await;
        if res.is_err() {
            // Out of sync or dead: kill it, the next batch starts a fresh one.
            if let Some(mut p) = guard.take() {
                let _ = p.child.start_kill();
            }
        }
        res
    }

    async fn exchange(cfg: &CommandConfig, proc: &mut Proc, reqs: &[Request]) -> Result<Vec<f64>> {
        let prog = &cfg.program;
        let stderr = |p: &Proc| tail_of(&p.stderr_tail.lock().unwrap_or_else(|e| e.into_inner()));
        let input = Self::encode(reqs)?;
        let timeout = Duration::from_secs_f64(cfg.batch_timeout_secs);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut out = Vec::with_capacity(reqs.len());
        // Write and read concurrently (a program may answer before reading the whole batch).
        let stdin = &mut proc.stdin;
        let write = async {
            stdin.write_all(&input).await?;
            stdin.flush().await
        };
        let lines = &mut proc.stdout;
        let read = async {
            let mut got = Vec::with_capacity(reqs.len());
            while got.len() < reqs.len() {
                match lines.next_line().await {
                    Ok(Some(l)) if l.trim().is_empty() => continue,
                    Ok(Some(l)) => got.push(l),
                    Ok(None) => return Ok::<_, std::io::Error>((got, true)),
                    Err(e) => return Err(e),
                }
            }
            Ok((got, false))
        };
        let joined = tokio::time::timeout_at(deadline, async { tokio::join!(write, read) }).await;
        let (w, r) = match joined {
            Ok(x) => x,
            Err(_) => bail!(
                "command oracle `{prog}` did not answer a batch of {} within {:.0}s; stderr: {}",
                reqs.len(),
                timeout.as_secs_f64(),
                stderr(proc)
            ),
        };
        let (got, eof) = r.with_context(|| format!("reading the output of command oracle `{prog}`"))?;
        if eof {
            let status = match tokio::time::timeout(Duration::from_secs(2), proc.child.wait()).await {
                Ok(Ok(s)) => s.to_string(),
                _ => "closed its stdout".into(),
            };
            bail!(
                "command oracle `{prog}` ended ({status}) after answering {} of {} requests in this batch; stderr: {}",
                got.len(),
                reqs.len(),
                stderr(proc)
            );
        }
        if let Err(e) = w {
            bail!("command oracle `{prog}` stopped reading its input ({e}); stderr: {}", stderr(proc));
        }
        for (i, (l, r)) in got.iter().zip(reqs).enumerate() {
            out.push(parse_line(l, i + 1, r)?);
        }
        Ok(out)
    }
}
