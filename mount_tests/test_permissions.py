"""Permissions as a real unprivileged user sees them.

The tests create a system user, holefs-test-user, if it is missing (and
leave it for the next run), and run commands as that user with setpriv.
test_posix.py already covers the basics (reading a 0600 file, writing a
0644 one, deleting under the sticky bit, as nobody); this file covers
execute and directory bits, groups, owner-class precedence, renames under
the sticky bit, allow_other, a mount by the user itself, and the spill
file's privacy.
"""

import json
import os
import pathlib
import shutil
import stat
import subprocess
import sys
import tempfile

import pytest

from support import HOLEFS, as_user, force_unmount, is_mounted, wait_for

GROUP = 4242  # a group that only the tests hand out

# Runs operations named on the command line as OP:PATH and prints, one a
# line, "ok" or the errno name.
PROBE = r"""
import errno, os, subprocess, sys
OPS = {
    "read": lambda p: os.close(os.open(p, os.O_RDONLY)),
    "write": lambda p: os.close(os.open(p, os.O_WRONLY)),
    "exec": lambda p: subprocess.run([p], check=True),
    "stat": os.stat,
    "list": os.listdir,
    "create": lambda p: os.close(os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)),
    "unlink": os.unlink,
    "rename": lambda p: os.rename(*p.split(">")),
}
for arg in sys.argv[1:]:
    op, _, path = arg.partition(":")
    try:
        OPS[op](path)
        print("ok")
    except OSError as e:
        print(errno.errorcode[e.errno])
"""


def probe(user, *ops, groups=()):
    """Outcomes of (op, path) pairs done by the test user: 'ok' or an errno name."""
    result = as_user(user, sys.executable, "-c", PROBE,
                     *(f"{op}:{path}" for op, path in ops), groups=groups)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def make(path, mode, owner=(0, 0), text="#!/bin/sh\nexit 0\n"):
    """A file or, for a name ending in .d, a directory, with an exact mode."""
    if path.suffix == ".d":
        path.mkdir()
    else:
        path.write_text(text)
    os.chown(path, *owner)
    os.chmod(path, mode)
    return path


def test_mode_bits_decide_access(mount_holefs, user):
    m = mount_holefs("size=16M,allow_other")
    owner = (user.pw_uid, user.pw_gid)
    f = {name: make(m / name, mode) for name, mode in
         [("r600", 0o600), ("r644", 0o644), ("r666", 0o666), ("x644", 0o644), ("x755", 0o755)]}
    f["mine066"] = make(m / "mine066", 0o066, owner=owner)
    f["group640"] = make(m / "group640", 0o640, owner=(0, GROUP))
    assert probe(user, ("read", f["r600"]), ("write", f["r600"]), ("read", f["r644"]),
                 ("write", f["r644"]), ("write", f["r666"]), ("exec", f["x644"]),
                 ("exec", f["x755"])) == \
        ["EACCES", "EACCES", "ok", "EACCES", "ok", "EACCES", "ok"]
    # The owner class decides for the owner, even when "other" may more.
    assert probe(user, ("read", f["mine066"]), ("write", f["mine066"])) == ["EACCES", "EACCES"]
    assert probe(user, ("read", f["group640"])) == ["EACCES"]
    assert probe(user, ("read", f["group640"]), ("write", f["group640"]),
                 groups=[GROUP]) == ["ok", "EACCES"]
    # Root may read anything but executes only what has an x bit.
    with pytest.raises(PermissionError):
        subprocess.run([f["x644"]])
    # A chmod takes effect at once: the kernel's cached attributes follow it.
    os.chmod(f["r600"], 0o604)
    assert probe(user, ("read", f["r600"])) == ["ok"]


