#!/usr/bin/env python3
"""Tables and plot for bench/fleet.sh.

Usage: bench/fleet_plot.py DATA_DIR [PNG [OTHER_DIR LABEL]]

With OTHER_DIR, its `jitter` runs (another build, e.g. before a change) are reported too and drawn
as a third curve, named LABEL.

Reads DATA_DIR/<mode>-<run>.json (mode: jitter or nojitter), as written by bench/fleet.sh.
Times are the token server's arrival times, relative to the first `tokend run` exec of the run.

Definitions (L = the token lifetime, at = 0.8, j = 0.1, the jitter tokend defaults to):
- start-up: the first n requests (n processes), every process's first fetch: not a refresh
  cycle. s = their median arrival time.
- cycle k (k = 1, 2, 3): the requests in s + [(k - 1/2) at L, (k + 1/2) at L).
- peak: the largest count in a 1-s bin, bins aligned on the first exec ([0,1), [1,2), ...);
  "sliding" is the largest count in any 1-s window (a spike split over two aligned bins).
- average over the jitter window: a cycle's requests / (2 j L), the rate if they were spread
  evenly over the window [at - j, at + j] L that the default jitter aims them at. The baseline
  (jitter 0) is measured against the same window, so both ratios share one denominator rule.
- ratio: peak / average. Target (with jitter): <= 2.
"""

import datetime
import glob
import json
import os
import statistics
import sys

AT, J = 0.8, 0.1
CYCLES = 3


def load(data_dir):
    runs = {}
    for path in sorted(glob.glob(os.path.join(data_dir, "*.json"))):
        with open(path) as f:
            r = json.load(f)
        runs.setdefault(r["mode"], []).append(r)
    for mode in runs:
        runs[mode].sort(key=lambda r: r["run"])
    return runs


def times(r):
    return sorted((q["at_ms"] - r["launch_first_ms"]) / 1000 for q in r["requests"])


