"""The buffer-pool scenario, end to end.

Several worker processes share one pool file MAP_SHARED, each owning a
section, as a database's backends share a buffer pool.  When a client
leaves, its worker drops its section with MADV_REMOVE, without writing it
back; later an operator drops another with `holefs punch`.  After each
step every worker checks what it sees, and the memory is printed as holefs
and as the kernel count it.

    /opt/holefs/bin/python examples/pool_demo.py /mnt/pool/pool [--workers 4] [--size 64M]
"""

import argparse
import json
import mmap
import multiprocessing
import os
import subprocess
import sys

from holefs import STATUS_XATTR, release
from holefs.mounttable import filesystem_type
from holefs.options import parse_size

MiB = 1 << 20


def worker(path, size, index, count, conn):
    """Own section *index*: fill it, then obey 'check', 'leave' and 'quit'."""
    section = size // count
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), size, mmap.MAP_SHARED) as pool:
        start = index * section
        pool[start:start + section] = bytes([index + 1]) * section
        pool.flush()
        conn.send("ready")
        while True:
            command, dropped = conn.recv()
            if command == "leave":
                release(pool, start, section)
                conn.send("left")
            elif command == "check":
                conn.send(check(pool, section, count, index, dropped))
            else:
                return


def check(pool, section, count, me, dropped):
    """What this worker sees: zeros where sections were dropped, data elsewhere."""
    for i in range(count):
        want = 0 if i in dropped else i + 1
        view = pool[i * section:(i + 1) * section]
        if view.count(want) != section:
            return f"worker {me}: section {i} is wrong"
    return f"worker {me}: own data intact, dropped sections read zeros"


def memory(path):
    """One line of what holefs reports and one of what the kernel reports."""
    status = _mount_status(path)
    with open("/proc/meminfo") as f:
        meminfo = dict(line.split(":", 1) for line in f)
    return (f"  holefs: used {status['used'] // MiB} MiB, RAM {status['ram_used'] // MiB} MiB, "
            f"spill {status['spill_used'] // MiB} MiB\n"
            f"  kernel: pool st_blocks {os.stat(path).st_blocks * 512 // MiB} MiB, "
            f"Shmem {meminfo['Shmem'].strip()}, MemAvailable {meminfo['MemAvailable'].strip()}")


def _mount_status(path):
    """Walk up to the mount's root, which answers for the whole mount."""
    directory = os.path.dirname(os.path.abspath(path))
    while not os.path.ismount(directory):
        directory = os.path.dirname(directory)
    return json.loads(os.getxattr(directory, STATUS_XATTR))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help="the pool file, on a holefs mount")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--size", default="64M")
    args = parser.parse_args(argv)
    directory = os.path.dirname(os.path.abspath(args.path))
    if filesystem_type(directory) != "fuse.holefs":
        parser.error(f"{args.path}: not on a holefs mount")
    size = parse_size("size", args.size)
    count = args.workers
    section = size // count

    with open(args.path, "wb") as f:
        f.truncate(size)
    context = multiprocessing.get_context("fork")
    pipes, procs = [], []
    for i in range(count):
        ours, theirs = context.Pipe()
        proc = context.Process(target=worker, args=(args.path, size, i, count, theirs))
        proc.start()
        pipes.append(ours)
        procs.append(proc)
    for conn in pipes:
        conn.recv()
    print(f"{count} workers filled their {section // MiB} MiB sections of {args.path}")
    print(memory(args.path))

    dropped = set()

    def check_all():
        for conn in pipes:
            conn.send(("check", dropped))
        for conn in pipes:
            print("  " + conn.recv())

    leaver = count - 1
    pipes[leaver].send(("leave", None))
    pipes[leaver].recv()
    dropped.add(leaver)
    print(f"client of worker {leaver} left: its section dropped with MADV_REMOVE")
    check_all()
    print(memory(args.path))

    if count > 1:
        victim = count - 2
        subprocess.run([sys.executable, "-m", "holefs", "punch", args.path,
                        str(victim * section), str(section)], check=True)
        dropped.add(victim)
        print(f"`holefs punch` dropped section {victim}")
        check_all()
        print(memory(args.path))

    for conn in pipes:
        conn.send(("quit", None))
    for proc in procs:
        proc.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