def test_directory_bits(mount_holefs, user):
    m = mount_holefs("size=16M,allow_other")
    dirs = {mode: make(m / f"{mode:o}.d", mode) for mode in (0o744, 0o711, 0o755, 0o733)}
    for d in dirs.values():
        (d / "f").write_text("x")
    assert probe(user, ("list", dirs[0o744]), ("stat", dirs[0o744] / "f")) == ["ok", "EACCES"]
    assert probe(user, ("list", dirs[0o711]), ("stat", dirs[0o711] / "f"),
                 ("read", dirs[0o711] / "f")) == ["EACCES", "ok", "ok"]
    assert probe(user, ("create", dirs[0o755] / "new"), ("unlink", dirs[0o755] / "f")) == \
        ["EACCES", "EACCES"]
    assert probe(user, ("create", dirs[0o733] / "new"), ("list", dirs[0o733])) == \
        ["ok", "EACCES"]
    assert os.stat(dirs[0o733] / "new").st_uid == user.pw_uid
    assert sorted(os.listdir(dirs[0o755])) == ["f"]


@pytest.mark.parametrize("mode,others_may", [("1777", False), ("0777", True)])
def test_sticky_root_guards_renames(mount_holefs, user, mode, others_may):
    """Under the sticky bit the user may not rename root's file, nor replace
    it; its own files it may.  Without the bit it may do all of it."""
    m = mount_holefs(f"size=16M,allow_other,mode={mode}")
    make(m / "roots", 0o666)
    make(m / "victim", 0o666)
    assert probe(user, ("create", m / "mine")) == ["ok"]
    denied = "ok" if others_may else "EPERM"
    assert probe(user, ("rename", f"{m / 'roots'}>{m / 'moved'}"),
                 ("rename", f"{m / 'mine'}>{m / 'victim'}")) == [denied, denied]
    if not others_may:
        assert (m / "roots").exists() and os.stat(m / "victim").st_uid == 0
        assert probe(user, ("rename", f"{m / 'mine'}>{m / 'mine2'}"),
                     ("unlink", m / "mine2")) == ["ok", "ok"]


def test_other_users_are_locked_out_without_allow_other(mount_holefs, user):
    closed = mount_holefs("size=16M", name="closed")
    opened = mount_holefs("size=16M,allow_other", name="open")
    for m in (closed, opened):
        make(m / "f", 0o644)
    assert probe(user, ("stat", closed.path), ("stat", closed / "f"),
                 ("list", closed.path)) == ["EACCES"] * 3
    assert probe(user, ("stat", opened.path), ("stat", opened / "f"),
                 ("list", opened.path)) == ["ok"] * 3


@pytest.fixture
def dev_fuse_for_all():
    """Let unprivileged users open /dev/fuse, as distributions do; restore after."""
    mode = stat.S_IMODE(os.stat("/dev/fuse").st_mode)
    os.chmod("/dev/fuse", 0o666)
    yield
    os.chmod("/dev/fuse", mode)


@pytest.fixture
def user_dir(user):
    """A directory that the user owns, where everyone may pass through."""
    base = pathlib.Path(tempfile.mkdtemp(prefix="holefs-user-"))
    base.chmod(0o755)
    path = base / "mnt"
    path.mkdir()
    os.chown(path, user.pw_uid, user.pw_gid)
    yield path
    force_unmount(path)
    shutil.rmtree(base, ignore_errors=True)


def test_a_user_mounts_and_unmounts_through_fusermount3(user, user_dir, dev_fuse_for_all):
    mounted = as_user(user, HOLEFS, "mount", str(user_dir), "-o", "size=16M")
    assert mounted.returncode == 0, mounted.stderr
    assert is_mounted(user_dir)
    with open("/proc/mounts") as f:
        line = next(line for line in f if line.split()[1] == str(user_dir))
    assert f"user_id={user.pw_uid}" in line
    used = as_user(user, "sh", "-c", f"echo hello > {user_dir}/f && cat {user_dir}/f")
    assert used.stdout == "hello\n", used.stderr
    status = as_user(user, HOLEFS, "status", "--json", str(user_dir))
    pid = json.loads(status.stdout)["pid"]
    with open(f"/proc/{pid}/status") as f:
        uids = next(line for line in f if line.startswith("Uid:")).split()[1:]
    assert set(uids) == {str(user.pw_uid)}, "the daemon does not run as the user"
    # Not even root gets in without allow_other.
    with pytest.raises(PermissionError):
        os.stat(user_dir / "f")
    assert as_user(user, HOLEFS, "umount", str(user_dir)).returncode == 0
    assert not is_mounted(user_dir)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), what="daemon exit")


