"""holefs: a tmpfs-like FUSE filesystem whose hole punches give memory back."""

import os
import sys

STATUS_XATTR = "holefs.status"
"""The read-only xattr through which `holefs status` asks the daemon."""


PYFUSE3_BEFORE_SHIM = "pyfuse3" in sys.modules
"""pyfuse3 bound libfuse before the shim could interpose it: mount refuses."""


def _load_shim():
    """Load the C shim into the global symbol scope, ahead of pyfuse3.

    It must come first so that pyfuse3's call to fuse_session_new binds to
    the shim's (see holefs/_shim.c).
    """
    flags = sys.getdlopenflags()
    sys.setdlopenflags(flags | os.RTLD_GLOBAL)
    try:
        from . import _shim  # noqa: F401
    finally:
        sys.setdlopenflags(flags)


_load_shim()

from .release import release  # noqa: E402
