"""Turns ShardRank JSON reports into PNG charts (matplotlib, headless).

- `shardrank eval` report (budgets protocol) -> quality@K (recall, NDCG, MAP) and p99 latency against
  the retrieval budget, one colour per ranking model (one marker per K with `--k 10,20`); the
  exhaustive and popularity baselines, which do not depend on the budget, as reference lines drawn
  above the curves and labelled at the right edge.
- `shardrank eval --protocol sequential` report -> horizontal bars of recall@K, NDCG@K and p99
  latency per configuration (stored, tower, +events, new user, popularity), one colour per model.
- `shardrank loadtest --json` reports and `--sweep` reports -> for one run (or runs at one rate):
  bars of the latency percentiles (p50 ... max, per operation when the mix has several) and of the
  per-stage timings of Recommend; for several rates (a sweep) or concurrencies: percentiles against
  the offered rate (or the requests in flight), with the sweep's p99 target.

Several reports of one family go in one chart: eval reports one row of panels each; load test
runs as one series (several rates), one series per sweep, or side-by-side bars.
Legends sit outside the plotting area; every axis names its unit.
"""
import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter  # noqa: E402

METRICS = ["recall", "precision", "map_common", "map_course", "ndcg"]
TITLES = {"recall": "recall", "ndcg": "NDCG", "map_common": "MAP", "map_course": "MAP (course)", "precision": "precision"}
UNITS = {"recall": "share of held-out items found, 0–1", "precision": "share of the K answers relevant, 0–1",
         "ndcg": "0–1", "map_common": "0–1", "map_course": "0–1"}
# Model colours: never black or grey, which belong to the baselines.
COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]
K_STYLES = [("o", "-"), ("s", "-."), ("^", (0, (3, 1, 1, 1, 1, 1))), ("D", (0, (8, 2)))]
BASELINES = {"exhaustive": dict(color="black", linestyle=(0, (5, 3)), label="exhaustive (dot over every item)"),
             "popularity": dict(color="dimgrey", linestyle=(0, (1.5, 1.5)), label="popularity")}
PERCENTILES = [("p50_ms", "p50"), ("p90_ms", "p90"), ("p99_ms", "p99"), ("p99_9_ms", "p99.9"), ("max_ms", "max")]
STAGES = ["retrieve", "filter", "gather", "rank", "post_rank", "total"]
LEGEND_FONT = 8


class PlotError(Exception):
    """A one-line message for the user; main() prints it and exits with status 2."""


def fail(msg):
    print(f"plot: {msg}", file=sys.stderr)
    sys.exit(2)


def load(path):
    try:
        with open(path) as f:
            doc = json.load(f)
    except OSError as e:
        raise PlotError(f"{path}: {e.strerror}")
    except UnicodeDecodeError:
        raise PlotError(f"{path}: not JSON (not UTF-8 text)")
    except json.JSONDecodeError as e:
        raise PlotError(f"{path}:{e.lineno}: not JSON ({e.msg})")
    if not isinstance(doc, dict):
        raise PlotError(f"{path}: not a ShardRank report (a JSON object with \"kind\": \"eval\", \"latency\" or \"steps\")")
    return doc


def family(path, doc):
    if doc.get("kind") == "eval":
        return "eval"
    if "steps" in doc or "latency" in doc:
        return "loadtest"
    raise PlotError(f"{path}: not a ShardRank report scripts/plot knows: neither an eval report (\"kind\": \"eval\") "
                    "nor a loadtest report (\"latency\") nor a sweep (\"steps\")")


def parse_ks(text):
    if text is None:
        return None
    try:
        ks = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise PlotError(f"--k {text}: expected K or K,K,... (integers)")
    if not ks:
        raise PlotError(f"--k {text}: expected K or K,K,... (integers)")
    return ks


# ---------------------------------------------------------------------------------------------
# Eval reports


