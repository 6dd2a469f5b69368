"""What `holefs status` shows, built and formatted without a mount."""

import stat

import pytest

from holefs import options, status
from holefs.extents import CHUNK
from holefs.namespace import Namespace
from holefs.tiers import Store, open_ram_tier

DAEMON = {"pid": 4242, "libfuse": "3.14.0", "capabilities": {}, "splicing": {},
          "page_cache": {"writeback_cache": False, "max_ratio": 1, "strict_limit": True,
                         "max_bytes": 48 << 20}}


@pytest.fixture
def mounted():
    store = Store(limit=256, ram_budget=256, ram=open_ram_tier())
    yield store, Namespace(100, 0o1777, 0, 0)
    store.close()


def test_a_files_map_is_given_in_parts(mounted, monkeypatch):
    store, ns = mounted
    f = ns.create(ns.root, b"f", stat.S_IFREG | 0o644, 0, 0)
    for index in range(5):  # written chunks with holes between
        store.write(f.extents, 2 * index * CHUNK, b"x")
    f.size = 9 * CHUNK
    monkeypatch.setattr(status, "STATUS_RUNS", 4)
    whole = status.of_file(store, f)
    assert (whole["size"], whole["ram"], whole["runs"], len(whole["map"])) == \
        (9 * CHUNK, 5 * 4096, 10, 4)
    assert whole["ram"] + whole["hole"] == 9 * CHUNK
    assert status.of_file(store, f, b".map.4")["map"][0] == \
        {"where": "ram", "start": 4 * CHUNK, "length": 4096}
    with pytest.raises(LookupError):
        status.of_file(store, f, b".other")


def test_the_mount_reads_as_people_read_it(mounted):
    store, ns = mounted
    given = options.parse("size=1M")
    shown = status.format_mount_status(status.of_mount(store, ns, given, None, DAEMON))
    assert shown.splitlines()[0] == "size    1.0 MiB"
    assert "dirty at most 48.0 MiB now (max_ratio 1%, strict)" in shown
    assert "pid 4242" in shown and "libfuse 3.14.0" in shown
    assert status.human(1536) == "1.5 KiB" and status.human(5) == "5 B"
