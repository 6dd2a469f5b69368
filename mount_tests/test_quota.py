"""User and group quotas: the rules without a mount, then an ordinary
user held to them on holefs, beside a tmpfs with the same options where
the kernel has tmpfs quotas (CONFIG_TMPFS_QUOTA, Linux 6.6 on)."""

import errno
import json
import math
import os
import subprocess
import sys

import pytest

from holefs.extents import PAGE
from holefs.quota import Limits, OverQuota, Quotas

from support import MiB, as_user, run_holefs

# --- the rules -------------------------------------------------------------


def quotas(exempt=(), **limits):
    return Quotas(limits, exempt=lambda pid: pid in exempt)


def over_quota(why):
    """pytest.raises for OverQuota whose reason begins with *why*."""
    return pytest.raises(OverQuota, check=lambda e: e.why.startswith(why))


def test_inodes_are_charged_to_owner_and_group_until_freed():
    q = quotas(user=Limits(inodes=2), group=Limits(inodes=3))
    q.charge_inode(1000, 50, caller=7)
    q.charge_inode(1000, 50, caller=7)
    with over_quota("user 1000's usrquota_inode_hardlimit=2"):
        q.charge_inode(1000, 50, caller=7)
    q.charge_inode(1001, 50, caller=7)
    with over_quota("group 50's grpquota_inode_hardlimit=3"):
        q.charge_inode(1002, 50, caller=7)
    q.uncharge_inode(1000, 50)
    q.charge_inode(1000, 50, caller=7)
    assert q.use == {"user": {1000: [0, 2], 1001: [0, 1]}, "group": {50: [0, 3]}}


def test_page_room_is_the_tightest_limit_unless_the_caller_is_exempt():
    q = quotas(exempt={1}, user=Limits(bytes=10 * PAGE), group=Limits(bytes=4 * PAGE + 1))
    assert q.page_room(1000, 50, wanted=3, caller=7).pages == math.inf
    q.charge_pages(1000, 50, 3)
    room = q.page_room(1000, 50, wanted=3, caller=7)
    assert (room.pages, room.why) == (1, "group 50's grpquota_block_hardlimit=16385")
    assert q.page_room(1000, 50, wanted=3, caller=1).pages == math.inf
    q.charge_pages(1000, 50, -3)
    assert q.use == {"user": {}, "group": {}}


def test_a_lowered_limit_refuses_growth_only():
    q = quotas(user=Limits(bytes=2 * PAGE, inodes=5))
    q.charge_inode(1000, 50, caller=7)
    q.charge_pages(1000, 50, 8)
    assert q.page_room(1000, 50, wanted=1, caller=7).pages == 0
    q.charge_inode(1000, 50, caller=7)  # the inode limit has room
    q.charge_pages(1000, 50, -8)


def test_chown_moves_the_charges_or_is_refused():
    q = quotas(user=Limits(bytes=4 * PAGE), group=Limits())
    q.charge_inode(0, 0, caller=7)
    q.charge_pages(0, 0, 5)
    with over_quota("user 1000's usrquota_block_hardlimit"):
        q.transfer(5, 1, (0, 0), (1000, 0), caller=7)
    q.transfer(3, 1, (0, 0), (0, 9), caller=7)  # no group limits
    assert q.use == {"user": {0: [5, 1]}, "group": {0: [2, 0], 9: [3, 1]}}
    q.transfer(0, 1, (0, 9), (0, 9), caller=7)
    assert q.use["group"] == {0: [2, 0], 9: [3, 1]}


def test_exemption_is_asked_only_at_a_limit():
    asked = []
    q = Quotas({"user": Limits(inodes=1)}, exempt=lambda pid: asked.append(pid) or False)
    q.charge_inode(1000, 0, caller=7)
    assert asked == []
    with pytest.raises(OverQuota):
        q.charge_inode(1000, 0, caller=8)
    assert asked == [8]


