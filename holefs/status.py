"""What `holefs status` shows, from end to end: the figures that the
daemon gives for the mount and for a file, reading them through the
holefs.status xattr, and the words and units people read them in, with
the one human() of the package.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from . import STATUS_XATTR
from .extents import CHUNK, PAGE

if TYPE_CHECKING:
    from .namespace import Inode, Namespace
    from .options import MountOptions
    from .tiers import Store

Status = dict[str, Any]

STATUS_RUNS = 1000  # runs of a file's map per xattr read: about 60 bytes each


def of_mount(store: Store, ns: Namespace, options: MountOptions, flags: Iterable[str] | None,
             daemon: Status) -> Status:
    """The mount's usage; *daemon* adds what only the daemon knows (its
    pid, libfuse, what INIT settled, splicing, the page cache)."""
    spill = store.spill
    return {
        "size": store.limit * PAGE,
        "used": store.used * PAGE,
        "ram_used": store.ram.pages * PAGE,
        "ram_budget": store.ram_budget * PAGE,
        "ram_allocated": store.ram.allocated_bytes(),
        "spill_used": spill.pages * PAGE if spill else 0,
        "spill_allocated": spill.allocated_bytes() if spill else 0,
        "spill_dir": options.spill if spill else None,
        "reserve": options.reserve,
        "options": options.describe(flags),
        "inodes_used": ns.used_inodes,
        "inodes_free": ns.free_inodes if ns.max_inodes else None,
        "xattr_used": ns.xattr_bytes,
        "quotas": ns.quotas.report(),
        "chunk": CHUNK,
        **daemon,
    }


def of_file(store: Store, inode: Inode, part: bytes = b"") -> Status:
    """A file's size, totals and map.  A map can be longer than one xattr
    value may be (64 KiB), so holefs.status gives the totals and the first
    STATUS_RUNS runs, and holefs.status.map.N (*part* b".map.N") the runs
    from the Nth on.  LookupError for a *part* that is none of these."""
    runs = store.describe(inode.extents, inode.size) if inode.extents is not None else []
    if part.startswith(b".map.") and part[5:].isdigit() and len(part) < 30:
        first = int(part[5:])
        return {"map": runs[first:first + STATUS_RUNS]}
    if part:
        raise LookupError(part)
    totals = dict.fromkeys(("ram", "spill", "hole"), 0)
    for run in runs:
        totals[run["where"]] += run["length"]
    return {"size": inode.size, **totals, "runs": len(runs), "map": runs[:STATUS_RUNS]}


def read_status(path: str | os.PathLike[str]) -> Status:
    """A mount's usage, or a file's whole map, read page by page."""
    try:
        status = json.loads(os.getxattr(path, STATUS_XATTR))
        while len(status.get("map", ())) < status.get("runs", 0):
            more = json.loads(os.getxattr(path, f"{STATUS_XATTR}.map.{len(status['map'])}"))
            if not more["map"]:
                break  # the file shrank while we read
            status["map"] += more["map"]
        return status
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.EOPNOTSUPP):
            raise OSError(e.errno, "not on a holefs mount") from None
        raise


def human(n: float) -> str:
    """Bytes as people read them: 5 B, 1.5 KiB, 2.0 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return f"{n:.1f} TiB"


def format_mount_status(s: Status) -> str:
    spill = "off" if s["spill_dir"] is None else \
        f"{human(s['spill_used'])} ({human(s['spill_allocated'])} on disk) in {s['spill_dir']}"
    inodes_free = "no limit" if s["inodes_free"] is None else f"{s['inodes_free']} free"
    rows = [
        ("size", human(s["size"])),
        ("used", f"{human(s['used'])} ({100 * s['used'] // max(1, s['size'])}%)"),
        ("ram", f"{human(s['ram_used'])} of {human(s['ram_budget'])} budget "
                f"({human(s['ram_allocated'])} resident)"),
        ("spill", spill),
        ("inodes", f"{s['inodes_used']} used, {inodes_free}"),
        ("cache", format_page_cache(s["page_cache"])),
        ("daemon", f"pid {s['pid']}, chunk {human(s['chunk'])}, libfuse {s['libfuse']}"),
        ("options", s["options"]),
    ]
    rows += [(kind, format_quota(quota)) for kind, quota in s["quotas"].items()
             if quota["limits"] is not None]
    return "\n".join(f"{k:<8}{v}" for k, v in rows)


def format_page_cache(cache: Status) -> str:
    """The kernel's copy of the files, which holefs does not count, and how
    much of it may be dirty."""
    what = "read, mapped or written" if cache["writeback_cache"] else "read or mapped"
    if cache.get("max_ratio") is None:
        return f"the kernel's copy of what is {what} (reclaimable)"
    limit = f"max_ratio {cache['max_ratio']}%" + (", strict" if cache["strict_limit"] else "")
    if cache.get("max_bytes"):
        limit = f"{human(cache['max_bytes'])} now ({limit})"
    return f"the kernel's copy of what is {what} (reclaimable); dirty at most {limit}"


def format_quota(quota: Status, shown: int = 5) -> str:
    """The ids that hold the most, against the limits: 'id 1000: 4.0 KiB of
    1.0 MiB, 2 of 10 inodes; ...'."""
    limits = quota["limits"]
    of_bytes = f" of {human(limits['bytes'])}" if limits["bytes"] else ""
    of_inodes = f" of {limits['inodes']}" if limits["inodes"] else ""
    held = [f"id {id}: {human(use['bytes'])}{of_bytes}, {use['inodes']}{of_inodes} "
            f"inode{'' if use['inodes'] == 1 and not of_inodes else 's'}"
            for id, use in list(quota["use"].items())[:shown]]
    more = quota["ids"] - len(held)
    return "; ".join(held + ([f"{more} more ids"] if more > 0 else [])) or "nothing held"


def format_file_status(s: Status) -> str:
    lines = [f"size {s['size']} ({human(s['size'])}): "
             + ", ".join(f"{where} {human(s[where])}" for where in ("ram", "spill", "hole")),
             f"{'start':>14} {'length':>14}  where"]
    lines += [f"{r['start']:>14} {r['length']:>14}  {r['where']}" for r in s["map"]]
    return "\n".join(lines)
