"""Inode counts and name errors, side by side with a kernel tmpfs."""

import errno
import os

import pytest

from holefs._fallocate import FALLOC_FL_KEEP_SIZE, fallocate

from support import RENAME_EXCHANGE, renameat2, run_holefs


@pytest.fixture
def both(mount_holefs, small_tmpfs):
    """Factory: a holefs and a tmpfs, mounted with the same options."""
    def make(size="16M", options=""):
        return {"holefs": mount_holefs(",".join(filter(None, [f"size={size}", options]))).path,
                "tmpfs": small_tmpfs(size, options=options)}
    return make


def inodes_used(path):
    st = os.statvfs(path)
    return st.f_files - st.f_ffree


def churn(root):
    """Renames of every kind, links, unlinks of open files, and rsync's
    write-a-temporary-then-rename, ending with 20 files and a directory."""
    os.mkdir(root / "dir")
    for i in range(20):
        (root / f"f{i}").write_text(str(i))
    for i in range(20):
        os.rename(root / f"f{i}", root / "dir" / f"g{i}")
        os.rename(root / "dir" / f"g{i}", root / f"f{i}")
    for i in range(0, 20, 2):
        os.rename(root / f"f{i}", root / f"f{i + 1}")          # over an existing file
        (root / f"f{i}").write_text("again")
    for i in range(0, 20, 2):
        renameat2(root / f"f{i}", root / f"f{i + 1}", RENAME_EXCHANGE)
    for i in range(20):
        os.link(root / f"f{i}", root / "dir" / f"link{i}")
        os.unlink(root / f"f{i}")
        os.rename(root / "dir" / f"link{i}", root / f"f{i}")
    held = [os.open(root / f"f{i}", os.O_RDONLY) for i in range(5)]
    for i in range(5):
        os.unlink(root / f"f{i}")
        (root / f"f{i}").write_text("new")
    for fd in held:
        os.close(fd)
    for i in range(20):
        tmp = root / f".f{i}.XXXXXX"
        tmp.write_text("synced")
        os.rename(tmp, root / f"f{i}")


def test_inode_count_stays_exact_through_rename_churn(both):
    mounts = both()
    for root in mounts.values():
        churn(root)
    used = {kind: inodes_used(root) for kind, root in mounts.items()}
    assert used["holefs"] == used["tmpfs"] == 22  # the root, dir/ and 20 files


def files_that_fit(root):
    """Make files, renaming each once, until ENOSPC; how many fit."""
    for i in range(100):
        try:
            (root / "new").write_text("x")
        except OSError as e:
            assert e.errno == errno.ENOSPC
            return i
        os.rename(root / "new", root / f"kept{i}")
    return None


def test_nr_inodes_holds(both):
    fits = {kind: files_that_fit(root) for kind, root in both(options="nr_inodes=5").items()}
    assert fits["holefs"] == fits["tmpfs"] == 4


def links_that_fit(root):
    (root / "f").write_text("x")
    for i in range(100):
        try:
            os.link(root / "f", root / f"link{i}")
        except OSError as e:
            assert e.errno == errno.ENOSPC
            return i
    return None


def test_each_extra_hard_link_takes_an_inode(both):
    """As tmpfs counts them: the root, the file, then three more names."""
    fits = {kind: links_that_fit(root) for kind, root in both(options="nr_inodes=5").items()}
    assert fits["holefs"] == fits["tmpfs"] == 3


def test_no_inode_limit_shows_as_tmpfs_shows_it(both):
    """nr_inodes=0: df -i shows no inodes at all, and xattrs are not limited."""
    seen = {}
    mounts = both(options="nr_inodes=0")
    for kind, root in mounts.items():
        for i in range(40):
            os.setxattr(root, f"user.{i}", bytes(60000))
        st = os.statvfs(root)
        seen[kind] = (st.f_files, st.f_ffree, st.f_favail)
    assert seen["holefs"] == seen["tmpfs"] == (0, 0, 0)
    assert "inodes  1 used, no limit" in run_holefs("status", str(mounts["holefs"])).stdout


OPS_ON_A_NAME = {
    "stat": os.stat,
    "chmod": lambda p: os.chmod(p, 0o600),
    "chown": lambda p: os.chown(p, 0, 0),
    "truncate": lambda p: os.truncate(p, 0),
    "unlink": os.unlink,
    "rmdir": os.rmdir,
    "link": lambda p: os.link(p, p.with_name("other")),
    "rename": lambda p: os.rename(p, p.with_name("other")),
    "open": lambda p: os.close(os.open(p, os.O_RDONLY)),
}


@pytest.mark.parametrize("op", OPS_ON_A_NAME)
def test_every_lookup_of_a_long_name_is_enametoolong(op, both):
    for kind, root in both().items():
        with pytest.raises(OSError) as e:
            OPS_ON_A_NAME[op](root / ("n" * 256))
        assert e.value.errno == errno.ENAMETOOLONG, kind


@pytest.mark.parametrize("how", ["O_TRUNC", "truncate"])
def test_truncating_an_empty_file_drops_space_reserved_past_eof(how, both):
    for kind, root in both().items():
        fd = os.open(root / "f", os.O_RDWR | os.O_CREAT)
        fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 1 << 20)
        assert os.fstat(fd).st_blocks > 0, kind
        os.close(fd)
        if how == "O_TRUNC":
            os.close(os.open(root / "f", os.O_RDWR | os.O_TRUNC))
        else:
            os.truncate(root / "f", 0)
        assert os.stat(root / "f").st_blocks == 0, kind