def peak_aligned(ts):
    bins = {}
    for t in ts:
        bins[int(t // 1)] = bins.get(int(t // 1), 0) + 1
    return max(bins.values(), default=0)


def peak_sliding(ts):
    best, lo = 0, 0
    for hi, t in enumerate(ts):
        while ts[lo] <= t - 1.0:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def analyse(r):
    L = r["lifetime_s"]
    ts = times(r)
    start = ts[: r["n"]]
    s0 = med(start)
    out = {
        "total": len(ts),
        "bad_status": sum(1 for q in r["requests"] if q["status"] != 200),
        "per_process": r["refreshed_per_process"],
        "warnings": sum(r["warnings_per_process"]),
        "alive": r["alive_at_end"],
        "launch_s": (r["launch_last_ms"] - r["launch_first_ms"]) / 1000,
        "rss_kib": r["rss_kib"],
        "threads": r["threads"],
        "startup": {
            "n": len(start),
            "first": start[0] if start else None,
            "span": (start[-1] - start[0]) if start else None,
            "median": s0,
            "peak": peak_aligned(start),
            "sliding": peak_sliding(start),
        },
        "cycles": [],
    }
    # The processes' own view (from their logs), where recorded: exec -> "tokend starting", and
    # exec -> first token in the files.
    ps = r.get("process_startup")
    if ps:
        rel = lambda ts: (datetime.datetime.fromisoformat(ts).timestamp() * 1000 - r["launch_first_ms"]) / 1000
        started = sorted(rel(p["started"]) for p in ps if p["started"])
        first = sorted(rel(p["first_token"]) for p in ps if p["first_token"])
        out["startup"]["process_started"] = (started[0], med(started), started[-1])
        out["startup"]["process_first_token"] = (first[0], med(first), first[-1])
    for k in range(1, CYCLES + 1):
        lo, hi = s0 + (k - 0.5) * AT * L, s0 + (k + 0.5) * AT * L
        c = [t for t in ts[r["n"]:] if lo <= t < hi]
        avg = len(c) / (2 * J * L)
        peak = peak_aligned(c)
        out["cycles"].append({
            "n": len(c),
            "span": (c[-1] - c[0]) if c else 0.0,
            "median": med(c) if c else s0 + k * AT * L,
            "peak": peak,
            "sliding": peak_sliding(c),
            "avg": avg,
            "ratio": peak / avg if avg else float("nan"),
        })
    return out


def med(xs):
    return statistics.median(xs)


def report(runs):
    lines = []
    for mode in ("jitter", "nojitter"):
        if mode not in runs:
            continue
        rs = runs[mode]
        a = [analyse(r) for r in rs]
        r0 = rs[0]
        label = "refresh.jitter 10% (default)" if mode == "jitter" else "refresh.jitter 0 (baseline)"
        lines.append(f"### {label}: {r0['n']} processes, lifetime {r0['lifetime_s']} s, {len(rs)} runs")
        lines.append("")
        lines.append("| run | requests | per process (min–max) | non-200 | warnings | start-up: n, span, peak/s | "
                     "cycle 1: n, span, peak/s, ratio | cycle 2 | cycle 3 | peak/s over 3 cycles | max ratio |")
        lines.append("|---:|---:|---|---:|---:|---|---|---|---|---:|---:|")
        for r, x in zip(rs, a):
            pp = x["per_process"]
            s = x["startup"]
            cyc = [f"{c['n']}, {c['span']:.1f} s, {c['peak']} ({c['sliding']}), {c['ratio']:.2f}"
                   for c in x["cycles"]]
            lines.append(
                f"| {r['run']} | {x['total']} | {x['total'] / r['n']:.2f} ({min(pp)}–{max(pp)}) | "
                f"{x['bad_status']} | {x['warnings']} | {s['n']}, {s['span']:.2f} s, {s['peak']} ({s['sliding']}) | "
                + " | ".join(cyc)
                + f" | {max(c['peak'] for c in x['cycles'])} | {max(c['ratio'] for c in x['cycles']):.2f} |")
        peaks = [max(c["peak"] for c in x["cycles"]) for x in a]
        ratios = [max(c["ratio"] for c in x["cycles"]) for x in a]
        avgs = [c["avg"] for x in a for c in x["cycles"]]
        rss = [v for x in a for v in x["rss_kib"]]
        thr = [v for x in a for v in x["threads"]]
        for r, x in zip(rs, a):
            s = x["startup"]
            if "process_started" in s:
                ps, pf = s["process_started"], s["process_first_token"]
                lines.append("")
                lines.append(
                    f"Start-up, run {r['run']}: after the barrier opened, the processes logged `tokend starting` "
                    f"at {ps[0]:.2f}–{ps[2]:.2f} s (median {ps[1]:.2f}); the server received their first requests "
                    f"at {s['first']:.2f}–{s['first'] + s['span']:.2f} s; each had its first token in its file at "
                    f"{pf[0]:.2f}–{pf[2]:.2f} s (median {pf[1]:.2f}).")
        lines.append("")
        lines.append(
            f"Median over runs: peak {med(peaks)} requests/s over three cycles (runs: {peaks}); "
            f"average over the jitter window {med(avgs):.1f}/s; peak/average {med(ratios):.2f} "
            f"(runs: {[round(v, 2) for v in ratios]}). Start-up burst median peak "
            f"{med([x['startup']['peak'] for x in a])}/s over "
            f"{med([x['startup']['span'] for x in a]):.2f} s; launching all processes took "
            f"{med([x['launch_s'] for x in a]):.2f} s. Per process: RSS median {med(rss)} KiB "
            f"(max {max(rss)}), threads {min(thr)}–{max(thr)}; still running at the end: "
            f"{min(x['alive'] for x in a)}/{r0['n']}.")
        lines.append("")
    return "\n".join(lines)


def plot(runs, png, other=None, other_label=None):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4.5), dpi=110)
    L = None
    styles = {"jitter": ("tab:blue", "jitter 10% (default)"), "nojitter": ("tab:red", "jitter 0 (baseline)")}
    curves = [(runs[m][0], *styles[m]) for m in ("nojitter", "jitter") if m in runs]
    if other and "jitter" in other:
        curves.insert(1, (other["jitter"][0], "tab:orange", other_label))
    for r, colour, label in curves:  # run 1 of each: one run, one curve
        L = r["lifetime_s"]
        ts = times(r)
        end = int(max(times(r)) + 5)
        counts = [0] * end
        for t in ts:
            if 0 <= t < end:
                counts[int(t)] += 1
        ax.step(range(end), counts, where="post", color=colour, label=f"{label}, run {r['run']}", lw=1.2)
    if L:
        # The refresh schedule counts from when each process sent its request, which the server
        # saw seconds later at start-up (it was starved of CPU): shade each cycle's window around
        # the jitter run's own median request of that cycle.
        if "jitter" in runs:
            for k, c in enumerate(analyse(runs["jitter"][0])["cycles"], 1):
                ax.axvspan(c["median"] - J * L, c["median"] + J * L, color="0.85", zorder=0,
                           label="jitter window: the cycle's median ± 10% L" if k == 1 else None)
        n = runs[next(iter(runs))][0]["n"]
        avg = n / (2 * J * L)
        ax.axhline(2 * avg, color="0.4", ls="--", lw=0.8, label=f"2 × average over the window ({2 * avg:.0f}/s)")
    ax.set_yscale("symlog", linthresh=10)
    ax.set_ylim(0, 300)
    ax.set_xlabel("seconds since the first of the processes started")
    ax.set_ylabel("token requests per second (1-s bins)")
    ax.set_title(f"{n} tokend processes, one client, one oauth2-mock-server, {L} s tokens")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(png)


def main():
    data_dir = sys.argv[1]
    png = sys.argv[2] if len(sys.argv) > 2 else None
    runs = load(data_dir)
    print(report(runs))
    other, other_label = None, None
    if len(sys.argv) > 4:
        other, other_label = load(sys.argv[3]), sys.argv[4]
        print(f"## {other_label} ({sys.argv[3]})\n")
        print(report({"jitter": other["jitter"]}))
    if png:
        plot(runs, png, other, other_label)
        print(f"plot: {png}")


if __name__ == "__main__":
    main()
