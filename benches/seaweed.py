#!/usr/bin/env python3
"""s3load beside s5cmd and rclone on a third-party S3 server (SeaweedFS).

Run through benches/seaweed.sh, which installs the tools and builds s3load.
Starts `weed mini` on loopback with static credentials, uploads each workload
with s5cmd (so objects are what s5cmd users have: above 50 MiB multipart in
50 MiB parts, MD5 ETags, no stored checksum), then downloads it with each tool in turn,
alternating, into a fresh directory on the local disk, after sync(2). Reports
medians of wall time, client CPU (user + sys of the tool's process, from
wait4) and its peak RSS, and each tool's ratio to s3load. The server shares
the machine's cores with the client, as a busy node would: the CPU the
server spent during each run is reported too (from /proc), and with it the
least wall time the two cores allow, (client CPU + server CPU) / cores, which
no client can beat while it and the server need that much. With --limit-rate,
it measures how closely s3load holds that rate instead (rate-windows.py).
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

KEY, SECRET = "benchkey", "benchsecret"

WORKLOADS = {
    # name: [(relative path, size in bytes), ...]
    "large": [(f"shard-{i}.bin", 1 << 30) for i in range(1, 5)],
    "model": [("model-00001-of-00002.safetensors", 2 << 30), ("model-00002-of-00002.safetensors", 300 << 20)]
    + [(f"config-{i}.json", 4096 + i * 1000) for i in range(12)],
    "small": [(f"d{i % 50:02d}/f{i:05d}.bin", 64 << 10) for i in range(5000)],
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tools(s3load, endpoint, baseline=None):
    env_creds = {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_REGION": "us-east-1"}
    rclone = [
        "rclone", "--config", "/dev/null", "--s3-provider", "Other", "--s3-endpoint", endpoint,
        "--s3-access-key-id", KEY, "--s3-secret-access-key", SECRET,
    ]
    return {
        "s3load": lambda src, dst: [s3load, "--endpoint-url", endpoint, "--progress", "off", "sync", f"s3://bench/{src}/*", dst],
        "s3load-direct": lambda src, dst: [
            s3load, "--endpoint-url", endpoint, "--progress", "off", "--write-mode", "direct", "sync", f"s3://bench/{src}/*", dst,
        ],
        "s3load-verify-off": lambda src, dst: [
            s3load, "--endpoint-url", endpoint, "--progress", "off", "--verify", "off", "sync", f"s3://bench/{src}/*", dst,
        ],
        # Another build of s3load (--baseline), default flags: before and after a change.
        "s3load-baseline": lambda src, dst: [
            baseline, "--endpoint-url", endpoint, "--progress", "off", "sync", f"s3://bench/{src}/*", dst,
        ],
        "s5cmd": lambda src, dst: ["s5cmd", "--endpoint-url", endpoint, "sync", f"s3://bench/{src}/*", dst + "/"],
        # --durability syncfs against s5cmd followed by sync(1): both end with the data on disk
        # (sync(1) flushes every filesystem, syncfs the destination's only).
        "s3load-syncfs": lambda src, dst: [
            s3load, "--endpoint-url", endpoint, "--progress", "off", "--durability", "syncfs", "sync", f"s3://bench/{src}/*", dst,
        ],
        "s5cmd-then-sync": lambda src, dst: [
            "sh", "-c", 's5cmd --endpoint-url "$0" sync "$1" "$2" && sync', endpoint, f"s3://bench/{src}/*", dst + "/",
        ],
        # rclone at its fastest settings here.
        "rclone": lambda src, dst: rclone + ["--transfers", "32", "--multi-thread-streams", "16", "copy", f":s3:bench/{src}", dst],
    }, env_creds


def proc_cpu(pid):
    """CPU seconds (user + sys, its threads and its waited-for children) of process `pid`."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def run(cmd, env):
    """Wall time, CPU (user + sys) and peak RSS in MiB of one run, from wait4."""
    start = time.monotonic()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.monotonic() - start
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({p.returncode}): {err.decode()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--s3load", required=True)
    ap.add_argument("--baseline", default=None, help="another s3load binary, run as the tool s3load-baseline")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--workloads", default="large,model,small")
    ap.add_argument("--tools", default="s3load,s5cmd,rclone")
    ap.add_argument("--dir", default=None, help="scratch directory on the disk to measure (default: a temporary one)")
    ap.add_argument(
        "--then-read", action="store_true",
        help="after each run, read every file once (cat) and report that reader's wall time and CPU too",
    )
    ap.add_argument(
        "--pause", type=float, default=0, metavar="SECONDS",
        help="wait this long before each run, after the last destination is removed (see docs/benchmarks.md's pitfalls)",
    )
    ap.add_argument(
        "--keep-files", action="store_true",
        help="each run into a directory of its own, all removed only after the workload's last run: no run follows "
        "the deletion of another's files (needs the disk space of every run)",
    )
    ap.add_argument(
        "--limit-rate", type=float, default=None, metavar="MIB",
        help="instead of comparing: one s3load run of each workload at --limit-rate MIB MiB/s, its rate over 10 s windows",
    )
    args = ap.parse_args()
    if args.dir:
        os.makedirs(args.dir, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="s3load-seaweed-", dir=args.dir)
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    config = os.path.join(scratch, "s3.json")
    with open(config, "w") as f:
        ident = {"name": "bench", "credentials": [{"accessKey": KEY, "secretKey": SECRET}], "actions": ["Admin", "Read", "Write", "List"]}
        json.dump({"identities": [ident]}, f)
    data = os.path.join(scratch, "weed")
    os.makedirs(data)
    ports = {p: free_port() for p in ["master.port", "volume.port", "filer.port"]}
    weed_cmd = ["weed", "mini", f"-dir={data}", f"-s3.port={port}", f"-s3.config={config}", "-ip=127.0.0.1", "-admin.ui=false"]
    weed_cmd += [f"-{k}={v}" for k, v in ports.items()]
    log = open(os.path.join(scratch, "weed.log"), "w")
    weed = subprocess.Popen(weed_cmd, stdout=log, stderr=log)
    all_tools, creds = tools(args.s3load, endpoint, args.baseline)
    env = dict(os.environ, **creds, AWS_EC2_METADATA_DISABLED="true")
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        time.sleep(3)
        for _ in range(30):
            if subprocess.run(["s5cmd", "--endpoint-url", endpoint, "mb", "s3://bench"], env=env, capture_output=True).returncode == 0:
                break
            time.sleep(1)
        for cmd in (["weed", "version"], ["s5cmd", "version"], ["rclone", "version"], [args.s3load, "--version"]):
            out = subprocess.run(cmd, capture_output=True, text=True).stdout.strip().splitlines()
            print(f"{cmd[0]}: {out[0] if out else '?'}", flush=True)
        rows = []
        for w in args.workloads.split(","):
            src = os.path.join(scratch, "src", w)
            for rel, size in WORKLOADS[w]:
                path = os.path.join(src, rel)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as f:
                    left = size
                    if rel.endswith(".safetensors"):
                        # A well-formed header (s3load checks it), then the tensor's bytes.
                        n = size - 8 - 128
                        header = json.dumps({"weight": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]}})
                        header = header.encode().ljust(128)
                        f.write(len(header).to_bytes(8, "little") + header)
                        left = n
                    while left:
                        n = min(left, 8 << 20)
                        f.write(os.urandom(n))
                        left -= n
            subprocess.run(["s5cmd", "--endpoint-url", endpoint, "cp", src + "/", f"s3://bench/{w}/"], env=env, check=True, capture_output=True)
            shutil.rmtree(src)
            if args.limit_rate:
                dst = os.path.join(scratch, "dst")
                cmd = [args.s3load, "--endpoint-url", endpoint, "--progress", "log", "--progress-interval", "1s"]
                cmd += ["--log-format", "json", "--limit-rate", f"{args.limit_rate}MiB", "sync", f"s3://bench/{w}/*", dst]
                log = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True).stderr
                windows = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rate-windows.py")
                rate = subprocess.run([sys.executable, windows, str(args.limit_rate)], input=log, capture_output=True)
                print(f"{w}: {rate.stdout.decode().strip() or rate.stderr.decode().strip()}", flush=True)
                # The same files uploaded at the same limit: the bytes s3load writes
                # (/proc/PID/io wchar, sampled every second; sockets count, and an
                # upload writes no file) are what it sends, headers included.
                cmd = [args.s3load, "--endpoint-url", endpoint, "--progress", "off", "--limit-rate", f"{args.limit_rate}MiB"]
                cmd += ["sync", dst + "/", f"s3://bench/{w}-up/"]
                p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                samples = []
                while p.poll() is None:
                    try:
                        with open(f"/proc/{p.pid}/io") as f:
                            wchar = int(next(l for l in f if l.startswith("wchar:")).split()[1])
                        samples.append((time.monotonic(), wchar))
                    except (OSError, StopIteration):
                        pass
                    time.sleep(1)
                target = args.limit_rate * 2**20
                rates = [(b1 - b0) / (t1 - t0) for i, (t0, b0) in enumerate(samples) for (t1, b1) in samples[i + 10 : i + 11]]
                if p.returncode == 0 and rates:
                    worst = max(abs(r - target) / target for r in rates) * 100
                    lo, hi = min(rates) / 2**20, max(rates) / 2**20
                    print(f"{w} upload: {len(rates)} windows of 10 s: {lo:.2f} to {hi:.2f} MiB/s, at most {worst:.2f}% from the limit", flush=True)
                else:
                    print(f"{w} upload: exit {p.returncode}, {len(samples)} samples", flush=True)
                shutil.rmtree(dst, ignore_errors=True)
                continue
            samples = {t: [] for t in args.tools.split(",")}
            kept = []
            for r in range(args.runs):
                order = list(samples) if r % 2 == 0 else list(reversed(list(samples)))
                for t in order:
                    dst = os.path.join(scratch, f"dst-{t}-{r}" if args.keep_files else "dst")
                    shutil.rmtree(dst, ignore_errors=True)
                    os.sync()
                    time.sleep(args.pause)
                    server = proc_cpu(weed.pid)
                    sample = run(all_tools[t](w, dst), env)
                    sample += (proc_cpu(weed.pid) - server,)
                    if args.then_read:
                        # The model server's first read of every file, right after the download.
                        reader = ["sh", "-c", 'find "$0" -type f -exec cat {} + > /dev/null', dst]
                        sample += run(reader, env)[:2]
                    samples[t].append(sample)
                    if args.keep_files:
                        kept.append(dst)
                    else:
                        shutil.rmtree(dst, ignore_errors=True)
            for dst in kept:
                shutil.rmtree(dst, ignore_errors=True)
            fields = len(next(iter(samples.values()))[0])
            med = {t: tuple(statistics.median(s[i] for s in v) for i in range(fields)) for t, v in samples.items()}
            base = med.get("s3load")
            cores = len(os.sched_getaffinity(0))
            for t, m in med.items():
                wall, cpu, rss, server = m[:4]
                ratio = f"{base[0] / wall:.2f} | {base[1] / cpu:.2f}" if base and t != "s3load" else "- | -"
                read = f" {m[4]:.2f} | {m[5]:.2f} | {wall + m[4]:.2f} |" if args.then_read else ""
                least = (cpu + server) / cores
                rows.append(f"| {w} | {t} | {wall:.2f} | {cpu:.2f} | {rss:.0f} | {server:.2f} | {least:.2f} | {ratio} |{read}")
                print(rows[-1], flush=True)
        print()
        print(f"SeaweedFS `weed mini`, objects uploaded by s5cmd, medians of {args.runs} alternating runs")
        print(
            f"(server CPU s: the server's during the run; least wall s: the medians of client and server CPU over "
            f"the {len(os.sched_getaffinity(0))} cores this runs on)"
        )
        head = "| workload | tool | wall s | CPU s | peak RSS MiB | server CPU s | least wall s | s3load/tool wall | CPU |"
        if args.then_read:
            print(head + " read wall s | read CPU s | download + read s |")
            print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        else:
            print(head)
            print("|---|---|---|---|---|---|---|---|---|")
        print("\n".join(rows))
    finally:
        weed.terminate()
        try:
            weed.wait(timeout=20)
        except subprocess.TimeoutExpired:
            weed.kill()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
