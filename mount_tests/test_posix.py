"""The namespace that tmpfs users expect, driven through a real mount."""

import errno
import os
import socket
import stat
import struct
import subprocess
import time

import pytest

from holefs.extents import CHUNK, PAGE

from support import NOBODY, RENAME_EXCHANGE, RENAME_NOREPLACE, MiB, as_nobody, renameat2, wait_for


def test_file_types(fs):
    (fs / "dir").mkdir()
    (fs / "file").write_text("data")
    os.symlink("file", fs / "link")
    os.link(fs / "file", fs / "dir" / "hard")
    os.mkfifo(fs / "fifo")
    os.mknod(fs / "sock", 0o600 | stat.S_IFSOCK)
    assert stat.S_ISDIR(os.lstat(fs / "dir").st_mode)
    assert stat.S_ISLNK(os.lstat(fs / "link").st_mode)
    assert os.readlink(fs / "link") == "file"
    assert (fs / "link").read_text() == "data"
    assert os.stat(fs / "file").st_nlink == 2
    assert os.stat(fs / "file").st_ino == os.stat(fs / "dir" / "hard").st_ino
    assert stat.S_ISFIFO(os.stat(fs / "fifo").st_mode)
    assert stat.S_ISSOCK(os.stat(fs / "sock").st_mode)
    assert sorted(os.listdir(fs.path)) == ["dir", "fifo", "file", "link", "sock"]
    ls = subprocess.run(["ls", "-a", str(fs / "dir")], capture_output=True, text=True,
                        check=True).stdout.split()
    assert ls == [".", "..", "hard"]
    assert os.stat(fs.path).st_nlink == 3


def test_fifo_and_socket_work(fs):
    os.mkfifo(fs / "fifo")
    writer = subprocess.Popen(["sh", "-c", f"echo through > {fs / 'fifo'}"])
    assert (fs / "fifo").read_text() == "through\n"
    writer.wait(timeout=10)
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(fs / "s"))
    server.listen()
    client = socket.socket(socket.AF_UNIX)
    client.connect(str(fs / "s"))
    conn, _ = server.accept()
    client.sendall(b"hi")
    assert conn.recv(2) == b"hi"
    for s in (server, client, conn):
        s.close()


def test_directory_errors(fs):
    (fs / "d").mkdir()
    (fs / "d" / "f").write_text("")
    with pytest.raises(FileExistsError):
        (fs / "d").mkdir()
    with pytest.raises(OSError) as e:
        os.rmdir(fs / "d")
    assert e.value.errno == errno.ENOTEMPTY
    with pytest.raises(NotADirectoryError):
        os.rmdir(fs / "d" / "f")
    with pytest.raises(IsADirectoryError):
        os.unlink(fs / "d")
    with pytest.raises(FileNotFoundError):
        os.stat(fs / "nope")
    with pytest.raises(OSError) as e:
        (fs / ("x" * 256)).write_text("")
    assert e.value.errno == errno.ENAMETOOLONG
    (fs / ("y" * 255)).write_text("ok")


def test_rename(fs):
    (fs / "a").write_text("A")
    (fs / "b").write_text("B")
    (fs / "d1").mkdir()
    (fs / "d2").mkdir()
    with pytest.raises(FileExistsError):
        renameat2(fs / "a", fs / "b", RENAME_NOREPLACE)
    renameat2(fs / "a", fs / "c", RENAME_NOREPLACE)
    renameat2(fs / "c", fs / "b", RENAME_EXCHANGE)
    assert (fs / "b").read_text() == "A" and (fs / "c").read_text() == "B"
    with pytest.raises(FileNotFoundError):
        renameat2(fs / "b", fs / "zz", RENAME_EXCHANGE)
    renameat2(fs / "d1", fs / "b", RENAME_EXCHANGE)
    assert (fs / "d1").read_text() == "A" and (fs / "b").is_dir()
    os.rename(fs / "c", fs / "d1")  # replaces, frees the old d1
    assert (fs / "d1").read_text() == "B"
    os.rename(fs / "b", fs / "d2" / "inner")
    assert os.stat(fs / "d2").st_nlink == 3
    with pytest.raises(OSError) as e:
        os.rename(fs / "d2", fs / "d2" / "inner" / "x")
    assert e.value.errno == errno.EINVAL
    (fs / "d2" / "inner" / "f").write_text("")
    (fs / "empty").mkdir()
    with pytest.raises(OSError) as e:
        os.rename(fs / "empty", fs / "d2" / "inner")
    assert e.value.errno == errno.ENOTEMPTY
    with pytest.raises(IsADirectoryError):
        os.rename(fs / "d1", fs / "empty")
    with pytest.raises(NotADirectoryError):
        os.rename(fs / "empty", fs / "d1")