def test_a_user_may_not_allow_other_without_fuse_conf(user, user_dir, dev_fuse_for_all):
    with open("/etc/fuse.conf") as f:
        if any(line.strip() == "user_allow_other" for line in f):
            pytest.skip("/etc/fuse.conf has user_allow_other")
    result = as_user(user, HOLEFS, "mount", str(user_dir), "-o", "size=16M,allow_other")
    assert result.returncode == 1
    assert "user_allow_other" in result.stderr and "holefs: mount:" in result.stderr
    assert not is_mounted(user_dir)


def test_spill_file_is_private_whatever_the_umask(mount_holefs, user, tmp_path):
    old = os.umask(0)
    try:
        m = mount_holefs(f"size=64M,ram=1M,spill={tmp_path},allow_other")
    finally:
        os.umask(old)
    (m / "f").write_bytes(os.urandom(8 << 20))
    os.chmod(m / "f", 0o644)
    spill = m.tier_fd("spill")
    st = os.stat(spill)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
    assert st.st_blocks * 512 >= 6 << 20
    # The user may read the file through the mount, but not the spill behind it.
    assert probe(user, ("read", m / "f"), ("read", spill)) == ["ok", "EACCES"]


def test_the_owner_may_remount_its_mount(user, user_dir, dev_fuse_for_all):
    assert as_user(user, HOLEFS, "mount", str(user_dir), "-o", "size=16M").returncode == 0
    try:
        result = as_user(user, HOLEFS, "remount", str(user_dir), "-o", "size=32M")
        assert result.returncode == 0, result.stderr
        status = as_user(user, HOLEFS, "status", "--json", str(user_dir)).stdout
        assert json.loads(status)["size"] == 32 << 20
        # The kernel keeps a mount's flags for root; the size stays as it was.
        result = as_user(user, HOLEFS, "remount", str(user_dir), "-o", "ro,size=48M")
        assert result.stderr == (f"holefs: remount: {user_dir}: only root (CAP_SYS_ADMIN) "
                                 "may change the mount's flags\n")
        status = as_user(user, HOLEFS, "status", "--json", str(user_dir)).stdout
        assert json.loads(status)["size"] == 32 << 20
        # Without allow_other, FUSE keeps even root out.
        result = subprocess.run([HOLEFS, "remount", str(user_dir), "-o", "size=64M"],
                                capture_output=True, text=True)
        assert result.stderr == (f"holefs: remount: {user_dir}: Permission denied; only root "
                                 "and the user who mounted it may remount it\n")
    finally:
        as_user(user, HOLEFS, "umount", str(user_dir))


def test_status_shows_the_flags_that_the_kernel_applied(user, user_dir, dev_fuse_for_all):
    """fusermount3 makes an ordinary user's mount nosuid,nodev whatever it
    asks for; status says what holds, not what was asked."""
    mounted = as_user(user, HOLEFS, "mount", str(user_dir), "-o", "size=16M,suid,dev")
    assert mounted.returncode == 0, mounted.stderr
    try:
        status = json.loads(as_user(user, HOLEFS, "status", "--json", str(user_dir)).stdout)
        flags = status["options"].split(",")
        assert {"nosuid", "nodev"} <= set(flags) and not {"suid", "dev"} & set(flags)
    finally:
        as_user(user, HOLEFS, "umount", str(user_dir))
