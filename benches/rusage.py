#!/usr/bin/env python3
"""Runs one command into a fresh DEST (removed first, then sync(2)) and prints
its wall time, CPU (user + sys of the child, from getrusage) and peak RSS.

Usage: benches/rusage.py NAME DEST -- command args...
KEEPLOG=FILE appends the command's stderr to FILE.
"""
import os, sys, time, resource, subprocess, shutil
name, dest = sys.argv[1], sys.argv[2]
cmd = sys.argv[sys.argv.index("--")+1:]
shutil.rmtree(dest, ignore_errors=True)
os.sync()
t0 = time.time(); r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
if os.environ.get("KEEPLOG"): open(os.environ["KEEPLOG"], "ab").write(p.stderr)
t1 = time.time(); r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
print(f"{name:22s} exit {p.returncode} wall {t1-t0:6.2f} s cpu {cpu:6.2f} s (user {r1.ru_utime-r0.ru_utime:.2f} sys {r1.ru_stime-r0.ru_stime:.2f}) rss {r1.ru_maxrss//1024} MiB", flush=True)
if p.returncode: print(p.stderr.decode()[-2000:])