def test_chmod_chown_utimens_and_ctime(fs):
    f = fs / "f"
    f.write_text("x")
    before = os.stat(f)
    time.sleep(0.01)
    os.chmod(f, 0o640)
    after = os.stat(f)
    assert stat.S_IMODE(after.st_mode) == 0o640
    assert after.st_ctime_ns > before.st_ctime_ns
    assert after.st_mtime_ns == before.st_mtime_ns
    os.chown(f, 1234, 5678)
    assert (os.stat(f).st_uid, os.stat(f).st_gid) == (1234, 5678)
    os.utime(f, ns=(1_000_000_000, 2_000_000_000))
    st = os.stat(f)
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_000, 2_000_000_000)
    assert st.st_ctime_ns >= after.st_ctime_ns
    time.sleep(0.01)
    with open(f, "a") as fh:
        fh.write("more")
    assert os.stat(f).st_mtime_ns > 2_000_000_000


def test_xattrs(fs):
    f = fs / "f"
    f.write_text("")
    for name in ("user.a", "trusted.b", "security.c"):
        os.setxattr(f, name, name.encode())
    assert sorted(os.listxattr(f)) == ["security.c", "trusted.b", "user.a"]
    assert os.getxattr(f, "trusted.b") == b"trusted.b"
    with pytest.raises(FileExistsError):
        os.setxattr(f, "user.a", b"x", os.XATTR_CREATE)
    with pytest.raises(OSError) as e:
        os.setxattr(f, "user.zz", b"x", os.XATTR_REPLACE)
    assert e.value.errno == errno.ENODATA
    os.removexattr(f, "user.a")
    with pytest.raises(OSError) as e:
        os.getxattr(f, "user.a")
    assert e.value.errno == errno.ENODATA


@pytest.mark.parametrize("name", ["foo", "holefs.other", "usr.typo", "system.foo",
                                  "system.posix_acl_other"])
def test_xattrs_outside_the_namespaces_are_refused_as_on_tmpfs(name, fs, small_tmpfs):
    for root in (fs.path, small_tmpfs("1M")):
        (root / "f").write_text("")
        with pytest.raises(OSError) as e:
            os.setxattr(root / "f", name, b"x")
        assert e.value.errno == errno.EOPNOTSUPP, root


def test_a_write_drops_file_capabilities(fs):
    """The kernel asks for security.capability on every write; the shim
    answers that question in C until a file gets one, then Python does."""
    f = fs / "f"
    f.write_bytes(b"x")
    assert "security.capability" not in os.listxattr(f)
    caps = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)  # v2, cap_net_raw
    os.setxattr(f, "security.capability", caps)
    assert os.getxattr(f, "security.capability") == caps
    with open(f, "ab") as fh:
        fh.write(b"y")
    assert os.listxattr(f) == []
    assert f.read_bytes() == b"xy"


def test_append_trunc_and_truncate(fs):
    f = fs / "f"
    f.write_bytes(b"hello")
    with open(f, "ab") as fh:
        fh.write(b" world")
    assert f.read_bytes() == b"hello world"
    fd = os.open(f, os.O_WRONLY | os.O_APPEND)
    os.pwrite(fd, b"!", 0)  # O_APPEND wins over the offset on Linux
    os.close(fd)
    assert f.read_bytes() == b"hello world!"
    with open(f, "wb") as fh:
        assert os.fstat(fh.fileno()).st_size == 0
    f.write_bytes(b"x" * 100)
    os.truncate(f, 10)
    assert f.read_bytes() == b"x" * 10
    os.truncate(f, 3 * CHUNK)
    assert f.read_bytes() == b"x" * 10 + bytes(3 * CHUNK - 10)
    assert os.stat(f).st_blocks == PAGE // 512


