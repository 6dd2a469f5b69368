"""holefs: a tmpfs-like FUSE filesystem whose hole punches give memory back.

The library face: release() and the status xattr's name.  It maps no
libfuse; the daemon, which interposes libfuse, is holefs.daemon.
"""

STATUS_XATTR = "holefs.status"
"""The read-only xattr through which `holefs status` asks the daemon."""

from .release import release  # noqa: E402

__all__ = ["STATUS_XATTR", "release"]
