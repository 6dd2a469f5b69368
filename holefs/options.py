"""Mount options, parsed the way mount(8) and tmpfs users expect."""

import dataclasses
import grp
import os
import pwd
import re
from typing import Any

from .extents import CHUNK, PAGE
from .quota import KINDS, OPTION_PREFIX, Limits

# Options that libfuse's mount code understands and holefs passes through.
FUSE_FLAGS = {"ro", "rw", "suid", "nosuid", "dev", "nodev", "exec", "noexec",
              "sync", "async", "dirsync", "atime", "noatime", "nodiratime",
              "relatime", "norelatime", "strictatime", "allow_other"}
# Options that mount(8), fstab or mount.fuse3 may add, and that mean nothing here.
IGNORED = {"defaults", "auto", "noauto", "user", "nouser", "users", "owner",
           "_netdev", "nofail", "default_permissions"}
IGNORED_PREFIXES = ("x-", "comment=")
# tmpfs's options that mean nothing for holefs: accepted, with the reason
# logged at mount, so that an fstab line written for tmpfs still mounts.
NO_EFFECT = {
    "huge": "holefs keeps file data in a memfd of small pages",
    "mpol": "holefs places no memory by NUMA policy",
    "inode64": "holefs's inode numbers are 64-bit already",
    "lazytime": "holefs keeps every timestamp in memory anyway",
}
# tmpfs's options that holefs cannot honour: refused, with the reason.
REFUSED = {
    "inode32": "holefs does not reuse inode numbers, so it cannot promise 32 bits",
}
# tmpfs's quota switches, and the kinds (quota.KINDS) that each turns on.
QUOTA_SWITCHES = {"quota": KINDS, "usrquota": ("user",), "grpquota": ("group",)}
QUOTA_LIMITS = {f"{OPTION_PREFIX[kind]}_{name}_hardlimit": (kind, name)
                for kind in KINDS for name in ("block", "inode")}
MAX_QUOTA_LIMIT = (1 << 63) - 1

# mount(2)'s flags, which a remount gives the kernel whole: what each flag
# word sets and clears, as mount(8) maps them for tmpfs.  The kernel
# settles the atime flags: noatime wins over relatime, strictatime clears
# both, and none at all keeps those in force.
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_SYNCHRONOUS = 1, 2, 4, 8, 16
MS_DIRSYNC, MS_NOATIME, MS_NODIRATIME = 128, 1024, 2048
MS_RELATIME, MS_STRICTATIME = 1 << 21, 1 << 24
KERNEL_FLAGS = {
    "ro": (MS_RDONLY, 0), "rw": (0, MS_RDONLY),
    "nosuid": (MS_NOSUID, 0), "suid": (0, MS_NOSUID),
    "nodev": (MS_NODEV, 0), "dev": (0, MS_NODEV),
    "noexec": (MS_NOEXEC, 0), "exec": (0, MS_NOEXEC),
    "sync": (MS_SYNCHRONOUS, 0), "async": (0, MS_SYNCHRONOUS),
    "dirsync": (MS_DIRSYNC, 0),
    "noatime": (MS_NOATIME, 0), "atime": (0, MS_NOATIME),
    "relatime": (MS_RELATIME, 0), "norelatime": (0, MS_RELATIME),
    "strictatime": (MS_STRICTATIME, 0), "nodiratime": (MS_NODIRATIME, 0),
}
ATIME_WORDS = {"noatime", "relatime", "strictatime"}
# Options that only a new mount can change, and what to do instead.
FIXED = {
    "mode": "the root directory's mode is set at mount; chmod the mountpoint instead",
    "uid": "the root directory's owner is set at mount; chown the mountpoint instead",
    "gid": "the root directory's group is set at mount; chgrp the mountpoint instead",
    "fsname": "the source name is set at mount",
    "reserve": "reserve applies to files from the mount on; unmount and mount again",
    "threads": "the serving threads start with the mount; unmount and mount again",
    "bdi_max_ratio": "the backing device is set up at mount; as root, write "
                     "/sys/class/bdi/MAJ:MIN/max_ratio instead",
    "writeback_cache": "the kernel's write caching is settled when it is mounted; unmount "
                       "and mount again",
}

DEFAULT_SPILL = "/var/tmp"
SUFFIXES = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50,
            "e": 1 << 60}
