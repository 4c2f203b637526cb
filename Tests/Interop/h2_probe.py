"""The legitimate client of the abuse tests (test_h2_abuse.py), in a process of its own so that
the attacker's Python (and its GIL) does not slow it: unary Lookups over one HTTP/2 connection at a
fixed rate.

Protocol on stdin/stdout, one line each: the parent writes `run SECONDS`, the probe calls for that
long at RATE calls a second (a call's start is scheduled on a fixed grid: a late call does not
shift the ones after it) and answers one JSON line {"n", "errors", "latencies_ms"}; `quit` ends it.

    python h2_probe.py PORT RATE LOOKUP_REQUEST_HEX
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from raw_h2 import RawH2  # noqa: E402

LOOKUP = "/shardrank.v1.Shard/Lookup"


def main():
    port, rate, body = int(sys.argv[1]), float(sys.argv[2]), bytes.fromhex(sys.argv[3])
    conn = RawH2(port)
    for _ in range(20):  # warm-up: the connection, the server's caches, this interpreter
        conn.call(LOOKUP, body)
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        seconds = float(cmd[1])
        latencies, errors = [], []
        n = int(seconds * rate)
        t0 = time.monotonic()
        for i in range(n):
            due = t0 + i / rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)  # pacing of the fixed rate, not synchronisation
            start = time.monotonic()
            try:
                if conn.closed:
                    errors.append("connection closed")
                    conn.close()
                    conn = RawH2(port)
                r = conn.call(LOOKUP, body, wait=5)
                status = r.trailer("grpc-status")
                if status != "0":
                    errors.append(f"grpc-status {status} reset {r.reset} goaway {conn.goaway}")
            except OSError as e:
                errors.append(f"{type(e).__name__}: {e}")
                conn.closed = True
            latencies.append((time.monotonic() - start) * 1000)
        print(json.dumps({"n": n, "errors": errors[:10], "error_count": len(errors), "latencies_ms": latencies}),
              flush=True)
    conn.close()


if __name__ == "__main__":
    main()
