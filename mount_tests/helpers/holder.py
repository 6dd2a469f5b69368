"""A process that holds what a restart must not disturb, and checks it.

Usage: holder.py DIR STOPFILE, or holder.py --check DIR ROUNDS to check
what a holder left, from a process of its own.

In DIR, its working directory, it appends a record per round to an open
file, writes the round's number into a MAP_SHARED mapping, creates a file
by a relative name and unlinks an older one, and writes to a file that it
unlinked while open.  It prints the round count once, then once STOPFILE
exists it syncs, checks everything that it wrote, and prints the rounds it
made.  Any error is a traceback and exit status 1.
"""

import mmap
import os
import struct
import sys

POOL = 1 << 20
SLOTS = POOL // 8
KEPT = 50  # the newest names kept, beside every tenth


def main(directory, stop):
    os.chdir(directory)
    log = os.open("log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    pool_fd = os.open("pool", os.O_RDWR | os.O_CREAT, 0o644)
    os.ftruncate(pool_fd, POOL)
    pool = mmap.mmap(pool_fd, POOL, mmap.MAP_SHARED)
    ghost = os.open("ghost", os.O_RDWR | os.O_CREAT, 0o644)
    os.unlink("ghost")
    print("started", flush=True)
    rounds = 0
    while not os.path.exists(stop):
        os.write(log, b"%08d\n" % rounds)
        at = rounds % SLOTS * 8
        pool[at:at + 8] = struct.pack("Q", rounds + 1)
        with open(f"n{rounds}", "w") as f:
            f.write(str(rounds))
        old = rounds - KEPT
        if old >= 0 and old % 10:
            os.unlink(f"n{old}")
        os.pwrite(ghost, struct.pack("Q", rounds), rounds * 8)
        if rounds % 64 == 0:
            pool.flush()
        rounds += 1
    pool.flush()
    os.fsync(log)
    data = os.pread(ghost, rounds * 8, 0)
    assert data == b"".join(struct.pack("Q", i) for i in range(rounds)), "the unlinked file"
    check(rounds)
    print(rounds, flush=True)


def check(rounds):
    with open("pool", "rb") as f:
        pool = f.read()
    with open("log", "rb") as f:
        assert f.read() == b"".join(b"%08d\n" % i for i in range(rounds)), "log"
    for slot in range(SLOTS):
        last = slot + (rounds - 1 - slot) // SLOTS * SLOTS if slot < rounds else -1
        assert struct.unpack_from("Q", pool, slot * 8)[0] == last + 1, f"pool slot {slot}"
    names = {f"n{i}" for i in range(rounds) if i % 10 == 0 or i >= rounds - KEPT}
    found = {name for name in os.listdir(".") if name.startswith("n")}
    assert found == names, f"names: {sorted(found ^ names)[:10]}"
    for name in names:
        with open(name) as f:
            assert f.read() == name[1:], name


if __name__ == "__main__":
    if sys.argv[1] == "--check":
        os.chdir(sys.argv[2])
        check(int(sys.argv[3]))
    else:
        main(*sys.argv[1:])