# Bounds of what the kernel can take: the RAM memfd's size is an off_t,
# statfs counts inodes in 64 bits, and uid_t -1 means "no owner".
MAX_SIZE = (1 << 63) - CHUNK
MAX_INODES = (1 << 64) - 1
MAX_ID = (1 << 32) - 2
# Threads that read requests beside trio's: two clients' reads and writes
# are then served at once.
DEFAULT_THREADS = 2
MAX_THREADS = 16


class OptionError(ValueError):
    """A mount option that cannot be used; the message says which and why."""


@dataclasses.dataclass
class MountOptions:
    size: int
    nr_inodes: int
    ram: int
    mode: int = 0o1777
    uid: int = 0
    gid: int = 0
    spill: str = DEFAULT_SPILL
    fsname: str = "holefs"
    debug: bool = False
    reserve: bool = False
    threads: int = DEFAULT_THREADS
    writeback_cache: bool = False
    bdi_max_ratio: int | None = None  # of the kernel's dirty limit; None: FUSE's 1%, strictly
    fuse_flags: tuple = ()
    no_effect: tuple = ()  # (option, why it does nothing here)
    quotas: dict = dataclasses.field(default_factory=dict)  # kind -> quota.Limits

    def quota_items(self):
        return [item for kind, limits in sorted(self.quotas.items())
                for item in limits.describe(kind)]

    @property
    def spills(self):
        """Data beyond ram= goes to a spill file only when ram= < size=."""
        return self.ram < self.size

    def describe(self, flags=None):
        """The options in force, as -o would give them, for holefs status;
        *flags*, what the kernel applied, in place of those asked for."""
        parts = [f"size={self.size >> 10}k", f"ram={self.ram >> 10}k",
                 f"nr_inodes={self.nr_inodes}", f"mode={self.mode:o}",
                 f"uid={self.uid}", f"gid={self.gid}"]
        if self.spills:
            parts.append(f"spill={self.spill}")
        if self.reserve:
            parts.append("reserve")
        if self.writeback_cache:
            parts.append("writeback_cache")
        parts.append(f"threads={self.threads}")
        if self.bdi_max_ratio is not None:
            parts.append(f"bdi_max_ratio={self.bdi_max_ratio}")
        parts += self.quota_items()
        return ",".join(parts + list(self.fuse_flags if flags is None else flags))

    def fuse_options(self):
        """The option set for pyfuse3.init()."""
        return {"default_permissions", f"fsname={self.fsname}",
                "subtype=holefs", *self.fuse_flags}


def physical_memory():
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


NUMBER = re.compile(r"(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)([kKmMgGtTpPeE]?)(%?)", re.ASCII)
MAX_DIGITS = 40  # far beyond any size; int() of thousands of digits is slow, then refused


def parse_size(name, text, percent_of=None):
    """Parse a size as tmpfs does (the kernel's memparse): a decimal, 0x hex
    or 0-led octal number, an optional k, m, g, t, p or e suffix, and, where
    *percent_of* is given, a final % of it.  Only ASCII digits count."""
    match = NUMBER.fullmatch(text) if len(text) <= MAX_DIGITS else None
    if match and match[3] and percent_of is None:
        raise OptionError(f"{name}={text}: % is not allowed here")
    if not match:
        allowed = " or %" if percent_of is not None else ""
        if len(text) > MAX_DIGITS:
            text = text[:MAX_DIGITS] + "..."
        raise OptionError(f"{name}={text}: expected a number (decimal, 0x hex or 0-led "
                          f"octal) with an optional k, m, g, t, p or e suffix{allowed}")
    digits = match[1]
    base = 16 if digits[:2] in ("0x", "0X") else 8 if digits.startswith("0") else 10
    number = int(digits, base) * SUFFIXES[match[2].lower()]
    if match[3]:
        return percent_of * number // 100
    return number


