"""scripts/plot: every report it draws becomes a chart a person can read, and bad input is a clear error.

The chart tests run scripts/plot.py's main() in this process and take the matplotlib Figure it saves,
then check what is drawn: the eval baselines are reference lines above the two-stage curves and
labelled at the right edge, no legend covers a plotting area, every axis names its unit, the title
names the data set and K, a single load-test run is percentile bars (not dots on a vertical line),
a sweep is latency against the offered rate with its p99 target. The CLI tests run scripts/plot as
a user does (exit status, relative paths, error messages)."""
import importlib.util
import json
import os
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
import pytest  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PLOT = os.path.join(ROOT, "scripts", "plot")


def lat(p50):
    return {"count": 100, "mean_ms": p50, "p50_ms": p50, "p90_ms": p50 * 1.5, "p99_ms": p50 * 2, "p99_9_ms": p50 * 3, "max_ms": p50 * 4}


STAGE_NAMES = ["retrieve", "filter", "gather", "rank", "post_rank", "total"]


def run_report(**kw):
    r = {"target": "127.0.0.1:7001", "mix": {"recommend": 1}, "duration_s": 2, "sent": 200, "completed": 200, "ok": 200,
         "error_count": 0, "errors": {}, "latency": lat(5), "operations": {"recommend": {"sent": 200, "completed": 200, "latency": lat(5)}},
         "stages": {s: lat(1 + i) for i, s in enumerate(STAGE_NAMES)}}
    r.update(kw)
    return r


def eval_report(models=("dot", "ltr"), ks=(10,), heldout="run/ml100k/heldout.csv"):
    """A budgets-protocol report where `dot` equals the exhaustive baseline from B = 20 on (as on MovieLens)."""
    def row(name, model, budget, recall, p99):
        return {"name": name, "model": model, "budget": budget, "users": 943, "failed": 0, "degraded": 0, "latency_p50_ms": p99 / 2,
                "latency_p99_ms": p99, "candidates_mean": budget * 0.6, "seen_returned": 0,
                "metrics": {str(k): {"recall": recall * (1 + k / 100), "ndcg": recall * 0.8, "map_common": recall / 2,
                                     "map_course": recall / 3, "precision": recall / 4} for k in ks}}
    rows = []
    for m in models:
        for b in (10, 20, 50, 100, 200, 500, 1000):
            base = 0.1355 if m == "dot" else 0.17 + 0.03 * min(b, 200) / 200
            rows.append(row("two-stage", m, b, 0.158 if (m == "dot" and b == 10) else base, 2.5 + b / 100))
    rows += [row("exhaustive", "dot", 0, 0.1355, 3.0), row("popularity", "dot", 0, 0.0778, 0.7)]
    return {"kind": "eval", "protocol": "budgets", "heldout": heldout, "coordinator": "127.0.0.1:7001", "ks": list(ks),
            "models": list(models), "rows": rows}


def sequential_report():
    def row(name, model, budget, recall, users=4715):
        return {"name": name, "model": model, "budget": budget, "users": users, "failed": 0, "degraded": 0, "latency_p50_ms": 1.5,
                "latency_p99_ms": 4.0 if budget else 0.6, "candidates_mean": 130, "seen_returned": 0,
                "metrics": {"10": {"recall": recall, "ndcg": recall * 0.7, "map_common": recall / 2, "map_course": recall / 3,
                                   "precision": recall / 4}}}
    rows = []
    for m, lift in (("dot", 1.0), ("ltr", 1.05)):
        rows += [row("stored", m, 200, 0.1289 * lift), row("tower", m, 200, 0.1787 * lift), row("stored+events", m, 200, 0.1316 * lift),
                 row("tower+events", m, 200, 0.2131 * lift), row("new-user+events", m, 200, 0.1099 * lift, 943),
                 row("new-user-popularity", "dot", 0, 0.0424, 943)]
    return {"kind": "eval", "protocol": "sequential", "heldout": "run/ml100k/heldout.csv", "ks": [10], "models": ["dot", "ltr"],
            "rows": rows}


