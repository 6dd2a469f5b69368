"""The holefs daemon: the C shim that interposes libfuse, pyfuse3 over it,
and the handlers.  Only the mount command imports it."""

import os
import sys

PYFUSE3_BEFORE_SHIM = "pyfuse3" in sys.modules
"""pyfuse3 bound libfuse before the shim could interpose it: mount refuses."""


def _load_shim():
    """Load the C shim into the global symbol scope, ahead of pyfuse3.

    It must come first so that pyfuse3's call to fuse_session_new binds to
    the shim's (see holefs/daemon/_shim.c).
    """
    flags = sys.getdlopenflags()
    sys.setdlopenflags(flags | os.RTLD_GLOBAL)
    try:
        from . import _shim  # noqa: F401
    finally:
        sys.setdlopenflags(flags)


_load_shim()
