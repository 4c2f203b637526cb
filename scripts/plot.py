"""Turns ShardRank JSON reports into PNG charts (matplotlib, headless).

- `shardrank eval --json` report  -> quality@K and p99 latency against the retrieval budget, with
  the exhaustive and popularity baselines as horizontal lines.
- `shardrank loadtest --json` report, or a sweep report (`steps`), or several reports
  -> latency percentiles against the offered rate, and the per-stage breakdown of Recommend.
"""
import argparse
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def fail(msg):
    print(f"plot: {msg}", file=sys.stderr)
    sys.exit(2)


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except OSError as e:
        fail(f"{path}: {e.strerror}")
    except json.JSONDecodeError as e:
        fail(f"{path}:{e.lineno}: not JSON ({e.msg})")


def plot_eval(report, out, metric=None, k=None):
    """Quality@K against the retrieval budget, one line per ranking model, with the exhaustive and
    popularity baselines as horizontal lines and each model's p99 latency on a second axis; one
    panel per metric (recall, NDCG, MAP), or only `metric`."""
    rows = report["rows"]
    two = [r for r in rows if r["name"] == "two-stage"]
    if not two:
        fail("eval report has no two-stage rows")
    ks = [str(x) for x in report["ks"]]
    k = str(k) if k is not None else ("10" if "10" in ks else ks[0])
    if k not in ks:
        fail(f"--k {k}: the report has K in {', '.join(ks)}")
    models = list(dict.fromkeys(r.get("model", report.get("model", "dot")) for r in two))
    metrics = [metric] if metric else ["recall", "ndcg", "map_common"]
    titles = {"recall": "recall", "ndcg": "NDCG", "map_common": "MAP", "map_course": "MAP (course)", "precision": "precision"}
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.6 * len(metrics), 4.4), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, m in zip(axes[0], metrics):
        lat = ax.twinx()
        for n, model in enumerate(models):
            mine = sorted((r for r in two if r.get("model", report.get("model", "dot")) == model), key=lambda r: r["budget"])
            budgets = [r["budget"] for r in mine]
            c = colors[n % len(colors)]
            ax.plot(budgets, [r["metrics"][k][m] for r in mine], marker="o", color=c, label=f"{model} {titles[m]}@{k}")
            lat.plot(budgets, [r["latency_p99_ms"] for r in mine], marker="x", linestyle="--", linewidth=1, color=c, alpha=0.6,
                     label=f"{model} p99 latency")
        for r in rows:
            if r["name"] == "exhaustive":
                ax.axhline(r["metrics"][k][m], color="black", linestyle="--", linewidth=1, label="exhaustive (dot)")
            if r["name"] == "popularity":
                ax.axhline(r["metrics"][k][m], color="grey", linestyle=":", linewidth=1, label="popularity")
        ax.set_xscale("log")
        ax.set_xlabel("retrieval budget (candidates asked of the sources)")
        ax.set_ylabel(f"{titles[m]}@{k}")
        lat.set_ylabel("p99 latency (ms)")
        lat.set_ylim(bottom=0)
        ax.set_title(f"{titles[m]}@{k} vs retrieval budget")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = lat.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def loadtest_reports(docs):
    reps = []
    for d in docs:
        if "steps" in d:
            reps += d["steps"]
        elif "latency" in d:
            reps.append(d)
        else:
            fail("not a loadtest report (no 'latency' or 'steps')")
    return reps


def plot_loadtest(docs, out):
    reps = loadtest_reports(docs)
    rated = sorted((r for r in reps if r.get("rate_rps")), key=lambda r: r["rate_rps"])
    has_stages = any(r.get("stages") for r in reps)
    fig, axes = plt.subplots(1, 2 if has_stages else 1, figsize=(11 if has_stages else 6, 4.2))
    ax1 = axes[0] if has_stages else axes
    if rated:
        x = [r["rate_rps"] for r in rated]
        for key, label in [("p50_ms", "p50"), ("p90_ms", "p90"), ("p99_ms", "p99"), ("p99_9_ms", "p99.9")]:
            ax1.plot(x, [r["latency"][key] for r in rated], marker="o", label=label)
        ax1.set_xlabel("offered rate (requests/s, open loop)")
    else:
        x = list(range(len(reps)))
        for key, label in [("p50_ms", "p50"), ("p99_ms", "p99")]:
            ax1.bar([i + (0.2 if label == "p99" else -0.2) for i in x], [r["latency"][key] for r in reps], width=0.4, label=label)
        ax1.set_xticks(x, [r.get("mode", "") for r in reps])
    ax1.set_ylabel("latency (ms)")
    ax1.set_title("latency percentiles")
    ax1.legend()
    if has_stages:
        ax2 = axes[1]
        last = [r for r in reps if r.get("stages")][-1]
        names = [s for s in ["retrieve", "filter", "gather", "rank", "post_rank", "total"] if s in last["stages"]]
        ax2.bar(names, [last["stages"][s]["p50_ms"] for s in names], label="p50")
        ax2.bar(names, [last["stages"][s]["p99_ms"] - last["stages"][s]["p50_ms"] for s in names],
                bottom=[last["stages"][s]["p50_ms"] for s in names], alpha=0.5, label="p99")
        ax2.set_ylabel("ms")
        ax2.set_title(f"Recommend stages at {last.get('rate_rps') or last.get('concurrency')}")
        ax2.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("reports", nargs="+", help="JSON report files (eval, loadtest or sweep)")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--metric", default=None, choices=["recall", "precision", "map_common", "map_course", "ndcg"],
                   help="eval: plot only this metric (default: recall, NDCG and MAP side by side)")
    p.add_argument("--k", type=int, default=None, help="eval: the cut-off K to plot (default 10, else the report's first)")
    a = p.parse_args()
    docs = [load(r) for r in a.reports]
    if docs[0].get("kind") == "eval":
        if len(docs) != 1:
            fail("give one eval report")
        plot_eval(docs[0], a.out, a.metric, a.k)
    else:
        plot_loadtest(docs, a.out)
    print(a.out)


if __name__ == "__main__":
    main()
