#!/usr/bin/env python3
"""Scale: what N clients cost the release daemon, against oauth2-mock-server (tests/interop) as
the token server, each client with its own audience (one token request each) and one raw output.

For each N and each repetition, in a fresh directory:
  first    exec -> READY (sd_notify, NOTIFY_SOCKET) with no token on disk: every client fetches;
           RSS after the fetch (VmRSS 2 s after READY, and VmHWM), requests, TLS connections
           and the most requests in flight at once, all counted by the server;
  idle     CPU time (utime + stime) and context switches of every thread over --idle seconds
           between refreshes (1-hour tokens: the first refresh is due after 42 minutes);
  restart  SIGTERM, then exec -> READY again with every token on disk: time, RSS, requests
           (must be 0).
Medians over the repetitions are printed as a Markdown table, the raw runs as JSON lines.

  bench/scale.py                          # 1, 100, 1000, 10000 clients, 3 runs each
  bench/scale.py --clients 1000 --reps 5 --idle 60
  bench/scale.py --idp dev                # the built-in development issuer (fast, plain HTTP)
  bench/scale.py --steady 100 --ttl 20 --lifetimes 10
                                          # requests per client per token lifetime, steady state
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(*a):
    print(*a, file=sys.stderr, flush=True)


class Server:
    """The token server, as its own process: oauth2-mock-server (HTTPS) or `tokend dev`."""

    def __init__(self, kind, ttl, work, binary):
        self.kind = kind
        if kind == "mock":
            interop = os.path.join(ROOT, "tests/interop")
            if not os.path.isdir(os.path.join(interop, "node_modules")):
                subprocess.run(["npm", "ci", "--silent"], cwd=interop, check=True)
            env = dict(os.environ, STATE_DIR=os.path.join(work, "idp"), TOKEN_TTL=str(ttl))
            self.proc = subprocess.Popen(
                ["node", os.path.join(interop, "mock-idp.mjs")], env=env, stdout=subprocess.PIPE, text=True
            )
            info = json.loads(self.proc.stdout.readline())
            self.token_url, self.control = info["token_endpoint"], info["control_url"]
            self.extra = f"ca_file: {info['ca_file']}"
            self.client_id, self.secret = "app", "mock-secret"
        else:
            self.proc = subprocess.Popen(
                [binary, "dev", "--issuer-only", "--lifetime", f"{ttl}s"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            url = self.proc.stdout.readline().split()[-1]
            self.token_url, self.control, self.extra = f"{url}/oauth/token", url, ""
            self.client_id, self.secret = "tokend-dev", "tokend-dev-secret"

    def counts(self):
        """(requests, connections, peak in flight); the dev issuer counts requests only."""
        if self.kind == "mock":
            with urllib.request.urlopen(f"{self.control}/requests") as r:
                d = json.load(r)
            return d["count"], d["connections"], d["peak_in_flight"]
        with urllib.request.urlopen(f"{self.control}/_dev/requests") as r:
            d = json.load(r)
        return d["count"] if isinstance(d, dict) else len(d), None, None

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def write_config(work, server, n, refresh=""):
    secret = os.path.join(work, "secret")
    with open(secret, "w") as f:
        f.write(server.secret + "\n")
    os.chmod(secret, 0o600)
    lines = [
        f"state_dir: {work}/state",
        f"socket: {{ path: {work}/tokend.sock }}",
        "defaults:",
        f"  token_url: {server.token_url}",
        f"  client_id: {server.client_id}",
        f"  client_secret: {{ file: {secret} }}",
    ]
    if server.extra:
        lines.append(f"  {server.extra}")
    if refresh:
        lines.append(f"  refresh: {refresh}")
    lines.append("clients:")
    lines += [f"  c{i}: {{ audience: https://a{i}/, outputs: [{{ path: {work}/out/c{i} }}] }}" for i in range(n)]
    path = os.path.join(work, "tokend.yaml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


class Daemon:
    """`tokend run` with its own NOTIFY_SOCKET, so READY is timed from exec."""

    def __init__(self, binary, config, work, log_args=("--log-level", "warn")):
        self.notify_path = os.path.join(work, "notify.sock")
        if os.path.exists(self.notify_path):
            os.unlink(self.notify_path)
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.notify_path)
        env = dict(os.environ, NOTIFY_SOCKET=self.notify_path)
        self.log = os.path.join(work, "tokend.log")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [binary, "--config", config, *log_args, "run"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "a"),
        )

    def wait_ready(self, timeout):
        self.notify.settimeout(timeout)
        while True:
            msg = self.notify.recv(4096).decode()
            if "READY=1" in msg.split("\n"):
                return time.monotonic() - self.started

    def status(self, field):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])

    def per_thread(self, read):
        """`read(pid, tid)` for each live thread, by thread id."""
        values = {}
        for tid in os.listdir(f"/proc/{self.proc.pid}/task"):
            try:
                values[tid] = read(tid)
            except FileNotFoundError:
                pass
        return values

    def cpu_ns(self):
        """CPU time of each thread so far, in nanoseconds (schedstat; /proc/PID/stat counts in
        10 ms ticks, too coarse for an idle daemon)."""

        def read(tid):
            with open(f"/proc/{self.proc.pid}/task/{tid}/schedstat") as f:
                return int(f.read().split()[0])

        return self.per_thread(read)

    def switches(self):
        """Context switches (voluntary and not) of each thread, by thread id: each voluntary one
        is a sleep, so their growth over a window counts the wake-ups in it."""

        def read(tid):
            with open(f"/proc/{self.proc.pid}/task/{tid}/status") as f:
                return sum(int(line.split()[1]) for line in f if "ctxt_switches" in line)

        return self.per_thread(read)

    def threads(self):
        return len(os.listdir(f"/proc/{self.proc.pid}/task"))

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            with open(self.log) as f:
                tail = f.read()[-4000:]
            raise SystemExit(f"tokend did not stop within 60 s of SIGTERM; its log ends:\n{tail}")
        self.notify.close()
        return code


def one_run(args, server, n):
    work = tempfile.mkdtemp(prefix=f"tokend-scale-{n}-")
    try:
        config = write_config(work, server, n)
        run = {"clients": n}
        before = server.counts()
        d = Daemon(args.bin, config, work)
        run["first_ready_s"] = d.wait_ready(args.timeout)
        time.sleep(2)
        after = server.counts()
        run["first_rss_kib"], run["first_hwm_kib"] = d.status("VmRSS"), d.status("VmHWM")
        run["first_anon_kib"], run["first_file_kib"] = d.status("RssAnon"), d.status("RssFile")
        run["threads"] = d.threads()
        run["first_requests"] = after[0] - before[0]
        if after[1] is not None:
            run["first_connections"] = after[1] - before[1]
            run["peak_in_flight"] = after[2]
        files = len(os.listdir(os.path.join(work, "out")))
        if files != n:
            raise SystemExit(f"{n} clients but {files} output files after READY")
        if args.idle:
            # Blocking threads left from the fetch exit after 10 s idle: wait for them first.
            time.sleep(args.settle)
            cpu, sw, t = d.cpu_ns(), d.switches(), time.monotonic()
            time.sleep(args.idle)
            elapsed = time.monotonic() - t
            # Threads alive at both ends (a blocking thread that exits takes its counts along).
            delta = lambda a, b: sum(b[k] - a[k] for k in b if k in a)
            run["idle_cpu_s_per_h"] = delta(cpu, d.cpu_ns()) / 1e9 / elapsed * 3600
            run["idle_wakeups_per_s"] = delta(sw, d.switches()) / elapsed
        d.stop()
        before = server.counts()
        d = Daemon(args.bin, config, work)
        run["restart_ready_s"] = d.wait_ready(args.timeout)
        time.sleep(2)
        run["restart_rss_kib"] = d.status("VmRSS")
        run["restart_requests"] = server.counts()[0] - before[0]
        d.stop()
        return run
    finally:
        shutil.rmtree(work, ignore_errors=True)


def steady(args):
    """Requests per client per lifetime once every client has its first token."""
    work = tempfile.mkdtemp(prefix="tokend-scale-steady-")
    server = Server(args.idp, args.ttl, work, args.bin)
    try:
        n = args.steady
        # min_remaining is lowered so the 80% rule (jitter ±10%) applies to a short lifetime.
        config = write_config(work, server, n, refresh="{ min_remaining: 1s }")
        d = Daemon(args.bin, config, work, ("--log-level", "info", "--log-format", "json"))
        d.wait_ready(args.timeout)
        start = server.counts()[0]
        t = time.monotonic()
        time.sleep(args.ttl * args.lifetimes)
        elapsed = time.monotonic() - t
        total = server.counts()[0] - start
        d.stop()
        # Counting requests in a window is quantized (clients that started together refresh in
        # cycles); each client's own refresh interval is not: lifetime / mean interval.
        times = {}
        with open(d.log) as f:
            for line in f:
                try:
                    e = json.loads(line)
                except ValueError:
                    continue
                fields = e.get("fields", e)
                if fields.get("outcome") == "refreshed":
                    ts = e["timestamp"].replace("Z", "+00:00")
                    at = __import__("datetime").datetime.fromisoformat(ts).timestamp()
                    times.setdefault(fields.get("client"), []).append(at)
        ratios = [args.ttl * (len(v) - 1) / (v[-1] - v[0]) for v in times.values() if len(v) > 2]
        print(f"steady state: {n} clients, {args.ttl}s tokens, {elapsed:.0f}s: {total} requests "
              f"({total / n / (elapsed / args.ttl):.3f} per client per lifetime, counted in the window); "
              f"per client, lifetime / mean interval between its refreshes: median "
              f"{statistics.median(ratios):.3f}, min {min(ratios):.3f}, max {max(ratios):.3f} "
              f"({len(ratios)} clients)")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def median(runs, key):
    values = [r[key] for r in runs if key in r]
    return statistics.median(values) if values else None


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", default="1,100,1000,10000")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--idle", type=float, default=30, help="seconds of idle CPU measurement (0: skip)")
    p.add_argument("--settle", type=float, default=15, help="seconds after READY before the idle window")
    p.add_argument("--idp", choices=["mock", "dev"], default="mock")
    p.add_argument("--ttl", type=int, default=3600, help="token lifetime the server grants (s)")
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--bin", default=os.path.join(ROOT, "target/release/tokend"))
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--steady", type=int, default=0, help="clients for the steady-state measurement")
    p.add_argument("--lifetimes", type=int, default=10)
    args = p.parse_args()
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--locked", "-q"], cwd=ROOT, check=True)
    if args.steady:
        return steady(args)
    work = tempfile.mkdtemp(prefix="tokend-scale-idp-")
    server = Server(args.idp, args.ttl, work, args.bin)
    all_runs = []
    try:
        for n in [int(x) for x in args.clients.split(",")]:
            for rep in range(args.reps):
                run = one_run(args, server, n)
                print(json.dumps(run), flush=True)
                all_runs.append(run)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    cols = [
        ("first_ready_s", "first fetch to READY (s)", "{:.3f}"),
        ("first_rss_kib", "RSS after first fetch (KiB)", "{:.0f}"),
        ("first_hwm_kib", "peak RSS (KiB)", "{:.0f}"),
        ("first_anon_kib", "of which anonymous (KiB)", "{:.0f}"),
        ("first_connections", "connections", "{:.0f}"),
        ("peak_in_flight", "peak in flight", "{:.0f}"),
        ("restart_ready_s", "restart to READY (s)", "{:.3f}"),
        ("restart_rss_kib", "RSS after restart (KiB)", "{:.0f}"),
        ("restart_requests", "requests at restart", "{:.0f}"),
        ("idle_cpu_s_per_h", "idle CPU (s/h)", "{:.3f}"),
        ("idle_wakeups_per_s", "idle wake-ups/s", "{:.1f}"),
        ("threads", "threads", "{:.0f}"),
    ]
    print(f"\nmedians of {args.reps} runs, token server: {args.idp}")
    print("| clients | " + " | ".join(c[1] for c in cols) + " |")
    print("|---:|" + "---:|" * len(cols))
    for n in sorted({r["clients"] for r in all_runs}):
        runs = [r for r in all_runs if r["clients"] == n]
        cells = [(fmt.format(v) if (v := median(runs, k)) is not None else "—") for k, _, fmt in cols]
        print(f"| {n:,} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
