"""What FUSE does not send about a caller, read from /proc.

A request carries the caller's uid, gid and thread id, but neither its
supplementary groups nor its capabilities, which the VFS's set-ID rules
need.  Where holefs allows idmapped mounts, only the requests that make
an inode carry the ids: the others carry NO_ID, and the caller's fsuid
and fsgid come from /proc too (its thread is waiting in the syscall, so
the id stays its own).  A caller that is gone, or whose /proc holefs
cannot read, counts as unprivileged and outside the group: the rules
then clear more, never less.
"""

CAP_FSETID = 4
CAP_SYS_RESOURCE = 24
NO_ID = 0xFFFFFFFF  # FUSE_INVALID_UIDGID


def _status(pid):
    """The fields of /proc/PID/status, as text; empty if unreadable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return dict(line.rstrip("\n").partition(":\t")[::2] for line in f)
    except OSError:
        return {}


def _fs_id(status, field):
    """The filesystem id of a Uid: or Gid: line (real, effective, saved, fs)."""
    try:
        return int(status[field].split()[3])
    except (KeyError, IndexError, ValueError):
        return NO_ID


def caller_uid(uid, pid):
    """The caller's fsuid: the request's, or else its process *pid*'s."""
    return _fs_id(_status(pid), "Uid") if uid == NO_ID else uid


def in_group(group, gid, pid):
    """Whether a caller whose fsgid is *gid* (or NO_ID: unknown) is in
    *group*, counting the supplementary groups of its process *pid*."""
    status = _status(pid)
    if gid == NO_ID:
        gid = _fs_id(status, "Gid")
    return group == gid or str(group) in status.get("Groups", "").split()


def has_capability(pid, capability):
    """Whether the caller *pid* holds *capability* in its effective set."""
    try:
        return bool(int(_status(pid).get("CapEff", "0"), 16) >> capability & 1)
    except ValueError:
        return False
