"""scripts/plot: loadtest and sweep reports become PNGs; bad input is a clear error."""
import json
import os
import subprocess

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PLOT = os.path.join(ROOT, "scripts", "plot")


def lat(p50):
    return {"count": 100, "mean_ms": p50, "p50_ms": p50, "p90_ms": p50 * 1.5, "p99_ms": p50 * 2, "p99_9_ms": p50 * 3, "max_ms": p50 * 4}


def test_sweep_and_stages(tmp_path):
    steps = [{"mode": "open", "rate_rps": r, "latency": lat(2 + r / 100),
              "stages": {s: lat(1) for s in ["retrieve", "filter", "gather", "rank", "post_rank", "total"]}} for r in (50, 100, 150)]
    f = tmp_path / "sweep.json"
    f.write_text(json.dumps({"p99_target_ms": 20, "steps": steps}))
    out = subprocess.run([PLOT, str(f), "--out", str(tmp_path / "s.png")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_input(tmp_path):
    f = tmp_path / "x.json"
    f.write_text("{not json")
    out = subprocess.run([PLOT, str(f), "--out", str(tmp_path / "x.png")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "x.json:1" in out.stderr
    f.write_text(json.dumps({"hello": 1}))
    out = subprocess.run([PLOT, str(f), "--out", str(tmp_path / "x.png")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "not a loadtest report" in out.stderr


def test_relative_paths_are_the_callers(tmp_path):
    steps = [{"mode": "open", "rate_rps": r, "latency": lat(2)} for r in (50, 100)]
    (tmp_path / "rel.json").write_text(json.dumps({"steps": steps}))
    out = subprocess.run([PLOT, "rel.json", "--out", "rel.png"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "rel.png").read_bytes()[:4] == b"\x89PNG"


def test_eval_report_with_two_models(tmp_path):
    def row(name, model, budget, recall):
        return {"name": name, "model": model, "budget": budget, "latency_p50_ms": 1.0, "latency_p99_ms": 2.0 + budget / 100,
                "metrics": {"10": {"recall": recall, "ndcg": recall, "map_common": recall / 2}}}
    rows = [row("two-stage", m, b, r + b / 1e4) for m, r in (("dot", 0.13), ("ltr", 0.18)) for b in (50, 200, 1000)]
    rows += [row("exhaustive", "dot", 0, 0.135), row("popularity", "dot", 0, 0.07)]
    f = tmp_path / "eval.json"
    f.write_text(json.dumps({"kind": "eval", "ks": [10], "models": ["dot", "ltr"], "rows": rows}))
    out = subprocess.run([PLOT, str(f), "--out", str(tmp_path / "e.png")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "e.png").stat().st_size > 20_000
    out = subprocess.run([PLOT, str(f), "--out", str(tmp_path / "e.png"), "--k", "20"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "--k 20" in out.stderr