def round_to_chunk(value):
    return -(-value // CHUNK) * CHUNK


def is_decimal(text):
    """Only ASCII digits: str.isdigit() also takes '²', which int() refuses."""
    return text.isascii() and text.isdigit() and len(text) <= MAX_DIGITS


def _parse_id(name, text, lookup):
    if is_decimal(text):
        if int(text) > MAX_ID:
            raise OptionError(f"{name}={text}: larger than the largest id, {MAX_ID}")
        return int(text)
    try:
        return lookup(text)
    except (KeyError, ValueError):  # ValueError: a NUL in the name
        kind = "user" if name == "uid" else "group"
        raise OptionError(f"{name}={text}: no such {kind}") from None


def parse(text):
    """Turn a comma-separated -o string into MountOptions; as in mount(8), a
    later option overrides an earlier one."""
    if "\0" in (text or ""):
        raise OptionError("options may not hold a NUL character")
    memory = physical_memory()
    values: dict[str, Any] = {}  # a switch's True, else the value's text
    flags = []
    no_effect = []
    for item in filter(None, (text or "").split(",")):
        key, eq, value = item.partition("=")
        if item in FUSE_FLAGS:
            flags.append(item)
        elif key in IGNORED or item.startswith(IGNORED_PREFIXES):
            continue
        elif key in NO_EFFECT:
            no_effect.append((item, NO_EFFECT[key]))
        elif key in REFUSED:
            raise OptionError(f"{item}: {REFUSED[key]}")
        elif key in ("debug", "reserve", "noswap", "writeback_cache", *QUOTA_SWITCHES) \
                and not eq:
            values[key] = True
        elif key in ("size", "nr_blocks", "ram", "nr_inodes", "mode", "uid", "gid", "spill",
                     "fsname", "threads", "bdi_max_ratio", *QUOTA_LIMITS):
            if not eq or not value:
                raise OptionError(f"option {key} needs a value, as in {key}=VALUE")
            if key == "nr_blocks":  # tmpfs's other spelling of size=, in pages
                key, value = "size", str(parse_size(key, value) * PAGE)
            values[key] = value
        else:
            raise OptionError(f"unknown option '{item}' (see holefs mount --help)")

    size = parse_size("size", values.get("size", "50%"), percent_of=memory)
    if size == 0:  # as on tmpfs: no limit
        size = MAX_SIZE
    size = round_to_chunk(size)
    if size > MAX_SIZE:
        raise OptionError(f"size={values['size']}: larger than {MAX_SIZE >> 50}p, "
                          "the most a file can hold")
    if values.get("noswap") and "ram" in values:
        raise OptionError("noswap keeps all data in RAM: give size=, not ram=")
    ram = round_to_chunk(parse_size("ram", values["ram"], percent_of=memory)) \
        if "ram" in values else size
    if ram <= 0:
        raise OptionError(f"ram= must be at least {CHUNK // 1024}k")
    if ram > size:
        raise OptionError(f"ram={values['ram']} is larger than size={values.get('size', size)}")
    nr_inodes = parse_size("nr_inodes", values.get("nr_inodes", str(memory // 4096 // 2)))
    if nr_inodes > MAX_INODES:
        raise OptionError(f"nr_inodes= must be at most {MAX_INODES}")
    threads = values.get("threads", str(DEFAULT_THREADS))
    if not is_decimal(threads) or int(threads) > MAX_THREADS:
        raise OptionError(f"threads={threads}: expected a number from 0 to {MAX_THREADS}")
    bdi_max_ratio = values.get("bdi_max_ratio")
    if bdi_max_ratio is not None and not (is_decimal(bdi_max_ratio) and
                                          1 <= int(bdi_max_ratio) <= 100):
        raise OptionError(f"bdi_max_ratio={bdi_max_ratio}: expected a percentage from 1 to 100")
    mode_text = values.get("mode", "1777")
    if not re.fullmatch(r"[0-7]{1,4}", mode_text):
        raise OptionError(f"mode={mode_text}: expected octal permission bits, like 1777")
    return MountOptions(
        size=size, ram=ram, nr_inodes=nr_inodes, mode=int(mode_text, 8),
        uid=_parse_id("uid", values["uid"], lambda n: pwd.getpwnam(n).pw_uid)
        if "uid" in values else os.getuid(),
        gid=_parse_id("gid", values["gid"], lambda n: grp.getgrnam(n).gr_gid)
        if "gid" in values else os.getgid(),
        spill=values.get("spill", DEFAULT_SPILL),
        fsname=values.get("fsname", "holefs"),
        debug=values.get("debug", False),
        reserve=values.get("reserve", False),
        threads=int(threads),
        writeback_cache=values.get("writeback_cache", False),
        bdi_max_ratio=None if bdi_max_ratio is None else int(bdi_max_ratio),
        fuse_flags=tuple(flags),
        no_effect=tuple(no_effect),
        quotas=_parse_quotas(values),
    )


def _parse_quotas(values):
    """The quota.Limits of each kind that the options turn on."""
    kinds = {kind for switch, switched in QUOTA_SWITCHES.items() if values.get(switch)
             for kind in switched}
    limits: dict[str, dict[str, int]] = {kind: {} for kind in KINDS}
    for key, (kind, name) in QUOTA_LIMITS.items():
        if key not in values:
            continue
        limit = parse_size(key, values[key])
        if limit == 0:
            raise OptionError(f"{key}={values[key]}: must be more than 0; leave it out "
                              "for no limit")
        if limit > MAX_QUOTA_LIMIT:
            raise OptionError(f"{key}={values[key]}: larger than {MAX_QUOTA_LIMIT}")
        if kind not in kinds:
            raise OptionError(f"{key}= limits nothing without {OPTION_PREFIX[kind]} (or "
                              f"quota), which turns {kind} quotas on")
        limits[kind][name] = limit
    return {kind: Limits(bytes=limits[kind].get("block", 0),
                         inodes=limits[kind].get("inode", 0)) for kind in sorted(kinds)}


def _as_items(options):
    """-o items that parse() turns back into *options*; sizes in k, which a
    refusal may quote."""
    items = [f"size={options.size >> 10}k", f"nr_inodes={options.nr_inodes}",
             f"mode={options.mode:o}", f"uid={options.uid}", f"gid={options.gid}",
             f"spill={options.spill}", f"fsname={options.fsname}",
             f"threads={options.threads}", *options.fuse_flags, *options.quota_items()]
    if options.bdi_max_ratio is not None:
        items.append(f"bdi_max_ratio={options.bdi_max_ratio}")
    if options.spills:  # else ram= follows a new size=, as when mounted
        items.append(f"ram={options.ram >> 10}k")
    return items + [flag for flag in ("reserve", "debug", "writeback_cache")
                    if getattr(options, flag)]


def remount(current, text, in_force):
    """The options that `-o remount,TEXT` leaves on a mount that has
    *current*, whose kernel options (from the mount table) are *in_force*.

    As with mount(8), what TEXT names changes and the rest stays.  mount(8)
    repeats the options in force (rw,nosuid,...,user_id=0) ahead of the new
    ones, so those pass; what only a new mount can change is refused, with
    the reason.  The kernel's flags (ro, nosuid, noatime...) pass: the
    kernel keeps them (kernel_flags()).
    """
    given = []
    for item in filter(None, text.split(",")):
        if item == "remount" or item in in_force or item in KERNEL_FLAGS:
            continue  # the kernel's flags: the holefs command sets them by mount(2)
        if item == "allow_other":
            raise OptionError("allow_other: who may use the mount is set when it is "
                              "mounted; unmount and mount again to change it")
        given.append(item)
    base = _as_items(current)
    without_ram = [item for item in base if not item.startswith("ram=")]
    keys = {item.partition("=")[0] for item in given}
    # noswap means ram=size; and a size= below the ram= in force takes ram=
    # down with it, as tmpfs users expect of the one cap they know.
    if "noswap" in keys or (keys & {"size", "nr_blocks"} and "ram" not in keys and
                            parse(",".join(without_ram + given)).size <= current.ram):
        base = without_ram
    new = parse(",".join(base + given))
    for key, why in FIXED.items():
        if getattr(new, key) != getattr(current, key):
            item = next((i for i in reversed(given) if i.partition("=")[0] == key), key)
            raise OptionError(f"{item}: {why}")
    return new


def kernel_flags(in_force, text, last_atime_wins=False):
    """The mount(2) flags that `-o remount,TEXT` leaves on a mount whose
    kernel options are *in_force*: the flags in force, then TEXT's flag
    words in order, the last word of a kind winning, as with mount(8).

    mount(8) before util-linux 2.39 hands the kernel every atime word, and
    the kernel lets noatime win; later ones set the flags as a whole, so
    the last atime word wins (*last_atime_wins*)."""
    ro = "ro" in in_force  # per mount, or the whole filesystem
    flags = MS_RDONLY if ro else 0
    for word in ("nosuid", "nodev", "noexec", "sync", "dirsync", "noatime", "relatime",
                 "nodiratime"):
        if word in in_force:
            flags |= KERNEL_FLAGS[word][0]
    for item in text.split(","):
        if item in KERNEL_FLAGS:
            set_bits, clear_bits = KERNEL_FLAGS[item]
            if last_atime_wins and item in ATIME_WORDS:
                clear_bits |= MS_NOATIME | MS_RELATIME | MS_STRICTATIME
            flags = flags & ~clear_bits | set_bits
    return flags