def dataset_name(report):
    """The data set, from the held-out file's directory (`run/ml100k/heldout.csv` -> `ml100k`)."""
    held = report.get("heldout") or ""
    parent = os.path.basename(os.path.dirname(os.path.normpath(held))) if held else ""
    return parent or (os.path.basename(held) if held else "eval report")


def pick_ks(report, ks, path, only_one=False):
    have = [str(x) for x in report["ks"]]
    if ks is None:
        return ["10" if "10" in have else have[0]]
    want = [str(x) for x in ks]
    missing = [k for k in want if k not in have]
    if missing:
        raise PlotError(f"--k {','.join(want)}: {path} has K in {', '.join(have)}")
    if only_one and len(want) > 1:
        raise PlotError(f"--k {','.join(want)}: {path} is a sequential report, drawn at one K")
    return want


def model_of(report, row):
    return row.get("model", report.get("model", "dot"))


def model_colors(models):
    return {m: COLORS[i % len(COLORS)] for i, m in enumerate(models)}


def users_text(rows, what="users"):
    n = max((r.get("users", 0) for r in rows), default=0)
    return f", {n} {what}" if n else ""


def spread_edge_labels(fig, labels):
    """Moves the baselines' right-edge labels of each axes apart vertically so none overlaps another."""
    if not labels:
        return
    fig.canvas.draw()
    by_axes = {}
    for ax, text in labels:
        by_axes.setdefault(ax, []).append(text)
    for texts in by_axes.values():
        texts.sort(key=lambda t: t.get_window_extent().y0)
        prev_top = None
        for t in texts:
            box = t.get_window_extent()
            if prev_top is not None and box.y0 < prev_top + 1:
                dy_px = prev_top + 1 - box.y0
                x, y = t.xyann  # offset from the line's right end, in points
                t.xyann = (x, y + dy_px * 72 / fig.dpi)
                box = t.get_window_extent()
            prev_top = box.y1


def draw_budget_eval(sub, report, path, metric, ks):
    """One row of panels: quality@K per metric against the budget, then p99 latency."""
    rows = report["rows"]
    two = [r for r in rows if r["name"] == "two-stage"]
    if not two:
        raise PlotError(f"{path}: eval report has no two-stage rows")
    ks = pick_ks(report, ks, path)
    models = list(dict.fromkeys(model_of(report, r) for r in two))
    colors = model_colors(models)
    metrics = [metric] if metric else ["recall", "ndcg", "map_common"]
    budgets = sorted({r["budget"] for r in two})
    axes = sub.subplots(1, len(metrics) + 1, squeeze=False)[0]
    edge_labels = []
    baselines = [r for r in rows if r["name"] in BASELINES]

    def budget_axis(ax):
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(budgets))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("retrieval budget B\n(candidates asked of the sources per request)")
        ax.grid(True, which="major", color="0.9", linewidth=0.8, zorder=0)
        ax.set_axisbelow(True)

    def reference(ax, r, y, tag):
        style = BASELINES[r["name"]]
        line = ax.axhline(y, color=style["color"], linestyle=style["linestyle"], linewidth=1.6, zorder=4,
                          label=style["label"])
        line.set_gid(f"baseline:{r['name']}{tag}")
        text = ax.annotate(f"{r['name']}{tag} {y:.3g}", xy=(1, y), xycoords=ax.get_yaxis_transform(),
                           xytext=(4, -3), textcoords="offset points", fontsize=7, color=style["color"],
                           va="bottom", ha="left", annotation_clip=False)
        text.set_gid(f"baseline-label:{r['name']}{tag}")
        edge_labels.append((ax, text))

    for ax, m in zip(axes, metrics):
        for ki, k in enumerate(ks):
            marker, ls = K_STYLES[ki % len(K_STYLES)]
            for model in models:
                mine = sorted((r for r in two if model_of(report, r) == model), key=lambda r: r["budget"])
                line, = ax.plot([r["budget"] for r in mine], [r["metrics"][k][m] for r in mine], marker=marker, linestyle=ls,
                                color=colors[model], linewidth=2, markersize=5, zorder=2, label=f"{model} @{k}")
                line.set_gid(f"two-stage:{model}@{k}")
            for r in baselines:
                reference(ax, r, r["metrics"][k][m], f"@{k}" if len(ks) > 1 else "")
        budget_axis(ax)
        kk = "/".join(ks)
        ax.set_ylabel(f"{TITLES[m]}@{kk} ({UNITS[m]})")
        ax.set_title(f"{TITLES[m]}@{kk}")
    lat = axes[-1]
    for model in models:
        mine = sorted((r for r in two if model_of(report, r) == model), key=lambda r: r["budget"])
        line, = lat.plot([r["budget"] for r in mine], [r["latency_p99_ms"] for r in mine], marker="o", color=colors[model],
                         linewidth=2, markersize=5, zorder=2, label=f"{model} p99")
        line.set_gid(f"two-stage-latency:{model}")
    for r in baselines:
        reference(lat, r, r["latency_p99_ms"], "")
    budget_axis(lat)
    lat.set_ylim(bottom=0)
    lat.set_ylabel("p99 latency per request (ms)")
    lat.set_title("p99 latency (as the client saw it)")

    handles = [Line2D([], [], color=colors[m], linewidth=2, marker=K_STYLES[0][0] if len(ks) == 1 else None,
                      label=f"{m} (two-stage)") for m in models]
    if len(ks) > 1:
        handles += [Line2D([], [], color="0.3", marker=K_STYLES[i % len(K_STYLES)][0], linestyle=K_STYLES[i % len(K_STYLES)][1],
                           label=f"K = {k}") for i, k in enumerate(ks)]
    for name in dict.fromkeys(r["name"] for r in baselines):
        s = BASELINES[name]
        handles.append(Line2D([], [], color=s["color"], linestyle=s["linestyle"], linewidth=1.6, label=s["label"]))
    sub.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), fontsize=LEGEND_FONT, frameon=False,
               handlelength=3)
    what = ", ".join(TITLES[m] for m in metrics)
    sub.suptitle(f"{dataset_name(report)}{users_text(two)}: {what} @K={'/'.join(ks)} and p99 latency against the retrieval budget")
    return edge_labels


