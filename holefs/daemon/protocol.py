"""The fast path's protocol: the handlers that the C shim calls, typed.

The shim's own list (`_shim.HANDLERS`) is the one list of their names;
install() resolves each on the object it is given, and a test holds this
class to that list.  The contract, in words, is at the top of _shim.c;
the attributes are holefs.state.attributes()'s.
"""

from typing import Protocol, TypeAlias

from pyfuse3 import FileHandleT, InodeT

from ..state import Attributes
from ._shim import Pending, Spliced

Data: TypeAlias = memoryview | Spliced


class FastPathHandlers(Protocol):
    def read(self, fh: FileHandleT, offset: int, length: int,
             splice: bool = False) -> bytes | None: ...

    def write(self, fh: FileHandleT, offset: int, data: Data, writeback: bool = False,
              pid: int = 0) -> int: ...

    def fallocate(self, fh: FileHandleT, mode: int, offset: int, length: int,
                  pid: int = 0) -> None: ...

    def lseek(self, fh: FileHandleT, offset: int, whence: int) -> int: ...

    def drop_setid(self, inode_id: InodeT, uid: int, gid: int, pid: int,
                   request: str) -> None: ...

    def lookup(self, parent_id: InodeT, name: bytes) -> Attributes | None: ...

    def getattr(self, inode_id: InodeT) -> Attributes: ...

    def create(self, parent_id: InodeT, name: bytes, mode: int, uid: int, gid: int,
               umask: int, pid: int) -> Attributes: ...

    def tmpfile(self, parent_id: InodeT, mode: int, uid: int, gid: int, umask: int,
                pid: int) -> Attributes: ...

    def unlink(self, parent_id: InodeT, name: bytes) -> None: ...

    def get_flags(self, inode_id: InodeT, as_xflags: bool) -> int: ...

    def set_flags(self, inode_id: InodeT, flags: int, as_xflags: bool) -> None: ...

    def control(self, pending: Pending, inode: InodeT, cmd: int, data: bytes, uid: int,
                pid: int) -> None: ...

    def statx(self, inode_id: InodeT) -> tuple[Attributes, int]: ...
