#!/usr/bin/env python3
"""What a buffered write costs by the size of each write call.

Writes FILES files of SIZE MiB into DIR/page-cache-writes as a download does (each file
preallocated, cut into PARTS ranges written by THREADS threads with pwrite
from a page-aligned buffer), once per call size, alternating, after deleting the last round's files,
sync(2) and a pause. Prints the wall and system time each round took.

    benches/page-cache-writes.py --dir /work/sw/wb --sizes 32,256 --rounds 3

On this project's VM, 4 GiB written in 256 KiB calls cost four to six times
the system time of 32 KiB calls, aligned or not (docs/benchmarks.md).
"""

import argparse
import mmap
import os
import resource
import shutil
import threading
import time


def one_round(d, files, size, parts, threads, call, unaligned):
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    os.sync()
    time.sleep(5)
    # Page-aligned, as s3load's write buffers are (or, with --unaligned, a
    # bytes object's memory, which starts a few bytes into a page).
    if unaligned:
        buf = b"x" * call
    else:
        buf = mmap.mmap(-1, call)
        buf.write(b"x" * call)
    fds = []
    for i in range(files):
        fd = os.open(os.path.join(d, f"f{i}"), os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o644)
        os.posix_fallocate(fd, 0, size)
        fds.append(fd)
    jobs = [(f, p) for f in range(files) for p in range(parts)]
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                if not jobs:
                    return
                f, p = jobs.pop(0)
            # The last range takes what the division leaves.
            start, end = p * (size // parts), size if p == parts - 1 else (p + 1) * (size // parts)
            for off in range(start, end, call):
                os.pwrite(fds[f], buf[: min(call, end - off)], off)

    before = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for fd in fds:
        os.close(fd)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_SELF)
    return wall, after.ru_stime - before.ru_stime


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True, help="a scratch directory on the disk to measure (emptied each round)")
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--parts", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", default="32,256", help="call sizes in KiB, comma-separated")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--unaligned", action="store_true", help="write from memory that does not start on a page")
    args = ap.parse_args()
    d = os.path.join(args.dir, "page-cache-writes")
    sizes = [int(s) for s in args.sizes.split(",")]
    for r in range(args.rounds):
        for kib in sizes:
            wall, sys_s = one_round(d, args.files, args.size_mib << 20, args.parts, args.threads, kib << 10, args.unaligned)
            print(f"round {r + 1}: {kib} KiB calls: wall {wall:.2f} s, system {sys_s:.2f} s", flush=True)
    shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
