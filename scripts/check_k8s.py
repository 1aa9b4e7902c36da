"""Checks the Kubernetes manifests in pipelines/k8s without a cluster.

`kubectl apply --dry-run=client` needs an API server even in client mode (it downloads the
OpenAPI schema and the API group list), and CI has none, so this checks what matters offline:
each file parses as YAML into a batch/v1 Job with restartPolicy Never; an Indexed Job has
completions = parallelism = its N and passes `--shard "$JOB_COMPLETION_INDEX/$N"`, skipping a
shard whose output validates; the container script is valid `sh`; and every `dno SUBCOMMAND`
flag in it exists in that subcommand's `--help` of the dno binary given.

    python3 scripts/check_k8s.py path/to/dno pipelines/k8s/*.yaml
"""
import re
import subprocess
import sys

import yaml


def fail(path, msg):
    sys.exit(f"{path}: {msg}")


def dno_calls(script):
    """(subcommand, flags) of each `dno SUB ...` command in a shell script."""
    joined = script.replace("\\\n", " ")
    for line in joined.splitlines():
        for m in re.finditer(r"\bdno\s+(?:-q\s+)?([a-z]+)((?:\s+[^;&|]+)?)", line):
            yield m.group(1), re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", m.group(2))


def main():
    dno, files = sys.argv[1], sys.argv[2:]
    if not files:
        sys.exit("usage: check_k8s.py DNO FILE.yaml...")
    helps = {}
    for path in files:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        if not docs:
            fail(path, "no YAML documents")
        for job in docs:
            if job.get("apiVersion") != "batch/v1" or job.get("kind") != "Job":
                fail(path, f"expected a batch/v1 Job, got {job.get('apiVersion')} {job.get('kind')}")
            name = job.get("metadata", {}).get("name") or fail(path, "metadata.name missing")
            spec = job["spec"]
            pod = spec["template"]["spec"]
            if pod.get("restartPolicy") != "Never":
                fail(path, f"{name}: restartPolicy must be Never (a failed index is retried as a new pod)")
            (container,) = pod["containers"]
            if not container.get("image"):
                fail(path, f"{name}: no image")
            script = container["args"][0]
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            if spec.get("completionMode") == "Indexed":
                n = int(env.get("N") or fail(path, f"{name}: env N missing"))
                if spec.get("completions") != n or spec.get("parallelism") != n:
                    fail(path, f"{name}: completions {spec.get('completions')} and parallelism {spec.get('parallelism')} must equal N = {n}")
                if '--shard "$JOB_COMPLETION_INDEX/$N"' not in script:
                    fail(path, f"{name}: the script must pass --shard \"$JOB_COMPLETION_INDEX/$N\"")
                if 'validate --shard "$JOB_COMPLETION_INDEX/$N"' not in script:
                    fail(path, f"{name}: a finished shard must be skipped (dno validate --shard)")
            sh = subprocess.run(["sh", "-n"], input=script, text=True, capture_output=True)
            if sh.returncode != 0:
                fail(path, f"{name}: the container script is not valid sh: {sh.stderr.strip()}")
            for sub, flags in dno_calls(script):
                if sub not in helps:
                    h = subprocess.run([dno, sub, "--help"], text=True, capture_output=True)
                    if h.returncode != 0:
                        fail(path, f"{name}: `dno {sub}` is not a dno subcommand")
                    helps[sub] = h.stdout
                for flag in flags:
                    if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", helps[sub]):
                        fail(path, f"{name}: `dno {sub}` has no flag {flag}")
            print(f"ok: {path}: {name} ({spec.get('completionMode', 'NonIndexed')})")


if __name__ == "__main__":
    main()
