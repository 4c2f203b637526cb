"""The README's "A cluster by hand" block, run as it is written: synth, build, two shards and a
coordinator on the README's fixed ports, the readiness wait, route, recommend, the JSON front door, eval,
and the shutdown. It runs on this host's loopback after checking that the README's ports are free
(a taken port fails the test, naming it); if the block fails half-way, its servers are stopped."""
import json
import os
import re
import signal
import socket
import subprocess

import pytest

from conftest import shardrank_bin

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MARK = "<!-- Tests/Interop/test_readme.py runs this block as it is. -->"
PORTS = (7000, 7001, 7101, 7102)


def readme_block():
    text = open(os.path.join(ROOT, "README.md")).read()
    assert MARK in text, "the README lost its tested block"
    m = re.search(re.escape(MARK) + r"\n```sh\n(.*?)\n```", text, re.S)
    assert m, "the marked block is not a ```sh fence"
    return m.group(1)


def test_the_readme_cluster_block_runs_as_written(tmp_path):
    block = readme_block()
    for word in ("shardrank health --target 127.0.0.1:7000 --wait", "curl", "shardrank eval", "kill $(jobs -p)"):
        assert word in block, f"the block no longer has {word!r}"
    env = dict(os.environ, PATH=os.path.dirname(shardrank_bin()) + os.pathsep + os.environ["PATH"])
    assert os.path.basename(shardrank_bin()) == "shardrank"
    # The harness around the block: stop on the first failing command, and stop the block's
    # servers however it ends; `wait`: every server drained and exited after the block's kill.
    script = "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n" + block + "\nwait\n"
    for p in PORTS:
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", p)) != 0, f"port {p}, which the README uses, is taken on this host"
    argv = ["bash", "-c", script]
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}"
    lines = out.splitlines()
    assert "SERVING" in lines, out[:2000]
    # route named the shard of each id: 1 and 2 on shard 0, 3 on shard 1 (as the Python example says).
    assert [l for l in lines if l.startswith("id ")] == ["id 1 → shard 0 of 2", "id 2 → shard 0 of 2", "id 3 → shard 1 of 2"], out[:2000]
    # recommend printed a ranked answer with item names from items.csv.
    assert re.search(r"^user 42 .*candidates \d+", out, re.M) and re.search(r"^\s+1\s+\d+\s+-?\d", out, re.M), out[:3000]
    # curl printed the JSON answer: 3 items, ids as strings.
    doc = next(json.loads(l) for l in lines if l.startswith("{\"items\""))
    assert len(doc["items"]) == 3 and all(i["itemId"].isdigit() for i in doc["items"])
    # eval printed its table for both budgets, beside the baselines.
    assert re.search(r"two-stage dot B=50 ", out) and re.search(r"two-stage dot B=200 ", out) and "exhaustive" in out and "popularity" in out, out[-3000:]


def test_the_quickstart_runs_as_written(tmp_path):
    """docs/quickstart.md's five commands from step 3 on (steps 1 and 2, setup and the build, are
    what the test run itself did), in a copy of the repository's cluster scripts and example
    topology so the run directory and tables land in a temporary directory; then cluster/down."""
    text = open(os.path.join(ROOT, "docs", "quickstart.md")).read()
    block = re.search(r"```sh\n(.*?)\n```", text, re.S).group(1)
    steps = re.split(r"\n(?=\S)", block)   # one command per step (continuation lines included)
    assert len(steps) == 5 and steps[0].startswith("scripts/setup") and steps[1].startswith("swift build"), steps
    for p in (7000, 7101, 7102, 8000, 8101, 8102):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", p)) != 0, f"port {p}, which the quickstart uses, is taken on this host"
    import shutil
    shutil.copytree(os.path.join(ROOT, "cluster"), tmp_path / "cluster", ignore=shutil.ignore_patterns("__pycache__"))
    env = dict(os.environ, PATH=os.path.dirname(shardrank_bin()) + os.pathsep + os.environ["PATH"])
    topo = "cluster/examples/quickstart.json"
    script = ("set -euo pipefail\ntrap 'cluster/down " + topo + " >/dev/null 2>&1 || true' EXIT\n"
              + "\n".join(steps[2:]) + "\ncurl -sf 'http://127.0.0.1:8000/v1/recommend/42?k=3'\n")
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=dict(env, SHARDRANK_BIN=shardrank_bin()),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    out = proc.stdout
    assert "run/quickstart/tables/v1" in out and re.search(r"coordinator-0 SERVING at 127.0.0.1:7000", out + proc.stderr)
    assert re.search(r"^user 42 .*candidates \d+", out, re.M) and re.search(r"^\s+10\s+\d+\s+-?\d", out, re.M), out[-3000:]
    doc = json.loads(out.splitlines()[-1])
    assert len(doc["items"]) == 3
    # cluster/down (the trap) stopped everything: the ports are free again.
    for p in (7000, 7101, 7102):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", p)) != 0, f"port {p} still answers after cluster/down"
