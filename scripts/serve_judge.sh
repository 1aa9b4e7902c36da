#!/usr/bin/env bash
# Start an OpenAI-compatible judge server (llama-cpp-python's llama_cpp.server) on the
# SmolLM2-135M-Instruct Q4_1 GGUF, wait until /v1/models answers, print the base URL.
#
# The server keeps running in the background; its pid is written to $PIDFILE and its
# log to $LOGFILE. Stop it with: kill "$(cat "$PIDFILE")"
#
# Env:
#   PORT        port on 127.0.0.1 (default 8089)
#   VENV        venv with llama-cpp-python[server] (default /work/venv-ref)
#   GGUF        model path (default: output of scripts/fetch_smollm2.sh)
#   THREADS     inference threads (default 1: on the busy 2-core dev machine one thread answered a
#               judge prompt in 0.3-0.7 s, two threads in 3-5 s, because OpenMP threads spin at
#               barriers while other processes hold the cores)
#   N_CTX       context length (default 4096)
#   WAIT_S      seconds to wait for readiness (default 120)
#   PIDFILE     default ${TMPDIR:-/tmp}/dno-judge-$PORT.pid
#   LOGFILE     default ${TMPDIR:-/tmp}/dno-judge-$PORT.log
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PORT="${PORT:-8089}"
VENV="${VENV:-/work/venv-ref}"
GGUF="${GGUF:-$("$HERE/fetch_smollm2.sh")}"
THREADS="${THREADS:-1}"
N_CTX="${N_CTX:-4096}"
WAIT_S="${WAIT_S:-120}"
PIDFILE="${PIDFILE:-${TMPDIR:-/tmp}/dno-judge-$PORT.pid}"
LOGFILE="${LOGFILE:-${TMPDIR:-/tmp}/dno-judge-$PORT.log}"
URL="http://127.0.0.1:$PORT/v1"

if [[ ! -x "$VENV/bin/python" ]]; then
    echo "serve_judge: no python at $VENV/bin/python (set VENV)" >&2
    exit 1
fi
if curl -fsS -m 2 "$URL/models" >/dev/null 2>&1; then
    echo "serve_judge: something already answers on $URL; reusing it" >&2
    echo "$URL"
    exit 0
fi

nohup "$VENV/bin/python" -m llama_cpp.server \
    --model "$GGUF" --model_alias smollm2-135m-instruct \
    --host 127.0.0.1 --port "$PORT" \
    --n_ctx "$N_CTX" --n_threads "$THREADS" --n_threads_batch "$THREADS" >"$LOGFILE" 2>&1 &
PID=$!
echo "$PID" >"$PIDFILE"

for _ in $(seq 1 "$WAIT_S"); do
    if curl -fsS -m 2 "$URL/models" >/dev/null 2>&1; then
        echo "$URL"
        exit 0
    fi
    if ! kill -0 "$PID" 2>/dev/null; then
        echo "serve_judge: server exited early; last log lines from $LOGFILE:" >&2
        tail -n 20 "$LOGFILE" >&2
        exit 1
    fi
    sleep 1
done
echo "serve_judge: $URL/models did not answer within ${WAIT_S}s (log: $LOGFILE)" >&2
kill "$PID" 2>/dev/null || true
exit 1