def write(tmp_path, name, doc):
    f = tmp_path / name
    f.write_text(json.dumps(doc))
    return str(f)


@pytest.fixture
def draw(monkeypatch, tmp_path):
    """Runs scripts/plot.py's main() in this process with these arguments; returns the Figure it saved."""
    def run(*args):
        spec = importlib.util.spec_from_file_location("plot_under_test", os.path.join(ROOT, "scripts", "plot.py"))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        saved = []
        real = Figure.savefig

        def grab(self, *a, **kw):
            saved.append(self)
            return real(self, *a, **kw)
        monkeypatch.setattr(Figure, "savefig", grab)
        monkeypatch.setattr(sys, "argv", ["plot", *args, "--out", str(tmp_path / "chart.png")])
        mod.main()
        assert saved, "plot.py saved no figure"
        fig = saved[-1]
        fig.canvas.draw()
        return fig
    return run


# --- helpers over matplotlib's object model --------------------------------------------------------


def legends(fig):
    out = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    stack = list(fig.subfigs)
    while stack:
        sf = stack.pop()
        out += sf.legends
        stack += sf.subfigs
    return out


def suptitles(fig):
    out = [fig.get_suptitle()]
    stack = list(fig.subfigs)
    while stack:
        sf = stack.pop()
        out.append(sf.get_suptitle())
        stack += sf.subfigs
    return " | ".join(t for t in out if t)


def overlap(a, b, slack=0.5):
    return a.x0 < b.x1 - slack and b.x0 < a.x1 - slack and a.y0 < b.y1 - slack and b.y0 < a.y1 - slack


def assert_legends_outside_the_plotting_areas(fig):
    """Every legend lies in the figure and covers no axes' data area (the axes' own rectangle)."""
    r = fig.canvas.get_renderer()
    figbox = fig.bbox
    legs = legends(fig)
    for leg in legs:
        lb = leg.get_window_extent(r)
        assert figbox.x0 - 1 <= lb.x0 and lb.x1 <= figbox.x1 + 1 and figbox.y0 - 1 <= lb.y0 and lb.y1 <= figbox.y1 + 1, \
            f"legend {lb} is cut off by the figure {figbox}"
        for ax in fig.axes:
            assert not overlap(lb, ax.get_window_extent(r)), \
                f"a legend ({[t.get_text() for t in leg.get_texts()]}) covers the plotting area of '{ax.get_title()}'"
    return legs


def is_baseline(ln):
    return any(w in ln.get_label() for w in ("exhaustive", "popularity")) or (ln.get_gid() or "").startswith("baseline:")


def quality_axes(fig):
    """The axes with two-stage curves and baselines (not latency)."""
    return [ax for ax in fig.axes if any(is_baseline(ln) for ln in ax.get_lines()) and "latency" not in (ax.get_ylabel() + ax.get_title())]


def assert_baselines_labelled_at_the_right_edge(fig):
    """In every quality axes, each baseline is named right of the plotting area; no two names overlap."""
    r = fig.canvas.get_renderer()
    for ax in quality_axes(fig):
        ab = ax.get_window_extent(r)
        edge = [t for t in ax.texts if any(w in t.get_text() for w in ("exhaustive", "popularity"))]
        assert {t.get_text().split()[0].split("@")[0] for t in edge} == {"exhaustive", "popularity"}, \
            f"'{ax.get_title()}': the baselines are labelled at the right edge"
        boxes = [t.get_window_extent(r) for t in edge]
        for b in boxes:
            assert b.x0 >= ab.x1 - 1, "the baseline labels sit right of the plotting area"
        for i, b in enumerate(boxes):
            for c in boxes[i + 1:]:
                assert not overlap(b, c), f"baseline labels overlap each other in '{ax.get_title()}': {[t.get_text() for t in edge]}"


def bars(ax):
    return [p for p in ax.patches if isinstance(p, Rectangle) and p.get_height() > 0 and p.get_width() > 0]


