#!/usr/bin/env python3
"""Checks the dashboard's queries against a real Prometheus: every panel's every expression must
return at least one series. With --png, also draws each panel's queries over the last minutes,
as a stand-in for a Grafana render (no Grafana here).

Usage: check-dashboard.py PROMETHEUS_URL DASHBOARD_JSON [--png OUT.png] [--minutes N]

Grafana's variables are given the values a dashboard opened on all jobs would use: `$job` as
`.*`, `$__rate_interval` as `1m`. Exit status 1 if any expression returns nothing."""
import json
import sys
import time
import urllib.parse
import urllib.request


def query(prom, path, **params):
    url = f"{prom}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as r:
        answer = json.load(r)
    if answer.get("status") != "success":
        raise RuntimeError(f"{url}: {answer}")
    return answer["data"]["result"]


def expressions(dashboard):
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "1m").replace('=~"$job"', '=~".*"')
            yield panel, target, expr


def main():
    args = sys.argv[1:]
    png = args[args.index("--png") + 1] if "--png" in args else None
    minutes = int(args[args.index("--minutes") + 1]) if "--minutes" in args else 5
    prom, dashboard = args[0], json.load(open(args[1]))
    empty = 0
    for panel, target, expr in expressions(dashboard):
        series = query(prom, "/api/v1/query", query=expr)
        empty += not series
        print(f"{'ok  ' if series else 'FAIL'} {panel['title']} [{target['refId']}]: {len(series)} series  {expr}")
    if png:
        plot(prom, dashboard, png, minutes)
    print(f"{empty} of {sum(1 for _ in expressions(dashboard))} expressions returned nothing")
    return 1 if empty else 0


def plot(prom, dashboard, png, minutes):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    end = time.time()
    start = end - minutes * 60
    panels = dashboard["panels"]
    fig, axes = plt.subplots((len(panels) + 1) // 2, 2, figsize=(13, 2.6 * ((len(panels) + 1) // 2)), dpi=90)
    for ax, panel in zip(axes.flat, panels):
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "1m").replace('=~"$job"', '=~".*"')
            for s in query(prom, "/api/v1/query_range", query=expr, start=start, end=end, step=2):
                label = target.get("legendFormat", "")
                for k, v in s["metric"].items():
                    label = label.replace("{{" + k + "}}", v)
                xs = [(float(t) - end) / 60 for t, _ in s["values"]]
                ys = [float(v) for _, v in s["values"]]
                ax.plot(xs, ys, label=label[:40])
        ax.set_title(panel["title"], fontsize=10)
        ax.set_xlabel("minutes", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="upper left")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle("tokend dashboard: its queries against a real Prometheus scraping a real tokend")
    fig.tight_layout()
    fig.savefig(png)


if __name__ == "__main__":
    sys.exit(main())
