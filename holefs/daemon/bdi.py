"""The mount's backing device: /sys/class/bdi/MAJ:MIN, whose knobs govern
the FUSE file's page cache, the kernel's copy of what programs read, map
and (under the writeback cache) write.

The kernel gives a FUSE mount's bdi a 128 KiB readahead, which INIT can
only lower: holefs reads ahead 1 MiB, as big as a FUSE request.  It also
gives it max_ratio 1 with strict_limit, so that a daemon cannot pin much
dirty memory; that throttles a writer through a shared mapping or the
writeback cache to holefs's pace, but it is also what keeps a writer in a
small memory cgroup alive, as its dirty pages of the file are charged to
it.  So only -o bdi_max_ratio=N (percent of the dirty limit) lifts both.
"""

import logging
import os

log = logging.getLogger("holefs")

READAHEAD_KB = 1024


def of_device(dev):
    return f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}"


def tune(bdi, max_ratio):
    """Set the readahead, and the dirty limit if *max_ratio* is not None;
    as root, or it stays the kernel's."""
    knobs = [("read_ahead_kb", READAHEAD_KB)]
    if max_ratio is not None:
        knobs += [("max_ratio", max_ratio), ("strict_limit", 0)]
    for knob, value in knobs:
        try:
            with open(f"{bdi}/{knob}", "w") as f:
                f.write(str(value))
        except OSError as e:
            # Only what the options asked for is worth a warning.
            log.log(logging.DEBUG if knob == "read_ahead_kb" else logging.WARNING,
                    "cannot set %s/%s to %s: %s", bdi, knob, value, e.strerror)


def dirty_limit(bdi):
    """What the kernel lets this mount's page cache hold dirty, as status
    shows it: max_ratio, strict_limit, and max_ratio in bytes of today's
    dirty limit (the kernel reports that from Linux 6.2; else None)."""
    def knob(name):
        try:
            with open(f"{bdi}/{name}") as f:
                return int(f.read())
        except (OSError, ValueError):
            return None
    return {"max_ratio": knob("max_ratio"), "strict_limit": knob("strict_limit") == 1,
            "max_bytes": knob("max_bytes")}