def assert_no_vertical_scatter(ax):
    xs = [float(x) for ln in ax.get_lines() if ln.get_marker() not in (None, "None", "", " ")
          for x in ln.get_xdata()]
    assert not (len(xs) >= 2 and len(set(xs)) == 1), f"'{ax.get_title()}' plots {len(xs)} points on one vertical line x = {xs[0]}"


# --- eval reports ----------------------------------------------------------------------------------


def test_eval_baselines_are_reference_lines_above_the_curves(tmp_path, draw):
    fig = draw(write(tmp_path, "eval.json", eval_report()))
    r = fig.canvas.get_renderer()
    qa = quality_axes(fig)
    assert len(qa) == 3, f"expected recall, NDCG and MAP panels with baselines, got {[a.get_title() for a in fig.axes]}"
    for ax in qa:
        lines = ax.get_lines()
        base = [ln for ln in lines if is_baseline(ln)]
        curves = [ln for ln in lines if not is_baseline(ln) and len(ln.get_xdata()) >= 2]
        assert {("exhaustive" in ln.get_label()) for ln in base} == {True, False}, "both baselines drawn"
        assert len(curves) >= 2, "one curve per model"
        for ln in base:
            assert len(set(map(float, ln.get_ydata()))) == 1 and list(map(float, ln.get_xdata())) == [0.0, 1.0], \
                f"{ln.get_label()}: a horizontal reference line across the whole axes"
            assert ln.get_zorder() > max(c.get_zorder() for c in curves), \
                f"{ln.get_label()} (zorder {ln.get_zorder()}) is drawn under the two-stage curves"
            assert ln.get_linestyle() not in ("-", "solid"), f"{ln.get_label()}: dashed or dotted, never solid like a curve"
        # The dot curve sits exactly on the exhaustive line from B = 20: the line must still be seen,
        # so each baseline is also named at the right edge, outside the data area.
    assert_baselines_labelled_at_the_right_edge(fig)


def test_eval_legend_is_outside_every_plotting_area(tmp_path, draw):
    fig = draw(write(tmp_path, "eval.json", eval_report()))
    legs = assert_legends_outside_the_plotting_areas(fig)
    names = " ".join(t.get_text() for leg in legs for t in leg.get_texts())
    for want in ("dot", "ltr", "exhaustive", "popularity"):
        assert want in names, f"the legend names {want}: {names}"


def test_eval_axes_name_units_and_the_title_names_data_set_and_k(tmp_path, draw):
    fig = draw(write(tmp_path, "eval.json", eval_report()))
    for ax in fig.axes:
        x, y = ax.get_xlabel(), ax.get_ylabel()
        assert "budget" in x and "candidates" in x and "per request" in x, f"x axis of '{ax.get_title()}': {x!r}"
        assert y, f"'{ax.get_title()}' has no y label"
    lat = [ax for ax in fig.axes if "latency" in ax.get_ylabel()]
    assert lat and all("(ms)" in ax.get_ylabel() for ax in lat), "the latency axis says ms"
    for ax in quality_axes(fig):
        assert "@10" in ax.get_ylabel() and "0–1" in ax.get_ylabel(), f"quality axis {ax.get_ylabel()!r} names K and its range"
    title = suptitles(fig)
    assert "ml100k" in title and "K=10" in title, f"the title names the data set and K: {title!r}"


def test_eval_models_and_ks_are_each_distinguishable(tmp_path, draw):
    fig = draw(write(tmp_path, "eval.json", eval_report(models=("dot", "ltr", "mlp"), ks=(10, 20))), "--k", "10,20")
    qa = quality_axes(fig)
    assert qa
    for ax in qa:
        curves = [ln for ln in ax.get_lines() if not is_baseline(ln) and len(ln.get_xdata()) >= 2]
        styles = [(matplotlib.colors.to_hex(ln.get_color()), ln.get_marker(), str(ln.get_linestyle())) for ln in curves]
        assert len(curves) == 6 and len(set(styles)) == 6, f"3 models x 2 K, each drawn differently: {styles}"
        assert len({s[0] for s in styles}) == 3 and len({(s[1], s[2]) for s in styles}) == 2, "colour = model, marker and line = K"
        for ln in ax.get_lines():
            if is_baseline(ln):
                assert matplotlib.colors.to_hex(ln.get_color()) not in {s[0] for s in styles}, "baselines never share a model's colour"
    assert "10" in suptitles(fig) and "20" in suptitles(fig)
    # NDCG is the same at both K here: the two exhaustive labels would sit on one spot.
    assert_baselines_labelled_at_the_right_edge(fig)
    assert_legends_outside_the_plotting_areas(fig)