def test_report_lists_who_holds_most():
    q = quotas(user=Limits(bytes=MiB))
    q.charge_inode(5, 5, caller=None)
    q.charge_inode(6, 5, caller=None)
    q.charge_pages(6, 5, 2)
    report = q.report()
    assert report["user"] == {"limits": {"bytes": MiB, "inodes": 0}, "ids": 2,
                              "use": {"6": {"bytes": 2 * PAGE, "inodes": 1},
                                      "5": {"bytes": 0, "inodes": 1}}}
    assert report["group"] == {"limits": None, "ids": 0, "use": {}}


def test_a_kind_turned_on_counts_what_is_held_and_off_costs_nothing():
    q = quotas()
    q.charge_inode(5, 7, caller=None)
    q.charge_pages(5, 7, 3)
    assert q.use == {"user": {}, "group": {}}
    q.set_limits({"group": Limits(inodes=1)}, [(5, 7, 3, 1), (6, 7, 0, 0)])
    assert q.use == {"user": {}, "group": {7: [3, 1]}}
    with over_quota("group 7's grpquota_inode_hardlimit=1"):
        q.charge_inode(6, 7, caller=None)
    q.set_limits({"group": Limits(inodes=2), "user": Limits()}, [(5, 7, 3, 1)])
    assert q.use == {"user": {5: [3, 1]}, "group": {7: [3, 1]}}


# --- on a mount, as an ordinary user ----------------------------------------

QUOTA_OPTIONS = "quota,usrquota_block_hardlimit=1M,usrquota_inode_hardlimit=5"

# Run as the user in the directory it owns (one inode charged already):
# what each step gives, as a word.
STEPS = r"""
import errno, os, sys
os.chdir(sys.argv[1])

def outcome(step):
    try:
        result = step()
        return "ok" if result is None else str(result)
    except OSError as e:
        return errno.errorcode[e.errno]

def create(name):
    os.close(os.open(name, os.O_CREAT | os.O_WRONLY, 0o644))

fd = os.open("data", os.O_CREAT | os.O_RDWR, 0o644)
steps = [
    ("write 2M", lambda: os.pwrite(fd, b"x" * (2 << 20), 0)),
    ("write more", lambda: os.pwrite(fd, b"x" * 4096, 1 << 20)),
    ("fallocate", lambda: os.posix_fallocate(fd, 1 << 20, 4096)),
    ("truncate 512K", lambda: os.truncate("data", 512 << 10)),
    ("write 512K", lambda: os.pwrite(fd, b"y" * (512 << 10), 512 << 10)),
    ("mkdir", lambda: os.mkdir("sub")),
    ("symlink", lambda: os.symlink("data", "link")),
    ("create", lambda: create("f1")),
    ("create again", lambda: create("f2")),
    ("link", lambda: os.link("data", "hard")),
    ("unlink", lambda: os.unlink("f1")),
    ("create after unlink", lambda: create("f3")),
]
print(" ".join(f"{name.replace(' ', '_')}={outcome(step)}" for name, step in steps))
"""


@pytest.fixture
def quota_mounts(mount_holefs, small_tmpfs):
    """holefs with quotas, and tmpfs with the same unless this kernel has
    no tmpfs quotas (CONFIG_TMPFS_QUOTA), by name."""
    mounts = {"holefs": mount_holefs(f"size=16M,allow_other,{QUOTA_OPTIONS}").path}
    try:
        mounts["tmpfs"] = small_tmpfs("16M", options=QUOTA_OPTIONS)
    except subprocess.CalledProcessError:
        assert not tmpfs_has_quotas()
    return mounts


def tmpfs_has_quotas():
    result = subprocess.run(["unshare", "--mount", "sh", "-c",
                             "mount -t tmpfs -o usrquota tmpfs /mnt"], capture_output=True)
    return result.returncode == 0


