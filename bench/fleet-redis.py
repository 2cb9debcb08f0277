#!/usr/bin/env python3
"""Fleet mode with real parts, on loopback: Debian's redis-server (with a password), the
development issuer (`tokend dev --issuer-only`) as its own process, and N release `tokend run`
processes, each with its own config, state directory, socket and token files. Every host's token
file (of one client) is read 10 times a second by a reader thread of this script.

Scenarios (each prints one JSON line and a short table):
  share      N refreshers, one client; then the same hosts without `fleet:` (the baseline)
  followers  2 refreshers + N-2 followers whose configs hold no client secret
  outage     N refreshers; Redis killed for 3 lifetimes mid-run, then started again, empty
  scale      N hosts, C clients each (every host holds all C), refreshers

What is measured, over LIFETIMES token lifetimes after every host has its first tokens:
  - token requests per lifetime (the issuer's own log of requests), for the fleet and per client,
    counted in the window and from the intervals between requests (which does not depend on
    where the window falls); in the outage, per host from the intervals between its own tokens,
    and the requests after the first lifetime with Redis back;
  - Redis commands per client per lifetime per host (INFO commandstats, before and after);
  - reads: every read of every host's file is checked: empty, torn (not a whole JWT), or expired
    (its `exp` passed) count as bad;
  - spread: for each token issued in the window, the time from its first write on any host (the
    host that asked, just after the IdP answered) to its write on each other host (the files'
    mtimes), p50/p99/max; and each host's own histogram of the delay from a token's issue (the
    request's sending) to its adoption, with how it came (announcement or store; the start-up's
    adoptions included);
  - after the run: every value in Redis and every host's log scanned for every token the hosts
    wrote and for the client secret and the Redis password (0 hits expected).

Usage: bench/fleet-redis.py [share|followers|outage|scale] [--nodes N] [--clients C]
         [--lifetime SECONDS] [--lifetimes K] [--bin target/release/tokend] [--log-level info]
"""
import argparse
import base64
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

SECRET = "bench-s3cret/with+odd=chars"
REDIS_PASSWORD = "bench-redis-password"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def claims(jwt):
    part = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


class Redis:
    def __init__(self, work):
        self.port = free_port()
        self.work = work
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--requirepass", REDIS_PASSWORD,
             "--save", "", "--appendonly", "no", "--dir", self.work],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            if self.cli("PING").strip() == "PONG":
                return
            time.sleep(0.05)
        raise SystemExit("redis-server did not start")

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def cli(self, *args):
        out = subprocess.run(["redis-cli", "-p", str(self.port), "--no-auth-warning", "-a", REDIS_PASSWORD, *args],
                             capture_output=True, text=True)
        return out.stdout + out.stderr

    def commands(self):
        """Calls of each command since the start (or since CONFIG RESETSTAT)."""
        calls = {}
        for line in self.cli("INFO", "commandstats").splitlines():
            if line.startswith("cmdstat_"):
                name, rest = line[len("cmdstat_"):].split(":", 1)
                fields = dict(kv.split("=") for kv in rest.split(","))
                calls[name] = int(fields["calls"])
        return calls

    def values(self):
        keys = [k for k in self.cli("--scan").splitlines() if k]
        return [(k, self.cli("GET", k)) for k in keys]