def test_several_eval_reports_are_one_chart_with_a_row_each(tmp_path, draw):
    a = write(tmp_path, "ml.json", eval_report())
    b = write(tmp_path, "synth.json", eval_report(models=("dot",), heldout="in/heldout.csv"))
    fig = draw(a, b)
    title = suptitles(fig)
    assert "ml100k" in title and "in" in title
    assert len(quality_axes(fig)) == 6
    assert_legends_outside_the_plotting_areas(fig)


def test_sequential_report_is_bars_per_configuration(tmp_path, draw):
    report = sequential_report()
    fig = draw(write(tmp_path, "seq.json", report))
    recall_axes = [ax for ax in fig.axes if ax.get_xlabel().startswith("recall@10")]
    assert len(recall_axes) == 1, f"a recall@10 panel: {[ax.get_xlabel() for ax in fig.axes]}"
    ax = recall_axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    configs = ["stored", "tower", "stored+events", "tower+events", "new-user+events", "new-user-popularity"]
    assert labels == configs, f"one row per configuration, in the report's order: {labels}"
    widths = sorted(round(p.get_width(), 6) for p in bars(ax))
    want = sorted({round(r["metrics"]["10"]["recall"], 6) for r in report["rows"]})
    assert widths == want, "a bar per (configuration, model), popularity once; lengths are the recall values"
    for a in fig.axes:
        assert "(" in a.get_xlabel(), f"unit or range on {a.get_xlabel()!r}"
    assert any("(ms)" in a.get_xlabel() for a in fig.axes), "a p99 latency panel in ms"
    assert any(a.get_xlabel().startswith("NDCG@10") for a in fig.axes)
    title = suptitles(fig)
    assert "ml100k" in title and "K=10" in title and "sequential" in title
    assert_legends_outside_the_plotting_areas(fig)


# --- load test reports -----------------------------------------------------------------------------


def latency_axes(fig):
    return [ax for ax in fig.axes if ax.get_ylabel().startswith("latency")]


def assert_percentile_bars(ax, latency):
    got = bars(ax)
    centres = {round(p.get_x() + p.get_width() / 2, 6) for p in got}
    assert len(got) >= 4 and len(centres) >= 4, f"at least 4 bars at distinct x, got {len(got)} at {sorted(centres)}"
    heights = {round(p.get_height(), 6) for p in got}
    for key in ("p50_ms", "p90_ms", "p99_ms", "p99_9_ms"):
        assert round(latency[key], 6) in heights, f"a bar for {key}"
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert {"p50", "p90", "p99", "p99.9"} <= set(ticks), f"the bars are labelled: {ticks}"
    assert "(ms)" in ax.get_ylabel()
    assert_no_vertical_scatter(ax)


def assert_stage_panel(fig):
    stage_axes = [ax for ax in fig.axes if {t.get_text() for t in ax.get_yticklabels()} >= set(STAGE_NAMES)]
    assert len(stage_axes) == 1, "one panel with the Recommend stages"
    assert "(ms)" in stage_axes[0].get_xlabel()
    assert len(bars(stage_axes[0])) >= len(STAGE_NAMES) - 1


@pytest.mark.parametrize("shape", [{"mode": "open", "rate_rps": 100, "arrivals": "constant"}, {"mode": "closed", "concurrency": 4}],
                         ids=["open-loop", "closed-loop"])