def test_an_ordinary_user_is_held_to_the_quota(quota_mounts, user):
    seen = {}
    for fs, root in quota_mounts.items():
        home = root / "home"
        home.mkdir()
        os.chown(home, user.pw_uid, user.pw_gid)
        ran = as_user(user, sys.executable, "-c", STEPS, str(home))
        assert ran.returncode == 0, ran.stderr
        seen[fs] = ran.stdout.split()
    # 1 MiB of data is 256 pages; five inodes are home, data, sub, link, f1.
    expected = ["write_2M=1048576", "write_more=EDQUOT", "fallocate=EDQUOT",
                "truncate_512K=ok", "write_512K=524288", "mkdir=ok", "symlink=ok",
                "create=ok", "create_again=EDQUOT", "link=ok", "unlink=ok",
                "create_after_unlink=ok"]
    assert seen == dict.fromkeys(quota_mounts, expected)
    held = json.loads(run_holefs("status", "--json", str(quota_mounts["holefs"])).stdout)
    held = held["quotas"]
    assert held["user"]["use"][str(user.pw_uid)] == {"bytes": MiB, "inodes": 5}
    assert held["group"]["use"][str(user.pw_gid)] == {"bytes": MiB, "inodes": 5}


def has_cap_sys_resource():
    with open("/proc/self/status") as f:
        caps = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff"))
    return bool(caps >> 24 & 1)


def test_chown_to_a_user_without_room_is_refused_unless_root_may_pass(quota_mounts, user):
    """The user holds 768K of its 1M: root's 512K file is too much for it.
    CAP_SYS_RESOURCE passes every limit, as the kernel's quotas let it;
    root lacks it where this suite runs in a container."""
    seen = {}
    for fs, root in quota_mounts.items():
        mine = root / "mine"
        mine.write_bytes(b"")
        os.chown(mine, user.pw_uid, -1)
        ran = as_user(user, sys.executable, "-c", "import sys\n"
                      "open(sys.argv[1], 'wb').write(b'u' * (768 << 10))", str(mine))
        assert ran.returncode == 0, ran.stderr
        big = root / "big"
        big.write_bytes(b"z" * (512 << 10))
        try:
            os.chown(big, user.pw_uid, -1)
            seen[fs] = (os.stat(big).st_uid == user.pw_uid, None)
        except OSError as e:
            seen[fs] = (os.stat(big).st_uid == user.pw_uid, errno.errorcode[e.errno])
    expected = (True, None) if has_cap_sys_resource() else (False, "EDQUOT")
    assert seen == dict.fromkeys(quota_mounts, expected)


def test_a_remount_turns_quotas_on_and_changes_the_limits(mount_holefs, user):
    """FUSE has no quotactl(2), so a remount is how the limits change;
    tmpfs refuses both ("Cannot enable quota on remount").  What the user
    held before counts."""
    m = mount_holefs("size=16M,allow_other")
    home = m / "home"
    home.mkdir()
    os.chown(home, user.pw_uid, user.pw_gid)
    write = ("import errno, os, sys\n"
             "fd = os.open(sys.argv[1], os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644)\n"
             "try:\n"
             "    print(os.pwrite(fd, b'x' * int(sys.argv[2]), 0))\n"
             "except OSError as e:\n"
             "    print(errno.errorcode[e.errno])")

    def user_writes(name, size):
        ran = as_user(user, sys.executable, "-c", write, str(home / name), str(size))
        assert ran.returncode == 0, ran.stderr
        return ran.stdout.strip()

    assert user_writes("old", 768 << 10) == str(768 << 10)
    written = []
    for options in ["usrquota,usrquota_block_hardlimit=1M", "usrquota_block_hardlimit=2M",
                    "grpquota,grpquota_block_hardlimit=512K"]:
        assert run_holefs("remount", str(m.path), "-o", options, check=False).returncode == 0
        written.append(user_writes("new", 3 * MiB))
    assert written == [str(256 << 10), str(1280 << 10), "EDQUOT"]
    options = m.status()["options"]
    assert "usrquota,usrquota_block_hardlimit=2097152" in options
    assert "grpquota,grpquota_block_hardlimit=524288" in options
