"""python -m bench.handover: the pause that `holefs restart` makes.

Run as root from the repository root with the venv's python.  It mounts a
holefs, fills it with FILES empty files and DATA bytes, and while a client
thread stats a file and reads 4 KiB from the data in a loop (the page cache
dropped first, so each read reaches the daemon), hands the mount over
ROUNDS times.  The pause is the longest that one of the client's calls took
around a restart; beside it, the wall time of `holefs restart` and the
client's longest call with no restart, for scale.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time

HOLEFS = str(pathlib.Path(sys.executable).with_name("holefs"))
MiB = 1 << 20


def fill(root, files, data):
    tree = root / "files"
    tree.mkdir()
    for i in range(0, files, 1000):
        part = tree / str(i)
        part.mkdir()
        for j in range(min(1000, files - i)):
            (part / str(j)).touch()
    chunk = os.urandom(8 * MiB)
    with open(root / "data", "wb") as f:
        for _ in range(data // len(chunk)):
            f.write(chunk)


class Client(threading.Thread):
    """Calls in a loop; the longest one since the last reset()."""

    def __init__(self, root, data):
        super().__init__(daemon=True)
        self.root, self.data = root, data
        self.longest = 0.0
        self.calls = 0
        self.stopping = False

    def run(self):
        fd = os.open(self.root / "data", os.O_RDONLY | os.O_DIRECT)
        buf = bytearray(4096)
        view = memoryview(buf)
        offset = 0
        while not self.stopping:
            start = time.perf_counter()
            os.stat(self.root / "files" / "0" / "0")
            os.preadv(fd, [view], offset)
            self.longest = max(self.longest, time.perf_counter() - start)
            self.calls += 1
            offset = (offset + 1024 * 4096 + 4096) % self.data
        os.close(fd)

    def reset(self):
        longest, self.longest = self.longest, 0.0
        return longest


def main():
    parser = argparse.ArgumentParser(prog="python -m bench.handover", description=__doc__)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--data", type=int, default=1024, help="MiB")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    root = pathlib.Path(tempfile.mkdtemp(prefix="bench-handover-"))
    subprocess.run([HOLEFS, "mount", str(root), "-o",
                    f"size={args.data + 512}M,nr_inodes={args.files * 2}"], check=True)
    try:
        fill(root, args.files, args.data * MiB)
        client = Client(root, args.data * MiB)
        client.start()
        time.sleep(1)
        client.reset()
        time.sleep(2)
        idle = client.reset()
        pauses, walls = [], []
        for _ in range(args.rounds):
            time.sleep(0.5)
            client.reset()
            start = time.perf_counter()
            subprocess.run([HOLEFS, "restart", str(root)], check=True)
            walls.append(time.perf_counter() - start)
            time.sleep(0.5)
            pauses.append(client.reset())
        client.stopping = True
        client.join()
        status = json.loads(subprocess.run([HOLEFS, "status", "--json", str(root)],
                                           capture_output=True, check=True).stdout)
        print(f"{args.files} files, {args.data} MiB, used {status['used'] >> 20} MiB, "
              f"daemon pid {status['pid']}, {client.calls} client calls")
        print(f"longest call without a restart: {idle * 1000:.1f} ms")
        print("pause per restart (ms): " + ", ".join(f"{p * 1000:.0f}" for p in pauses))
        print("holefs restart wall (ms): " + ", ".join(f"{w * 1000:.0f}" for w in walls))
    finally:
        subprocess.run([HOLEFS, "umount", str(root)])
        root.rmdir()


if __name__ == "__main__":
    main()