def test_single_run_is_percentile_bars_not_a_vertical_line(tmp_path, draw, shape):
    rep = run_report(**shape)
    fig = draw(write(tmp_path, "run.json", rep))
    for ax in fig.axes:
        assert_no_vertical_scatter(ax)
        assert "ms" in ax.get_xlabel() + ax.get_ylabel(), f"'{ax.get_title()}' names ms"
    la = latency_axes(fig)
    assert len(la) == 1
    assert_percentile_bars(la[0], rep["latency"])
    assert_stage_panel(fig)
    title = suptitles(fig)
    assert ("100 req/s" if "rate_rps" in shape else "4 in flight") in title, title
    assert_legends_outside_the_plotting_areas(fig)


def test_single_run_with_several_operations_has_bars_per_operation(tmp_path, draw):
    rep = run_report(mode="open", rate_rps=2000, mix={"lookup": 0.9, "search": 0.1}, stages=None,
                     operations={"lookup": {"sent": 90, "completed": 90, "latency": lat(1)},
                                 "search": {"sent": 10, "completed": 10, "latency": lat(3)}})
    del rep["stages"]
    fig = draw(write(tmp_path, "shard.json", rep))
    (ax,) = latency_axes(fig)
    heights = {round(p.get_height(), 6) for p in bars(ax)}
    assert {1.0, 3.0, 5.0} <= heights, "p50 bars of all requests, lookup and search"
    names = " ".join(t.get_text() for leg in assert_legends_outside_the_plotting_areas(fig) for t in leg.get_texts())
    assert "lookup" in names and "search" in names


def test_sweep_is_latency_against_the_offered_rate_with_the_p99_target(tmp_path, draw):
    steps = [run_report(mode="open", rate_rps=r, latency=lat(2 + r / 100)) for r in (50, 100, 150)]
    fig = draw(write(tmp_path, "sweep.json", {"p99_target_ms": 20, "max_error_share": 0.01, "best_rate_rps": 150, "steps": steps}))
    (ax,) = latency_axes(fig)
    assert "requests/s" in ax.get_xlabel() and "(ms)" in ax.get_ylabel()
    curves = [ln for ln in ax.get_lines() if list(map(float, ln.get_xdata())) == [50.0, 100.0, 150.0]]
    ys = {tuple(round(float(y), 6) for y in ln.get_ydata()) for ln in curves}
    for key in ("p50_ms", "p99_ms"):
        assert tuple(round(s["latency"][key], 6) for s in steps) in ys, f"a {key} curve against the rate"
    target = [ln for ln in ax.get_lines() if set(map(float, ln.get_ydata())) == {20.0} and len(ln.get_ydata()) == 2]
    assert target, "the p99 target is a horizontal line at 20 ms"
    for a in fig.axes:
        assert "requests/s" in a.get_xlabel() and "ms" in a.get_ylabel()
    assert_legends_outside_the_plotting_areas(fig)


def test_sweep_that_stopped_at_its_first_rate_is_bars_with_the_target(tmp_path, draw):
    step = run_report(mode="open", rate_rps=1000, latency=lat(12))
    fig = draw(write(tmp_path, "sweep1.json", {"p99_target_ms": 20, "max_error_share": 0.01, "best_rate_rps": None, "steps": [step]}))
    (ax,) = latency_axes(fig)
    assert_percentile_bars(ax, step["latency"])
    assert any(set(map(float, ln.get_ydata())) == {20.0} and len(ln.get_ydata()) == 2 for ln in ax.get_lines()), "the p99 target line"
    assert "1000 req/s" in suptitles(fig)
    assert_legends_outside_the_plotting_areas(fig)


def test_runs_at_one_rate_from_several_files_are_side_by_side_bars(tmp_path, draw):
    a = write(tmp_path, "before.json", run_report(mode="open", rate_rps=100))
    b = write(tmp_path, "after.json", run_report(mode="open", rate_rps=100, latency=lat(3)))
    fig = draw(a, b)
    (ax,) = latency_axes(fig)
    assert len(bars(ax)) >= 10, "5 percentiles x 2 runs"
    assert_no_vertical_scatter(ax)
    names = " ".join(t.get_text() for leg in assert_legends_outside_the_plotting_areas(fig) for t in leg.get_texts())
    assert "before.json" in names and "after.json" in names


