"""A mount's state written out and read back over the same tier files, as a
successor daemon takes it over, without a mount."""

import json
import stat

import pytest

from holefs import options, snapshot
from holefs.extents import CHUNK
from holefs.namespace import INODE_FIELDS, Namespace
from holefs.quota import Limits, Quotas
from holefs.tiers import Store, Tier, open_ram_tier, open_spill_tier

REG, DIR, LNK = stat.S_IFREG | 0o644, stat.S_IFDIR | 0o755, stat.S_IFLNK | 0o777


@pytest.fixture
def mount(tmp_path):
    """A namespace and a store over RAM and spill, with files in both,
    holes, links, an unlinked file still referenced, xattrs and quotas."""
    store = Store(limit=1024, ram_budget=32, ram=open_ram_tier(),
                  spill=open_spill_tier(str(tmp_path)))
    ns = Namespace(1000, 0o1777, 0, 0, Quotas({"user": Limits(bytes=1 << 30)}))
    d = ns.create(ns.root, b"d\xff", DIR, 1000, 1000)
    files = {}
    for i, name in enumerate([b"a", b"b", b"c"]):
        f = ns.create(d, name, REG, 1000 + i, 100)
        store.write(f.extents, i * 3 * CHUNK + 7, bytes([65 + i]) * (CHUNK + 100))
        f.size = i * 3 * CHUNK + 7 + CHUNK + 100
        f.lookups = i + 1
        files[name] = f
    ns.link(files[b"a"], ns.root, b"hard")
    ns.create(ns.root, b"sym", LNK, 0, 0, target=b"d\xff/a")
    ns.set_xattr(files[b"b"], b"user.k", b"\x00v")
    ns.unlink(d, b"c")          # gone from d, still open: lookups keep it
    ns.create(d, b"later", REG, 0, 0)
    yield ns, store, files
    store.close()


def inode_state(ns):
    def names(inode):
        return [(cookie, name, child.id) for cookie, name, child in inode.entries.since(0)]
    return {inode.id: ([getattr(inode, f) for f in INODE_FIELDS],
                       inode.parent.id if inode.parent else None, inode.target, inode.xattrs,
                       None if inode.entries is None else names(inode),
                       None if inode.extents is None else inode.extents.held_pages)
            for inode in ns.inodes.values()}


def test_the_state_comes_back_whole_over_the_same_files(mount):
    ns, store, files = mount
    given = options.parse(f"size=4M,ram=128k,spill={store.spill.fd},usrquota,"
                          "usrquota_block_hardlimit=1G")
    contents = {f.id: store.read(f.extents, 0, f.size) for f in files.values()}
    ram_order = [slot.number for slot in store.lru_order()]
    value = json.loads(json.dumps(snapshot.dump(ns, store, given)))
    # The old daemon touches nothing from here on; the new one has the files.
    ram, spill = Tier(store.ram.fd, "ram"), Tier(store.spill.fd, "spill")
    ns2, store2, options2 = snapshot.load(value, ram, spill)

    assert options2 == given
    assert inode_state(ns2) == inode_state(ns)
    assert (ns2.used_inodes, ns2.free_space, ns2.xattr_bytes) == \
        (ns.used_inodes, ns.free_space, ns.xattr_bytes)
    assert ns2.quotas.use == ns.quotas.use and ns2.quotas.limits == ns.quotas.limits
    assert (store2.used, store2.ram.pages, store2.spill.pages) == \
        (store.used, store.ram.pages, store.spill.pages)
    assert store.spill.pages > 0  # some of it came back from spill
    assert [slot.number for slot in store2.lru_order()] == ram_order
    assert {i: store2.read(ns2.inodes[i].extents, 0, len(data))
            for i, data in contents.items()} == contents
    # and it goes on from there: new slots, and evictions, leave the old data be
    g = ns2.create(ns2.root, b"new", REG, 0, 0)
    store2.write(g.extents, 0, b"n" * 4 * CHUNK)
    assert {i: store2.read(ns2.inodes[i].extents, 0, len(data))
            for i, data in contents.items()} == contents
    assert store2.read(g.extents, 0, 4 * CHUNK) == b"n" * 4 * CHUNK


def test_a_value_of_another_version_is_refused_with_the_reason(mount):
    ns, store, _ = mount
    value = snapshot.dump(ns, store, options.parse("size=4M"))
    value["version"] += 1
    with pytest.raises(snapshot.Unreadable, match=f"version {snapshot.VERSION + 1}; this holefs "
                                                  f"reads version {snapshot.VERSION}"):
        snapshot.load(value, Tier(store.ram.fd, "ram"), Tier(store.spill.fd, "spill"))
    value["version"] -= 1
    with pytest.raises(snapshot.Unreadable, match="tiers"):
        snapshot.load(value, Tier(store.ram.fd, "ram"))
