# Command oracle for the tests (PROTOCOL.md): prefers the shorter response, ties at equal length.
import json
import sys

for line in sys.stdin:
    if not line.strip():
        continue
    r = json.loads(line)
    a, b = len(r["response_a"]), len(r["response_b"])
    print(json.dumps({"p_a": 1.0 if a < b else 0.0 if a > b else 0.5}), flush=True)
