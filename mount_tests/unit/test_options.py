"""Mount option parsing, and remount's merging, without a mount."""

import re

import hypothesis
import pytest

from holefs.extents import CHUNK
from holefs.options import (
    MS_NOATIME,
    MS_NODEV,
    MS_NODIRATIME,
    MS_NOEXEC,
    MS_NOSUID,
    MS_RDONLY,
    MS_RELATIME,
    MS_STRICTATIME,
    OptionError,
    kernel_flags,
    parse,
    parse_size,
    physical_memory,
    remount,
)
from holefs.quota import Limits

from support import MiB


@pytest.mark.parametrize("text,value", [
    ("4096", 4096), ("1k", 1024), ("2M", 2 << 20), ("3g", 3 << 30), ("1T", 1 << 40),
])
def test_sizes(text, value):
    assert parse_size("size", text) == value


def test_percent_of_ram():
    assert parse_size("size", "25%", percent_of=1000) == 250


def test_defaults_are_tmpfs_defaults():
    opts = parse("")
    memory = physical_memory()
    assert abs(opts.size - memory // 2) <= CHUNK
    assert opts.ram == opts.size and not opts.spills
    assert opts.mode == 0o1777
    assert opts.nr_inodes == memory // 4096 // 2


def test_all_options():
    opts = parse("size=1G,ram=256M,spill=/tmp,nr_inodes=10k,mode=755,uid=0,gid=0,"
                 "allow_other,fsname=pool,noexec,debug")
    assert (opts.size, opts.ram, opts.spill, opts.nr_inodes, opts.mode) == \
        (1 << 30, 256 << 20, "/tmp", 10240, 0o755)
    assert opts.spills and opts.debug
    assert {"allow_other", "noexec", "fsname=pool", "default_permissions"} <= \
        opts.fuse_options()


def test_fstab_noise_is_ignored():
    opts = parse("rw,defaults,nofail,_netdev,x-systemd.automount,size=1M")
    assert opts.size == 1 << 20
    assert "rw" in opts.fuse_flags


@pytest.mark.parametrize("text,message", [
    ("size=abc", "size=abc"),
    ("size=10x", "suffix"),
    ("size=1Z", "suffix"),
    ("size", "needs a value"),
    ("ram=2G,size=1G", "larger than size"),
    ("inode32", "cannot promise 32 bits"),
    ("bdi_max_ratio=0", "percentage from 1 to 100"),
    ("bdi_max_ratio=101", "percentage from 1 to 100"),
    ("usrquota_block_hardlimit=1m", "limits nothing without usrquota"),
    ("quota,grpquota_inode_hardlimit=0", "must be more than 0"),
    ("usrquota,usrquota_block_hardlimit=9e", "larger than"),
    ("usrquota,usrquota_inode_hardlimit=10%", "% is not allowed"),
    ("noswap,ram=1G", "not ram="),
    ("nr_inodes=5%", "not allowed"),
    ("mode=999", "octal"),
    ("uid=nosuchuser", "no such user"),
    ("gid=nosuchgroup", "no such group"),
    ("threads=-1", "from 0 to 16"),
    ("threads=17", "from 0 to 16"),
    ("bogus", "unknown option"),
    ("bogus=1", "unknown option"),
])
def test_bad_options(text, message):
    with pytest.raises(OptionError, match=message):
        parse(text)


def test_tmpfs_options():
    unlimited = parse("size=0,nr_inodes=0")
    assert unlimited.size >= 1 << 62 and unlimited.nr_inodes == 0
    assert parse("nr_blocks=256").size == 1 << 20
    assert parse("size=1G,nr_blocks=256").size == 1 << 20  # the later one wins
    noswap = parse("size=1G,noswap")
    assert noswap.ram == noswap.size and not noswap.spills
    opts = parse("size=1M,huge=always,mpol=local,inode64")
    assert [option for option, _ in opts.no_effect] == ["huge=always", "mpol=local", "inode64"]


IN_FORCE = {"rw", "nosuid", "nodev", "relatime", "user_id=0", "group_id=0",
            "default_permissions"}


def test_remount_changes_what_it_names_and_keeps_the_rest():
    current = parse("size=1G,ram=256M,nr_inodes=1000,mode=755,nosuid,nodev")
    # What mount(8) passes: the options in force, then the new ones.
    new = remount(current, "rw,nosuid,nodev,relatime,remount,user_id=0,group_id=0,"
                  "default_permissions,size=2G", IN_FORCE)
    assert (new.size, new.ram, new.nr_inodes, new.mode) == (2 << 30, 256 << 20, 1000, 0o755)
    assert new.fuse_flags == current.fuse_flags


def test_remount_takes_ram_down_with_size_and_follows_an_all_ram_size():
    assert remount(parse("size=1G,ram=256M"), "size=128M", IN_FORCE).ram == 128 << 20
    assert remount(parse("size=1G"), "size=2G", IN_FORCE).ram == 2 << 30
    assert remount(parse("size=1G,ram=256M"), "noswap", IN_FORCE).ram == 1 << 30


@pytest.mark.parametrize("text,message", [
    ("allow_other", "allow_other: who may use the mount is set when it is mounted"),
    ("mode=700", "chmod the mountpoint"),
    ("fsname=other", "fsname=other: the source name is set at mount"),
    ("threads=8", "threads=8: the serving threads start with the mount"),
    ("ram=2G", "larger than size"),
])
def test_remount_refuses_what_only_a_mount_can_change(text, message):
    with pytest.raises(OptionError, match=re.escape(message)):
        remount(parse("size=1G,mode=1777,nosuid,nodev"), text, IN_FORCE)


def test_remount_leaves_the_kernel_flags_to_the_kernel():
    current = parse("size=1G,nosuid,nodev")
    assert remount(current, "ro,suid,noexec,noatime,strictatime", IN_FORCE) == current


@pytest.mark.parametrize("in_force,text,flags", [
    (IN_FORCE, "", MS_NOSUID | MS_NODEV | MS_RELATIME),
    (IN_FORCE, "ro", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_RELATIME),
    (IN_FORCE | {"ro"} - {"rw"}, "size=1G,rw,suid", MS_NODEV | MS_RELATIME),
    (IN_FORCE, "noatime,noexec", MS_NOSUID | MS_NODEV | MS_NOATIME | MS_RELATIME | MS_NOEXEC),
    (IN_FORCE, "strictatime", MS_NOSUID | MS_NODEV | MS_RELATIME | MS_STRICTATIME),
    ({"rw", "noatime"}, "atime", 0),
    ({"rw"}, "", 0),
    # mount(8)'s whole list, where a flag left out is off.
    (set(), "rw,nosuid,nodev,relatime,remount,user_id=0", MS_NOSUID | MS_NODEV | MS_RELATIME),
])
def test_kernel_flags(in_force, text, flags):
    assert kernel_flags(in_force, text) == flags


@pytest.mark.parametrize("in_force,text,flags", [
    ({"rw", "noatime"}, "relatime", MS_RELATIME),
    ({"rw", "relatime"}, "noatime,nodiratime", MS_NOATIME | MS_NODIRATIME),
    ({"rw", "noatime"}, "strictatime", MS_STRICTATIME),
    (set(), "rw,noatime,remount,exec,suid,dev,relatime", MS_RELATIME),
])
def test_kernel_flags_when_the_last_atime_word_wins(in_force, text, flags):
    assert kernel_flags(in_force, text, last_atime_wins=True) == flags


def test_quota_options():
    options = parse("quota,usrquota_block_hardlimit=1m,grpquota_inode_hardlimit=0x10")
    assert options.quotas == {"user": Limits(bytes=MiB), "group": Limits(inodes=16)}
    assert "usrquota,usrquota_block_hardlimit=1048576" in options.describe()
    assert parse("grpquota").quotas == {"group": Limits()}
    assert parse("").quotas == {}


def test_remount_turns_quotas_on_and_changes_their_limits():
    current = parse("usrquota,usrquota_block_hardlimit=1m")
    assert remount(current, "size=1G", IN_FORCE).quotas == current.quotas
    assert remount(current, "usrquota_inode_hardlimit=5,grpquota", IN_FORCE).quotas == {
        "user": Limits(bytes=MiB, inodes=5), "group": Limits()}


def test_threads():
    assert parse("").threads == 2
    assert parse("threads=0").threads == 0
    assert "threads=4" in parse("threads=4").describe()
    assert remount(parse("threads=4"), "size=1G,threads=4", IN_FORCE).threads == 4


@pytest.mark.parametrize("text,value", [
    ("0x10", 16), ("0X1f", 31), ("010", 8), ("0", 0), ("1e", 1 << 60), ("2E", 2 << 60),
    ("1P", 1 << 50), ("0x1k", 1024),
])
def test_sizes_as_tmpfs_parses_them(text, value):
    assert parse_size("size", text) == value


@pytest.mark.parametrize("text", ["²", "٣", "1²", "-1", "+1", " 1", "1 ", "09", "0x", "1kk",
                                  "1%k", "9" * 5000, "1\0"])
def test_sizes_refused(text):
    with pytest.raises(OptionError, match="expected a number"):
        parse_size("size", text, percent_of=100)


@pytest.mark.parametrize("text", ["threads=²", "threads=٣", "uid=²", "gid=²", "uid=a\0b",
                                  "size=" + "9" * 5000, "nr_inodes=" + "1" * 5000,
                                  "mode=٧٥٥", "spill=/tmp\0x", "size=1\0"])
def test_hostile_values_are_refused_clearly(text):
    with pytest.raises(OptionError) as refused:
        parse(text)
    assert len(str(refused.value)) < 200


@hypothesis.settings(max_examples=500, deadline=None)
@hypothesis.given(hypothesis.strategies.text(max_size=80))
def test_any_text_parses_or_is_refused(text):
    """Nothing but OptionError comes out of the parser or of remount's merge."""
    for parse_it in (parse, lambda t: remount(parse("size=1G"), t, IN_FORCE)):
        try:
            parse_it(text)
        except OptionError:
            pass


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(hypothesis.strategies.lists(hypothesis.strategies.sampled_from(
    ["size", "ram", "nr_inodes", "nr_blocks", "threads", "uid", "gid", "mode", "spill"]),
    min_size=1, max_size=3), hypothesis.strategies.text(max_size=20))
def test_any_value_of_a_known_option_parses_or_is_refused(keys, value):
    try:
        parse(",".join(f"{key}={value}" for key in keys))
    except OptionError:
        pass
