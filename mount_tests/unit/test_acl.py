"""The ACL rules of holefs/acl.py, without a mount: parsing as the kernel
checks, the mode in step, and inheritance."""

import errno
import stat

import hypothesis
import pytest

from holefs import acl
from holefs.acl import GROUP, GROUP_OBJ, MASK, OTHER, USER, USER_OBJ

MINIMAL = [(USER_OBJ, 6, acl.UNDEFINED_ID), (GROUP_OBJ, 4, acl.UNDEFINED_ID),
           (OTHER, 4, acl.UNDEFINED_ID)]
NAMED = [(USER_OBJ, 7, acl.UNDEFINED_ID), (USER, 5, 1000), (GROUP_OBJ, 5, acl.UNDEFINED_ID),
         (GROUP, 1, 50), (MASK, 6, acl.UNDEFINED_ID), (OTHER, 0, acl.UNDEFINED_ID)]


def test_round_trip():
    assert acl.parse(acl.build(NAMED)) == NAMED


@pytest.mark.parametrize("entries", [
    MINIMAL[:2],                                        # no other
    MINIMAL + [(OTHER, 4, acl.UNDEFINED_ID)],           # two others
    MINIMAL[:1] + [(USER, 4, 7)] + MINIMAL[1:],         # a named user, no mask
    [(USER_OBJ, 8, acl.UNDEFINED_ID)] + MINIMAL[1:],    # a bit beyond rwx
    [NAMED[0], (USER, 5, 9), (USER, 5, 3)] + NAMED[2:],  # out of order
    [NAMED[0], (USER, 5, 3), (USER, 5, 3)] + NAMED[2:],  # repeated
    [(0x40, 0, 0)] + MINIMAL,                           # unknown tag
])
def test_invalid_acls_are_einval(entries):
    with pytest.raises(OSError) as refused:
        acl.parse(acl.build(entries))
    assert refused.value.errno == errno.EINVAL


@pytest.mark.parametrize("value", [b"", b"\x02\0\0\0\x01", b"\x01\0\0\0" + acl.build(MINIMAL)[4:]])
def test_malformed_values_are_einval(value):
    with pytest.raises(OSError) as refused:
        acl.parse(value)
    assert refused.value.errno == errno.EINVAL


def test_setting_an_access_acl_sets_the_mode_from_the_mask():
    mode, kept = acl.set_access(acl.build(NAMED), stat.S_IFREG | 0o2600, keeps_setgid=True)
    assert mode == stat.S_IFREG | 0o2760 and kept == acl.build(NAMED)
    mode, _ = acl.set_access(acl.build(NAMED), stat.S_IFREG | 0o2600, keeps_setgid=False)
    assert mode == stat.S_IFREG | 0o760


def test_a_minimal_acl_is_only_the_mode():
    mode, kept = acl.set_access(acl.build(MINIMAL), stat.S_IFREG | 0o600, keeps_setgid=True)
    assert (mode, kept) == (stat.S_IFREG | 0o644, None)


def test_chmod_moves_the_mask_not_the_group_entry():
    entries = acl.chmod(NAMED, 0o640)
    assert dict((tag, perm) for tag, perm, _ in entries)[MASK] == 4
    assert entries[2] == NAMED[2] and entries[0][1] == 6 and entries[-1][1] == 0


def test_inheritance_masks_with_the_mode_and_skips_the_umask():
    default = acl.build(NAMED)
    mode, access, passed_on = acl.new_inode(default, stat.S_IFREG | 0o666, umask=0o077)
    assert mode == stat.S_IFREG | 0o660 and passed_on is None
    assert acl.parse(access)[4] == (MASK, 6, acl.UNDEFINED_ID)
    mode, _, passed_on = acl.new_inode(default, stat.S_IFDIR | 0o777, umask=0o077)
    assert mode == stat.S_IFDIR | 0o760 and passed_on == default


def test_without_a_default_the_umask_applies_and_symlinks_take_nothing():
    assert acl.new_inode(None, stat.S_IFREG | 0o666, 0o022) == (stat.S_IFREG | 0o644, None, None)
    assert acl.new_inode(acl.build(NAMED), stat.S_IFLNK | 0o777, 0o022) == \
        (stat.S_IFLNK | 0o777, None, None)


@hypothesis.given(hypothesis.strategies.binary(max_size=64))
def test_any_bytes_parse_or_are_einval(value):
    try:
        acl.parse(value)
    except OSError as e:
        assert e.errno == errno.EINVAL
