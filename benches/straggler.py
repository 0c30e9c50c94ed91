#!/usr/bin/env python3
"""s3load with and without a straggler: one GET body in twenty slowed.

Run through benches/straggler.sh, which builds s3load and the test server.
Starts two test servers holding the same 4 x 1 GiB legacy objects (MD5 ETags
in 50 MiB parts, as s5cmd uploads them), both with 20 ms before each first
byte and 100 MB/s per connection; on the second, every 20th GET body comes
at 5 MB/s instead. Downloads from each in turn, alternating, with default
flags, and reports medians of wall time and CPU, their ratio, the straggling
ranges requested again, and the slowest range's time against the median
range's (each range's time is logged at debug level, from its first request
to its last byte, whatever was requested again), and peak RSS.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

SHAPE = ["--large", "4", "--legacy", "--latency-ms", "20", "--rate-mbps", "100"]


def start(server, extra, log):
    p = subprocess.Popen([server] + SHAPE + extra, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    for _ in range(600):
        text = open(log).read()
        if "endpoint" in text:
            env = dict(os.environ, AWS_EC2_METADATA_DISABLED="true")
            for line in text.splitlines():
                if line.startswith("export "):
                    for kv in line[len("export "):].split():
                        k, v = kv.split("=", 1)
                        env[k] = v
            ep = next(l.split()[1] for l in text.splitlines() if l.startswith("endpoint"))
            return p, ep, env
        time.sleep(0.1)
    p.terminate()
    sys.exit("the test server did not start")


def run(s3load, ep, env, dst):
    shutil.rmtree(dst, ignore_errors=True)
    os.sync()
    cmd = [s3load, "--endpoint-url", ep, "--progress", "off", "--log", "debug", "--log-format", "json",
           "sync", "s3://bucket/large/*", dst]
    start = time.monotonic()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.monotonic() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"s3load failed: {err.decode()[-2000:]}")
    ranges, hedges = [], 0
    for line in err.decode().splitlines():
        try:
            j = json.loads(line)
        except ValueError:
            continue
        if j.get("message") == "range fetched":
            ranges.append(j["secs"])
        elif "straggling" in j.get("message", ""):
            hedges += 1
    shutil.rmtree(dst, ignore_errors=True)
    # Builds that do not log each range's time give no ratio (nan).
    ratio = max(ranges) / statistics.median(ranges) if ranges else float("nan")
    return wall, usage.ru_utime + usage.ru_stime, hedges, ratio, usage.ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--s3load", required=True)
    ap.add_argument("--server", required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    scratch = tempfile.mkdtemp(prefix="s3load-straggler-", dir=args.dir)
    configs = {}
    try:
        configs["no straggler"] = start(args.server, [], os.path.join(scratch, "plain.log"))
        slow = ["--straggler-every", "20", "--straggler-mbps", "5"]
        configs["1 in 20 at 5 MB/s"] = start(args.server, slow, os.path.join(scratch, "slow.log"))
        samples = {c: [] for c in configs}
        for r in range(args.runs):
            for c in (list(configs) if r % 2 == 0 else list(reversed(list(configs)))):
                _, ep, env = configs[c]
                samples[c].append(run(args.s3load, ep, env, os.path.join(scratch, "dst")))
                print(c, "wall %.2f s, CPU %.2f s, %d requested again, slowest range %.1fx the median, peak RSS %.0f MiB" % samples[c][-1], flush=True)
        print()
        print(f"4 x 1 GiB legacy, 20 ms first byte, 100 MB/s per connection, medians of {args.runs} alternating runs")
        print("| server | wall s | CPU s | ranges requested again | slowest range / median range | peak RSS MiB |")
        print("|---|---|---|---|---|---|")
        med = {c: [statistics.median(s[i] for s in v) for i in range(5)] for c, v in samples.items()}
        for c, (wall, cpu, hedges, ratio, rss) in med.items():
            print(f"| {c} | {wall:.2f} | {cpu:.2f} | {hedges:.0f} | {ratio:.1f}x | {rss:.0f} |")
        base, strag = med["no straggler"][0], med["1 in 20 at 5 MB/s"][0]
        print(f"\nwith the straggler / without: {strag / base:.2f}x")
    finally:
        for p, _, _ in configs.values():
            p.terminate()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