def draw_sequential_eval(sub, report, path, metric, ks):
    """One row of panels: horizontal bars per configuration (recall@K, NDCG@K, p99 latency)."""
    (k,) = pick_ks(report, ks, path, only_one=True)
    rows, seen = [], set()
    for r in report["rows"]:
        key = (r["name"], model_of(report, r) if r.get("budget", 0) else "")
        if key not in seen:  # the popularity rows repeat once per model: the same measurement
            seen.add(key)
            rows.append(r)
    if not rows:
        raise PlotError(f"{path}: eval report has no rows")
    configs = list(dict.fromkeys(r["name"] for r in rows))
    personal = [r for r in rows if r.get("budget", 0)]
    models = list(dict.fromkeys(model_of(report, r) for r in personal))
    colors = model_colors(models)
    series = [(m, colors[m], f"{m} (ranking model)") for m in models]
    if any(not r.get("budget", 0) for r in rows):
        series.append(("", "dimgrey", "popularity (no model)"))
    metrics = [metric] if metric else ["recall", "ndcg"]
    panels = [(m, f"{TITLES[m]}@{k} ({UNITS[m]})", f"{TITLES[m]}@{k}", lambda r, m=m: r["metrics"][k][m]) for m in metrics]
    panels.append(("latency", "p99 latency per request (ms)", "p99 latency", lambda r: r["latency_p99_ms"]))
    axes = sub.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    height = 0.8 / max(1, len([s for s in series if s[0]]))
    for ax, (key, xlabel, title, value) in zip(axes, panels):
        top = 0
        for ci, cfg in enumerate(configs):
            here = [r for r in rows if r["name"] == cfg]
            for j, r in enumerate(here):
                m = model_of(report, r) if r.get("budget", 0) else ""
                color = colors.get(m, "dimgrey")
                y = ci + (j - (len(here) - 1) / 2) * height
                v = value(r)
                bar = ax.barh(y, v, height=height * 0.92, color=color, zorder=2)
                bar.patches[0].set_gid(f"{key}:{cfg}:{m}")
                ax.annotate(f"{v:.3f}" if key != "latency" else f"{v:.1f}", xy=(v, y), xytext=(2, 0), textcoords="offset points",
                            va="center", ha="left", fontsize=7)
                top = max(top, v)
        ax.set_xlim(0, top * 1.18 if top > 0 else 1)
        ax.set_xlabel(xlabel)
        ax.set_title(title)
        ax.grid(True, axis="x", color="0.9", zorder=0)
        ax.set_axisbelow(True)
    axes[0].set_yticks(range(len(configs)), configs)
    axes[0].invert_yaxis()
    axes[0].set_ylabel("configuration")
    handles = [Patch(color=c, label=label) for _, c, label in series]
    sub.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=LEGEND_FONT, frameon=False)
    budget = max((r.get("budget", 0) for r in rows), default=0)
    sub.suptitle(f"{dataset_name(report)}{users_text(rows, '(user, step) pairs')}: fresh events (sequential protocol), @K={k}, B = {budget}")
    return []