def test_closed_loop_runs_at_several_concurrencies_are_a_curve(tmp_path, draw):
    files = [write(tmp_path, f"c{c}.json", run_report(mode="closed", concurrency=c, latency=lat(c))) for c in (1, 4, 16)]
    fig = draw(*files)
    (ax,) = latency_axes(fig)
    assert "requests in flight" in ax.get_xlabel() and "(ms)" in ax.get_ylabel()
    assert any(list(map(float, ln.get_xdata())) == [1.0, 4.0, 16.0] for ln in ax.get_lines())


# --- the command -----------------------------------------------------------------------------------


def test_sweep_and_stages(tmp_path):
    steps = [{"mode": "open", "rate_rps": r, "latency": lat(2 + r / 100),
              "stages": {s: lat(1) for s in ["retrieve", "filter", "gather", "rank", "post_rank", "total"]}} for r in (50, 100, 150)]
    f = tmp_path / "sweep.json"
    f.write_text(json.dumps({"p99_target_ms": 20, "steps": steps}))
    out = subprocess.run([PLOT, str(f), "--out", str(tmp_path / "s.png")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_input_is_one_line_naming_the_file(tmp_path):
    cases = {
        "x.json": ("{not json", "x.json:1"),
        "hello.json": (json.dumps({"hello": 1}), "hello.json"),
        "list.json": (json.dumps([1, 2]), "list.json"),
        "broken-eval.json": (json.dumps({"kind": "eval", "ks": [10], "rows": [{"name": "two-stage", "budget": 10}]}), "broken-eval.json"),
        "broken-sweep.json": (json.dumps({"steps": [{"rate_rps": 5}]}), "broken-sweep.json"),
    }
    for name, (text, want) in cases.items():
        (tmp_path / name).write_text(text)
        out = subprocess.run([PLOT, name, "--out", "x.png"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert out.returncode == 2, (name, out.returncode, out.stderr)
        assert want in out.stderr and out.stderr.startswith("plot: ") and out.stderr.count("\n") == 1, (name, out.stderr)
        assert not (tmp_path / "x.png").exists()
    out = subprocess.run([PLOT, "missing.json", "--out", "x.png"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 2 and "missing.json" in out.stderr and out.stderr.count("\n") == 1, out.stderr
    (tmp_path / "e.json").write_text(json.dumps(eval_report()))
    (tmp_path / "l.json").write_text(json.dumps(run_report(mode="open", rate_rps=10)))
    out = subprocess.run([PLOT, "e.json", "l.json", "--out", "x.png"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 2 and "e.json" in out.stderr and "l.json" in out.stderr and out.stderr.count("\n") == 1, out.stderr


def test_relative_paths_are_the_callers(tmp_path):
    steps = [{"mode": "open", "rate_rps": r, "latency": lat(2)} for r in (50, 100)]
    (tmp_path / "rel.json").write_text(json.dumps({"steps": steps}))
    out = subprocess.run([PLOT, "rel.json", "--out", "rel.png"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "rel.png").read_bytes()[:4] == b"\x89PNG"
    # The commands of docs/evaluation.md, as written there.
    (tmp_path / "eval.json").write_text(json.dumps(eval_report()))
    (tmp_path / "seq.json").write_text(json.dumps(sequential_report()))
    for args in (["eval.json", "--out", "curves.png"], ["report.json", "--out", "curves.png"], ["seq.json", "--out", "seq.png"]):
        if args[0] == "report.json":
            (tmp_path / "report.json").write_text(json.dumps(eval_report(models=("dot",))))
        out = subprocess.run([PLOT, *args], capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert out.returncode == 0, (args, out.stderr)
        assert (tmp_path / args[2]).read_bytes()[:4] == b"\x89PNG"


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