class Issuer:
    def __init__(self, binary, work, lifetime):
        path = os.path.join(work, "issuer-clients.json")
        with open(path, "w") as f:
            json.dump({"app": SECRET}, f)
        self.proc = subprocess.Popen(
            [binary, "dev", "--issuer-only", "--lifetime", f"{lifetime}s", "--clients-file", path],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.url = self.proc.stdout.readline().split()[-1]

    def requests(self):
        with urllib.request.urlopen(self.url + "/_dev/requests") as r:
            return json.load(r)["requests"]

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


class Host:
    def __init__(self, binary, work, name, issuer, redis, role, clients, fleet, log_level):
        self.dir = os.path.join(work, name)
        os.makedirs(self.dir)
        secret = os.path.join(work, "client.secret")
        lines = [f"state_dir: {self.dir}/state", f"socket: {{ path: {self.dir}/tokend.sock }}"]
        if fleet:
            lines += [
                "fleet:",
                f"  redis: {{ url: \"redis://127.0.0.1:{redis.port}/0\", password: {{ file: {work}/redis.password }} }}",
                f"  key: {{ file: {work}/fleet.key }}",
                "  namespace: bench",
                f"  role: {role}",
            ]
        lines.append("defaults:")
        lines.append(f"  token_url: {issuer.url}/oauth/token")
        lines.append("  client_id: app")
        if role != "follower":
            lines.append(f"  client_secret: {{ file: {secret} }}")
        lines.append("  refresh: { min_remaining: 2s }")
        lines.append("clients:")
        for c in range(clients):
            lines.append(f"  c{c}: {{ audience: https://c{c}/, outputs: [{{ path: {self.dir}/out/c{c}.token }}] }}")
        self.config = os.path.join(self.dir, "config.yaml")
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.log = open(os.path.join(self.dir, "log"), "w")
        self.proc = subprocess.Popen([binary, "--config", self.config, "--log-format", "json", "--log-level", log_level, "run"],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.role = role

    def token_file(self, client=0):
        return os.path.join(self.dir, "out", f"c{client}.token")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


class Reader(threading.Thread):
    """Reads one host's token file 10 times a second; counts bad reads and when each token was
    written there (the file's mtime)."""

    def __init__(self, host):
        super().__init__(daemon=True)
        self.path = host.token_file()
        self.role = host.role
        self.stop = threading.Event()
        self.reads = 0
        self.bad = {"empty": 0, "torn": 0, "expired": 0, "missing": 0}
        self.written = {}  # token -> mtime

    def run(self):
        while not self.stop.is_set():
            self.reads += 1
            try:
                with open(self.path, "rb") as f:
                    data = f.read()
                    mtime = os.fstat(f.fileno()).st_mtime
            except FileNotFoundError:
                self.bad["missing"] += 1
                time.sleep(0.1)
                continue
            text = data.decode(errors="replace")
            if not text:
                self.bad["empty"] += 1
            elif text.count(".") != 2:
                self.bad["torn"] += 1
            else:
                try:
                    exp = claims(text)["exp"]
                    if exp <= time.time():
                        self.bad["expired"] += 1
                    self.written.setdefault(text, mtime)
                except Exception:
                    self.bad["torn"] += 1
            time.sleep(0.1)


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def wait_for_files(hosts, clients, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if all(os.path.exists(h.token_file(c)) for h in hosts for c in range(clients)):
            return
        time.sleep(0.2)
    raise SystemExit("the hosts did not all get their first tokens")


def run(args, scenario, fleet=True):
    work = tempfile.mkdtemp(prefix="tokend-bench-fleet-redis-")
    for name, content in [("client.secret", SECRET), ("redis.password", REDIS_PASSWORD)]:
        path = os.path.join(work, name)
        with open(path, "w") as f:
            f.write(content)
        os.chmod(path, 0o600)
    key = subprocess.run([args.bin, "fleet", "keygen"], capture_output=True, text=True, check=True).stdout
    with open(os.path.join(work, "fleet.key"), "w") as f:
        f.write(key)
    os.chmod(os.path.join(work, "fleet.key"), 0o600)
    redis = Redis(work)
    issuer = Issuer(args.bin, work, args.lifetime)
    roles = ["refresher"] * args.nodes
    if scenario == "followers":
        roles = ["refresher"] * 2 + ["follower"] * (args.nodes - 2)
    hosts = []
    first = {}
    result = {"scenario": scenario if fleet else f"{scenario}-without-fleet", "nodes": args.nodes,
              "clients": args.clients, "lifetime_s": args.lifetime, "lifetimes": args.lifetimes}
    try:
        started = time.time()
        for i, role in enumerate(roles):
            hosts.append(Host(args.bin, work, f"h{i}", issuer, redis, role, args.clients, fleet, args.log_level))
        wait_for_files(hosts, args.clients)
        result["first_tokens_s"] = round(time.time() - started, 2)
        readers = [Reader(h) for h in hosts]
        for r in readers:
            r.start()
        time.sleep(1)
        redis.cli("CONFIG", "RESETSTAT")
        t0, asked0 = time.time(), len(issuer.requests())
        phases = []
        if scenario == "outage":
            # Two lifetimes shared (and a random part of a refresh cycle, so that the outage does
            # not always begin at the same point of the cycle: the hosts, due together, would
            # fit 3 or 4 refreshes into it by where it begins), three with the store gone, then
            # back empty for three.
            import random
            time.sleep(random.uniform(0, 0.8 * args.lifetime))
            for label, seconds, action in [("before", 2, None), ("outage", 3, redis.kill), ("after", 3, redis.start)]:
                if action:
                    action()
                p0, a0 = time.time(), len(issuer.requests())
                result[f"{label}_began"] = p0
                time.sleep(seconds * args.lifetime)
                lifetimes = (time.time() - p0) / args.lifetime
                phases.append({"phase": label, "requests_per_lifetime": round((len(issuer.requests()) - a0) / lifetimes, 2)})
            result["phases"] = phases
            # A count in a 3-lifetime window is whole refresh cycles: hosts that held the fleet's
            # token are due together, so each fits 3 or 4 of its own cycles into the outage by
            # where it began (1.0 or 1.33 per lifetime). The rate that does not depend on where
            # the window falls comes from the intervals: each host's own tokens during the outage
            # (their writes to its file), and the fleet's requests after the first lifetime back.
            cycles = rates = 0
            for r in readers:
                own = sorted(m for m in list(r.written.values())
                             if result["outage_began"] <= m < result["after_began"])
                if len(own) >= 2:
                    cycles += len(own) - 1
                    rates += (len(own) - 1) / (own[-1] - own[0]) * args.lifetime
            result["outage_rate_from_intervals_per_lifetime"] = round(rates, 2)
            result["outage_cycles_measured"] = cycles
            settled = sorted(q["at_ms"] / 1000 for q in issuer.requests()
                             if q["at_ms"] / 1000 >= result["after_began"] + args.lifetime)
            if len(settled) >= 2:
                result["after_first_lifetime_rate_from_intervals"] = round(
                    (len(settled) - 1) / (settled[-1] - settled[0]) * args.lifetime, 2)
            result["after_first_lifetime_requests"] = len(settled)
        else:
            time.sleep(args.lifetimes * args.lifetime)
        elapsed = time.time() - t0
        seen = issuer.requests()
        asked = len(seen) - asked0
        # The same rate without counting whole cycles in a window (which gives 12 or 13 requests
        # in 10 lifetimes by where the window falls): per client, the requests in the window over
        # the time from its first to its last, averaged over the clients.
        by_client = {}
        for q in seen[asked0:]:
            by_client.setdefault(q.get("audience"), []).append(q["at_ms"] / 1000)
        rates = [(len(t) - 1) / (max(t) - min(t)) * args.lifetime for t in by_client.values() if len(t) >= 2 and max(t) > min(t)]
        if rates and scenario != "outage":
            result["requests_per_client_per_lifetime_from_intervals"] = round(statistics.mean(rates), 3)
        commands = redis.commands()
        # Each host's own account: adoptions by how they came, and the delay histogram.
        adoptions, buckets = {}, {}
        for h in hosts:
            out = subprocess.run(["curl", "-s", "--unix-socket", os.path.join(h.dir, "tokend.sock"), "http://localhost/metrics"],
                                 capture_output=True, text=True).stdout
            for line in out.splitlines():
                if line.startswith("tokend_fleet_adoptions_total{"):
                    via = line.split('via="')[1].split('"')[0]
                    adoptions[via] = adoptions.get(via, 0) + int(float(line.rsplit(" ", 1)[1]))
                elif line.startswith("tokend_fleet_adoption_delay_seconds_bucket{"):
                    le = line.split('le="')[1].split('"')[0]
                    buckets[le] = buckets.get(le, 0) + int(float(line.rsplit(" ", 1)[1]))
        result["adoptions"] = adoptions
        result["adoption_delay_buckets"] = buckets
        info = {}
        for section in ("memory", "clients", "stats"):
            for line in redis.cli("INFO", section).splitlines():
                if ":" in line:
                    k, v = line.split(":", 1)
                    info[k] = v.strip()
        result["redis_used_memory_bytes"] = int(info.get("used_memory", 0))
        result["redis_connected_clients"] = int(info.get("connected_clients", 0))
        result["redis_pubsub_channels"] = int(info.get("pubsub_channels", 0))
        result["redis_keys"] = len([k for k in redis.cli("--scan").splitlines() if k])
        for r in readers:
            r.stop.set()
        for r in readers:
            r.join()
        lifetimes = elapsed / args.lifetime
        result["requests"] = asked
        result["requests_per_lifetime"] = round(asked / lifetimes, 3)
        result["requests_per_client_per_lifetime"] = round(asked / lifetimes / args.clients, 3)
        total_commands = sum(commands.values())
        result["redis_commands"] = commands
        result["redis_commands_per_client_per_lifetime_per_node"] = round(
            total_commands / lifetimes / args.clients / args.nodes, 2)
        reads = sum(r.reads for r in readers)
        bad = {k: sum(r.bad[k] for r in readers) for k in ["empty", "torn", "expired", "missing"]}
        result["reads"] = reads
        result["bad_reads"] = bad
        refresher_bad = sum(sum(r.bad.values()) for r in readers if r.role == "refresher")
        result["bad_reads_on_refreshers"] = refresher_bad
        # Spread: from each token's first write on any host to its write on every other host.
        first = {}
        for r in readers:
            for token, mtime in r.written.items():
                first[token] = min(first.get(token, mtime), mtime)
        # Only tokens issued in the measured window: the first one was written while the hosts
        # were still starting, one after another.
        delays = [mtime - first[token] for r in readers for token, mtime in r.written.items()
                  if mtime > first[token] and first[token] >= t0]
        result["tokens_seen"] = len(first)
        result["spread_ms"] = {
            "p50": round(1000 * (percentile(delays, 50) or 0), 1),
            "p99": round(1000 * (percentile(delays, 99) or 0), 1),
            "max": round(1000 * (max(delays) if delays else 0), 1),
            "samples": len(delays),
        }
    finally:
        for h in hosts:
            h.stop()
        issuer.stop()
    if redis.proc.poll() is None:
        time.sleep(0.5)
        for line in redis.cli("INFO", "memory").splitlines():
            if line.startswith("used_memory:"):
                result["redis_used_memory_after_hosts_stop_bytes"] = int(line.split(":")[1])
    # Nothing in clear: every value in Redis, every host's log.
    needles = [SECRET, REDIS_PASSWORD] + list(first.keys())
    values = redis.values() if redis.proc.poll() is None else []
    result["redis_values_scanned"] = len(values)
    result["redis_values_with_a_token_or_secret"] = sum(1 for _, v in values if any(n in v for n in needles))
    logs = [open(os.path.join(h.dir, "log"), errors="replace").read() for h in hosts]
    result["log_bytes_scanned"] = sum(len(text) for text in logs)
    result["log_lines_with_a_token_or_secret"] = sum(
        1 for text in logs for line in text.splitlines() if any(n in line for n in needles) or "eyJhbGciOi" in line)
    result["log_level"] = args.log_level
    if redis.proc.poll() is None:
        redis.kill()
    if os.environ.get("KEEP"):
        result["work"] = work
    else:
        shutil.rmtree(work, ignore_errors=True)
    return result


def show(r):
    print(json.dumps(r), flush=True)
    print(f"# {r['scenario']}: {r['nodes']} hosts x {r['clients']} clients, {r['lifetime_s']}s tokens: "
          f"{r['requests_per_client_per_lifetime']} requests per client per lifetime "
          f"({r['requests']} in all; from the intervals {r.get('requests_per_client_per_lifetime_from_intervals')}); {r['redis_commands_per_client_per_lifetime_per_node']} Redis commands per client "
          f"per lifetime per host; {r['reads']} reads, bad {r['bad_reads']}; spread {r['spread_ms']}; "
          f"Redis values with a token or secret: {r['redis_values_with_a_token_or_secret']} of {r['redis_values_scanned']}; "
          f"log lines with one: {r['log_lines_with_a_token_or_secret']}", flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("scenario", choices=["share", "followers", "outage", "scale"])
    p.add_argument("--nodes", type=int, default=50)
    p.add_argument("--clients", type=int, default=1)
    p.add_argument("--lifetime", type=int, default=20)
    p.add_argument("--lifetimes", type=int, default=10)
    p.add_argument("--bin", default="target/release/tokend")
    p.add_argument("--log-level", default="info")
    args = p.parse_args()
    show(run(args, args.scenario))
    if args.scenario == "share":
        show(run(args, args.scenario, fleet=False))


if __name__ == "__main__":
    main()