def draw_eval(docs, metric, ks):
    kinds = [("sequential" if d.get("protocol") == "sequential" or not any(r.get("name") == "two-stage" for r in d["rows"])
              else "budgets") for _, d in docs]
    # Panel counts: the metrics (one with --metric) plus p99 latency.
    widths = [(1 if metric else 3) * 4.6 + 4.6 if kind == "budgets" else (1 if metric else 2) * 4.2 + 4.2 for kind in kinds]
    heights = [4.8 if kind == "budgets" else 1.6 + 0.42 * len(d["rows"]) for kind, (_, d) in zip(kinds, docs)]
    fig = plt.figure(layout="constrained", figsize=(max(widths), sum(max(4.2, h) for h in heights)))
    subs = fig.subfigures(len(docs), 1, squeeze=False, height_ratios=[max(4.2, h) for h in heights])[:, 0]
    labels = []
    for sub, kind, (path, report) in zip(subs, kinds, docs):
        try:
            draw = draw_budget_eval if kind == "budgets" else draw_sequential_eval
            labels += draw(sub, report, path, metric, ks)
        except (KeyError, TypeError, IndexError, ValueError) as e:
            raise PlotError(f"{path}: malformed eval report ({type(e).__name__}: {e})")
    spread_edge_labels(fig, labels)
    return fig


# ---------------------------------------------------------------------------------------------
# Load test reports


def mix_text(r):
    mix = r.get("mix") or {}
    if len(mix) == 1:
        return next(iter(mix))
    total = sum(mix.values()) or 1
    return " + ".join(f"{op} {100 * w / total:.0f} %" for op, w in mix.items())


def run_label(r):
    if r.get("mode") == "closed" or (r.get("rate_rps") is None and r.get("concurrency") is not None):
        shape = f"closed loop, {r.get('concurrency')} in flight"
    else:
        shape = f"open loop, {r.get('rate_rps', 0):g} req/s"
    return shape


def run_summary(r):
    """The run's shape: loop, rate or concurrency, measured time, errors."""
    bits = [run_label(r)]
    if r.get("duration_s"):
        bits.append(f"{r['duration_s']:g} s measured")
    if r.get("error_count"):
        bits.append(f"{r['error_count']} errors")
    return ", ".join(b for b in bits if b)


def loadtest_runs(docs):
    """(series name, runs, sweep doc or None) per series: a sweep is its own series; single runs share one."""
    series, singles = [], []
    for path, d in docs:
        if "steps" in d:
            if not isinstance(d["steps"], list) or not all(isinstance(s, dict) and "latency" in s for s in d["steps"]):
                raise PlotError(f"{path}: malformed sweep report (every step needs \"latency\")")
            if d["steps"]:
                series.append((os.path.basename(path), d["steps"], d))
        elif "latency" in d:
            singles.append((path, d))
        else:
            raise PlotError(f"{path}: not a loadtest report (no \"latency\" or \"steps\")")
    if singles:
        series.append((os.path.basename(singles[0][0]) if len(singles) == 1 else "reports", [d for _, d in singles], None))
    if not series:
        raise PlotError(f"{docs[0][0]}: the sweep has no steps")
    names = [p for p, _ in singles]
    return series, names