def test_st_blocks_counts_allocated_data_only(fs):
    f = fs / "sparse"
    with open(f, "wb") as fh:
        fh.seek(10 * MiB)
        fh.write(b"z")
    st = os.stat(f)
    assert st.st_size == 10 * MiB + 1
    assert st.st_blocks == PAGE // 512
    assert os.stat(fs / "sparse").st_blocks * 512 < st.st_size


def test_unlinked_open_file_keeps_working(fs):
    fd = os.open(fs / "tmp", os.O_RDWR | os.O_CREAT, 0o600)
    os.write(fd, b"a" * MiB)
    os.unlink(fs / "tmp")
    assert not (fs / "tmp").exists()
    os.pwrite(fd, b"b", 5)
    assert os.pread(fd, 7, 0) == b"aaaaaba"
    assert os.fstat(fd).st_nlink == 0
    assert fs.status()["used"] == MiB
    os.close(fd)
    wait_for(lambda: fs.status()["used"] == 0, what="unlinked file freed")
    assert fs.tier_blocks("ram") == 0


def test_statfs_is_truthful(mount_holefs):
    m = mount_holefs("size=8M,nr_inodes=100")
    st = os.statvfs(m.path)
    assert st.f_frsize * st.f_blocks == 8 * MiB
    assert st.f_bfree == st.f_blocks
    assert (st.f_files, st.f_ffree) == (100, 99)
    assert st.f_namemax == 255
    (m / "f").write_bytes(b"q" * MiB)
    st = os.statvfs(m.path)
    assert (st.f_blocks - st.f_bfree) * st.f_frsize == MiB
    assert st.f_ffree == 98
    df = subprocess.run(["df", "-B1", "--output=size,used", str(m.path)],
                        capture_output=True, text=True, check=True).stdout.split()
    assert df[-2:] == [str(8 * MiB), str(MiB)]


def test_only_the_mounter_gets_in_without_allow_other(fs):
    (fs / "public").write_text("hello")
    os.chmod(fs / "public", 0o644)
    denied = as_nobody("cat", str(fs / "public"))
    assert denied.returncode != 0 and "Permission denied" in denied.stderr


def test_permissions_as_tmpfs_enforces_them(mount_holefs):
    m = mount_holefs("size=16M,allow_other")  # root dir mode 1777
    (m / "private").write_text("secret")
    os.chmod(m / "private", 0o600)
    (m / "public").write_text("hello")
    os.chmod(m / "public", 0o644)
    (m / "closed").mkdir(mode=0o700)
    assert as_nobody("cat", str(m / "public")).stdout == "hello"
    denied = as_nobody("cat", str(m / "private"))
    assert denied.returncode != 0 and "Permission denied" in denied.stderr
    assert as_nobody("ls", str(m / "closed")).returncode != 0
    assert as_nobody("sh", "-c", f"echo x > {m / 'public'}").returncode != 0
    assert as_nobody("sh", "-c", f"echo mine > {m / 'mine'}").returncode == 0
    assert os.stat(m / "mine").st_uid == NOBODY
    # Sticky root: nobody may not remove root's file, but may remove its own.
    assert as_nobody("rm", "-f", str(m / "public")).returncode != 0
    assert (m / "public").exists()
    assert as_nobody("rm", str(m / "mine")).returncode == 0
    assert as_nobody("chmod", "777", str(m / "public")).returncode != 0


def test_setgid_directory_is_inherited(fs):
    (fs / "g").mkdir()
    os.chown(fs / "g", 0, 4321)
    os.chmod(fs / "g", 0o2775)
    (fs / "g" / "f").write_text("")
    (fs / "g" / "sub").mkdir()
    assert os.stat(fs / "g" / "f").st_gid == 4321
    assert os.stat(fs / "g" / "sub").st_mode & stat.S_ISGID


def test_nr_inodes_gives_enospc(mount_holefs):
    m = mount_holefs("size=8M,nr_inodes=4")
    for i in range(3):
        (m / str(i)).write_text("")
    with pytest.raises(OSError) as e:
        (m / "3").write_text("")
    assert e.value.errno == errno.ENOSPC
    with pytest.raises(OSError) as e:
        (m / "d").mkdir()
    assert e.value.errno == errno.ENOSPC
    os.unlink(m / "0")
    (m / "3").write_text("fits again")
    assert (m / "3").read_text() == "fits again"
