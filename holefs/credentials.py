"""What FUSE does not send about a caller, read from /proc.

A request carries the caller's uid, gid and thread id, but neither its
supplementary groups nor its capabilities, which the VFS's set-ID rules
need.  A caller that is gone, or whose /proc holefs cannot read, counts
as unprivileged and outside the group: the rules then clear more, never
less.
"""

CAP_FSETID = 4


def _status(pid):
    """The fields of /proc/PID/status, as text; empty if unreadable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return dict(line.rstrip("\n").partition(":\t")[::2] for line in f)
    except OSError:
        return {}


def in_group(group, gid, pid):
    """Whether a caller whose fsgid is *gid* is in *group*, counting the
    supplementary groups of its process *pid*."""
    return group == gid or str(group) in _status(pid).get("Groups", "").split()


def has_capability(pid, capability):
    """Whether the caller *pid* holds *capability* in its effective set."""
    try:
        return bool(int(_status(pid).get("CapEff", "0"), 16) >> capability & 1)
    except ValueError:
        return False