def x_of(series):
    """'rate' when every run is open loop and some series has >= 2 distinct rates, 'concurrency' for
    closed loop likewise; else None (bars: a lone point per series would say nothing)."""
    runs = [r for _, rs, _ in series for r in rs]
    if all(r.get("rate_rps") for r in runs) and any(len({r["rate_rps"] for r in rs}) >= 2 for _, rs, _ in series):
        return "rate"
    if all(r.get("rate_rps") is None and r.get("concurrency") for r in runs) \
            and any(len({r["concurrency"] for r in rs}) >= 2 for _, rs, _ in series):
        return "concurrency"
    return None


def stage_names(runs):
    have = set()
    for r in runs:
        have |= set((r.get("stages") or {}).keys())
    return [s for s in STAGES if s in have] + sorted(have - set(STAGES))


def legend_right(ax, **kw):
    return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0, fontsize=LEGEND_FONT, handlelength=3, **kw)


def draw_series(fig, series, axis):
    """Percentiles against the offered rate (or the concurrency): one line per percentile."""
    runs = [r for _, rs, _ in series for r in rs]
    stages = stage_names(runs)
    axes = fig.subplots(1, 2 if stages else 1, squeeze=False)[0]
    ax = axes[0]
    key = "rate_rps" if axis == "rate" else "concurrency"
    xlabel = ("offered rate (requests/s, open loop)" if axis == "rate"
              else "concurrency (requests in flight, closed loop)")
    pcts = PERCENTILES[:4] if len(series) == 1 else [("p50_ms", "p50"), ("p99_ms", "p99")]
    pct_colors = {"p50": "tab:blue", "p90": "tab:green", "p99": "tab:orange", "p99.9": "tab:red"}
    pct_styles = {"p50": (0, (4, 2)), "p99": "-"}
    targets = []
    for si, (name, rs, sweep) in enumerate(series):
        rs = sorted(rs, key=lambda r: r[key])
        xs = [r[key] for r in rs]
        for pk, pl in pcts:
            if len(series) == 1:
                ax.plot(xs, [r["latency"][pk] for r in rs], marker="o", color=pct_colors[pl], label=pl, zorder=3)
            else:
                ax.plot(xs, [r["latency"][pk] for r in rs], marker="o", color=COLORS[si % len(COLORS)], linestyle=pct_styles[pl],
                        label=f"{name} {pl}", zorder=3)
        if sweep and sweep.get("p99_target_ms") is not None and sweep["p99_target_ms"] not in targets:
            t = sweep["p99_target_ms"]
            targets.append(t)
            line = ax.axhline(t, color="black", linestyle=(0, (5, 3)), linewidth=1.2, zorder=2, label=f"p99 target {t:g} ms")
            line.set_gid("p99-target")
        if sweep and sweep.get("best_rate_rps"):
            b = sweep["best_rate_rps"]
            ax.axvline(b, color="0.4" if len(series) == 1 else COLORS[si % len(COLORS)], linestyle=(0, (1, 2)), linewidth=1.2,
                       zorder=2, label=f"highest rate within target: {b:g} req/s" + (f" ({name})" if len(series) > 1 else ""))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("latency (ms)")
    ax.set_ylim(bottom=0)
    ax.set_title("end-to-end latency percentiles")
    ax.grid(True, color="0.9", zorder=0)
    legend_right(ax)
    if stages:
        sax = axes[1]
        # One series' stages (several series' would cross at shared rates): the first that has them.
        sname, srs = next((name, rs) for name, rs, _ in series if any(r.get("stages") for r in rs))
        with_stages = sorted((r for r in srs if r.get("stages")), key=lambda r: r[key])
        for i, s in enumerate(stages):
            pts = [(r[key], r["stages"][s]["p99_ms"]) for r in with_stages if s in r["stages"]]
            sax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=COLORS[i % len(COLORS)],
                     linestyle="-" if s != "total" else (0, (4, 2)), label=s, zorder=3)
        sax.set_xlabel(xlabel)
        sax.set_ylabel("p99 time in stage (ms)")
        sax.set_ylim(bottom=0)
        sax.set_title("Recommend stages (the coordinator's timings), p99" + (f", {sname}" if len(series) > 1 else ""))
        sax.grid(True, color="0.9", zorder=0)
        legend_right(sax, title="stage")
    first = runs[0]
    what = mix_text(first)
    fig.suptitle(f"Load test: {what} against {first.get('target', '?')}, "
                 + ("sweep of the offered rate" if axis == "rate" else "closed loop at several concurrencies"))


