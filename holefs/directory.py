"""A directory's entries, with the cookies that readdir hands out.

readdir reads a directory in pieces, and the kernel resumes each piece at
the cookie of the last entry it got (also what telldir returns, and what
seekdir and rewinddir give back).  So a cookie must keep its place while
names come and go: each name gets the next number when it is added, and
keeps it until it is removed, as tmpfs's stable offsets do (fs/libfs.c).
A listing from a cookie then shows every name added since, and none that
was removed.  Cookies 0 to 2 stand before `.` and `..`.
"""

from bisect import bisect_right

FIRST_COOKIE = 3


class Entries:
    """name -> inode, in the order the names were added.

    Invariants: _cookies is ascending, and _names[i] holds the name that
    got _cookies[i]; a name is live while _live maps it to that cookie.
    The others are removed names, dropped once they are half the lists.
    """

    __slots__ = ("_inodes", "_live", "_cookies", "_names", "_next")

    def __init__(self):
        self._inodes = {}
        self._live = {}
        self._cookies = []
        self._names = []
        self._next = FIRST_COOKIE

    def __len__(self):
        return len(self._inodes)

    def __contains__(self, name):
        return name in self._inodes

    def __getitem__(self, name):
        return self._inodes[name]

    def get(self, name, default=None):
        return self._inodes.get(name, default)

    def items(self):
        return self._inodes.items()

    def __setitem__(self, name, inode):
        """Name *inode*; a name that is already there keeps its cookie."""
        if name not in self._inodes:
            self._live[name] = self._next
            self._cookies.append(self._next)
            self._names.append(name)
            self._next += 1
        self._inodes[name] = inode

    def __delitem__(self, name):
        del self._inodes[name]
        del self._live[name]
        if len(self._cookies) > 2 * len(self._live) + 16:
            kept = [(cookie, name) for cookie, name in zip(self._cookies, self._names)
                    if self._live.get(name) == cookie]
            self._cookies = [cookie for cookie, _ in kept]
            self._names = [name for _, name in kept]

    def to_value(self, id_of):
        """The names, their cookies and inodes (by *id_of*), as a value."""
        order = zip(self._cookies, self._names)
        return {"order": [[cookie, name.hex()] for cookie, name in order],
                "live": [[name.hex(), self._live[name], id_of(inode)]
                         for name, inode in self._inodes.items()],
                "next": self._next}

    @classmethod
    def from_value(cls, value, inode_of):
        entries = cls()
        entries._cookies = [cookie for cookie, _ in value["order"]]
        entries._names = [bytes.fromhex(name) for _, name in value["order"]]
        for name, cookie, inode in value["live"]:
            name = bytes.fromhex(name)
            entries._live[name] = cookie
            entries._inodes[name] = inode_of(inode)
        entries._next = value["next"]
        return entries

    def since(self, cookie):
        """(cookie, name, inode) of each live name added after *cookie*."""
        for i in range(bisect_right(self._cookies, cookie), len(self._cookies)):
            name = self._names[i]
            if self._live.get(name) == self._cookies[i]:
                yield self._cookies[i], name, self._inodes[name]
