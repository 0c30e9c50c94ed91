#!/usr/bin/env python3
"""Reads s3load's JSON log (--progress log --log-format json) on stdin and
prints the rate over every 10 s window between progress lines, against the
--limit-rate given as the first argument in MiB/s. Used by
`benches/seaweed.sh --limit-rate 100 --workloads large` (docs/benchmarks.md).
"""
import datetime
import json
import sys

target = float(sys.argv[1]) * 2**20
points = []
for line in sys.stdin:
    try:
        j = json.loads(line)
    except ValueError:
        continue
    if j.get("message") == "progress":
        t = datetime.datetime.fromisoformat(j["timestamp"].replace("Z", "+00:00")).timestamp()
        points.append((t, j["bytes_done"]))
rates = [
    (b1 - b0) / (t1 - t0)
    for i, (t0, b0) in enumerate(points)
    for (t1, b1) in points[i + 1 :]
    if abs((t1 - t0) - 10) < 0.05
]
if not rates:
    sys.exit("no 10 s windows: run longer, with --progress-interval 1s")
worst = max(abs(r - target) / target for r in rates) * 100
print(f"{len(rates)} windows of 10 s: {min(rates) / 2**20:.2f} to {max(rates) / 2**20:.2f} MiB/s, at most {worst:.2f}% from the limit")