def draw_bars(fig, runs, names, targets=()):
    """One run, or several at the same rate: percentiles as bars (ms), stages as horizontal bars;
    `targets`: p99 targets (ms) of the sweeps the runs come from, as horizontal lines."""
    stages = stage_names(runs)
    axes = fig.subplots(1, 2 if stages else 1, squeeze=False, width_ratios=[1.3, 1] if stages else None)[0]
    ax = axes[0]
    cats = [label for _, label in PERCENTILES]
    if len(runs) == 1:
        r = runs[0]
        ops = r.get("operations") or {}
        groups = [("all requests", r["latency"])]
        if len(ops) > 1:
            groups += [(op, o["latency"]) for op, o in ops.items() if "latency" in o]
    else:
        labels = [os.path.basename(n) for n in names] if names and len(set(map(os.path.basename, names))) == len(runs) else \
            [run_label(r) for r in runs]
        groups = [(f"{lab}: {run_label(r)}" if lab != run_label(r) else lab, r["latency"]) for lab, r in zip(labels, runs)]
    width = 0.8 / len(groups)
    top = 0
    for gi, (label, lat) in enumerate(groups):
        xs = [i + (gi - (len(groups) - 1) / 2) * width for i in range(len(cats))]
        ys = [lat.get(k, 0) for k, _ in PERCENTILES]
        bars = ax.bar(xs, ys, width=width * 0.92, color=COLORS[gi % len(COLORS)], label=label, zorder=2)
        for b, y in zip(bars, ys):
            ax.annotate(f"{y:.3g}", xy=(b.get_x() + b.get_width() / 2, y), xytext=(0, 2), textcoords="offset points",
                        ha="center", va="bottom", fontsize=7)
        top = max(top, max(ys))
    extra = []
    for t in dict.fromkeys(targets):
        line = ax.axhline(t, color="black", linestyle=(0, (5, 3)), linewidth=1.2, zorder=3, label=f"p99 target {t:g} ms")
        line.set_gid("p99-target")
        extra.append(line)
        top = max(top, t)
    ax.set_xticks(range(len(cats)), cats)
    ax.set_xlabel("percentile of the measured requests")
    ax.set_ylabel("latency (ms)")
    ax.set_ylim(0, top * 1.12 if top > 0 else 1)
    ax.set_title("end-to-end latency")
    ax.grid(True, axis="y", color="0.9", zorder=0)
    ax.set_axisbelow(True)
    if stages:
        sax = axes[1]
        with_stages = [r for r in runs if r.get("stages")]
        if len(with_stages) == 1:
            st = with_stages[0]["stages"]
            bars = [("p50", "p50_ms", "tab:blue"), ("p99", "p99_ms", "tab:orange")]
            h = 0.8 / len(bars)
            for bi, (label, key, color) in enumerate(bars):
                ys = [i + (bi - (len(bars) - 1) / 2) * h for i in range(len(stages))]
                sax.barh(ys, [st.get(s, {}).get(key, 0) for s in stages], height=h * 0.92, color=color, label=label, zorder=2)
        else:
            h = 0.8 / len(with_stages)
            for ri, r in enumerate(with_stages):
                ys = [i + (ri - (len(with_stages) - 1) / 2) * h for i in range(len(stages))]
                sax.barh(ys, [r["stages"].get(s, {}).get("p99_ms", 0) for s in stages], height=h * 0.92,
                         color=COLORS[runs.index(r) % len(COLORS)], zorder=2)
        sax.set_yticks(range(len(stages)), stages)
        sax.invert_yaxis()
        sax.set_xlabel("time in stage (ms)" if len(with_stages) == 1 else "p99 time in stage (ms)")
        sax.set_ylabel("Recommend stage")
        sax.set_title("Recommend stages (the coordinator's timings)")
        sax.grid(True, axis="x", color="0.9", zorder=0)
        sax.set_axisbelow(True)
        if len(with_stages) == 1:
            legend_right(sax)
    if len(groups) > 1:
        handles = [Patch(color=COLORS[gi % len(COLORS)], label=label) for gi, (label, _) in enumerate(groups)] + extra
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4), fontsize=LEGEND_FONT, frameon=False)
    elif extra:
        legend_right(ax, handles=extra)
    if len(runs) == 1:
        r = runs[0]
        fig.suptitle(f"Load test: {mix_text(r)} against {r.get('target', '?')}\n{run_summary(r)}, "
                     f"{r['latency'].get('count', r.get('completed', '?'))} requests")
    else:
        fig.suptitle(f"Load test: {len(runs)} runs of {mix_text(runs[0])} against {runs[0].get('target', '?')}")


def draw_loadtest(docs):
    series, names = loadtest_runs(docs)
    runs = [r for _, rs, _ in series for r in rs]
    try:
        axis = x_of(series)
        stages = bool(stage_names(runs))
        fig = plt.figure(layout="constrained", figsize=(13 if stages else 8, 4.8))
        if axis:
            draw_series(fig, series, axis)
        else:
            targets = [sw["p99_target_ms"] for _, _, sw in series if sw and sw.get("p99_target_ms") is not None]
            draw_bars(fig, runs, names if len(series) == 1 and series[0][2] is None else [], targets)
    except (KeyError, TypeError, IndexError, ValueError) as e:
        raise PlotError(f"{', '.join(p for p, _ in docs)}: malformed loadtest report ({type(e).__name__}: {e})")
    return fig


# ---------------------------------------------------------------------------------------------


def figure(paths, metric=None, k=None):
    """The Figure for these report files (eval reports, or loadtest and sweep reports); raises PlotError."""
    docs = [(p, load(p)) for p in paths]
    families = {family(p, d) for p, d in docs}
    if len(families) > 1:
        raise PlotError("give eval reports or loadtest reports, not both: "
                        + ", ".join(f"{p} is {family(p, d)}" for p, d in docs))
    if families == {"eval"}:
        for p, d in docs:
            if not isinstance(d.get("rows"), list) or not isinstance(d.get("ks"), list) or not d["ks"]:
                raise PlotError(f"{p}: malformed eval report (needs \"rows\" and \"ks\")")
        return draw_eval(docs, metric, parse_ks(k))
    return draw_loadtest(docs)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("reports", nargs="+", help="JSON report files (eval reports, or loadtest and sweep reports)")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--metric", default=None, choices=METRICS,
                   help="eval: plot only this metric (default: recall, NDCG and MAP; sequential: recall and NDCG)")
    p.add_argument("--k", default=None, metavar="K[,K...]",
                   help="eval: the cut-off K to plot, or several (budgets protocol) (default 10, else the report's first)")
    a = p.parse_args()
    try:
        fig = figure(a.reports, a.metric, a.k)
    except PlotError as e:
        fail(str(e))
    try:
        fig.savefig(a.out, dpi=110)
    except OSError as e:
        fail(f"{a.out}: {e.strerror or e}")
    except ValueError as e:
        fail(f"--out {a.out}: {e}")
    print(a.out)


if __name__ == "__main__":
    main()
