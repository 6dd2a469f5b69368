"""A mount's state as a value, written out and read back, with a version.

What a successor daemon takes over (issue 22) is this value and three
descriptors: the FUSE connection, and the two tier files, which keep every
byte of data.  So the value holds no file data.  It holds where each
file's chunks lie (slots, by tier and number, with their page masks and
owners), the namespace (inodes, names with their readdir cookies, xattrs,
the kernel's lookup counts, quotas), the store's budgets and RAM order,
and the options.  Bytes (names, xattrs, symlink targets) are hex, so that
the value is JSON.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .extents import Slot
from .namespace import Namespace
from .options import MountOptions
from .quota import Limits
from .tiers import Store, Tier

VERSION = 1
"""Raised whenever the value's form changes; a holefs reads only its own."""


class Unreadable(ValueError):
    """A value that this holefs cannot take over, with the reason."""


def dump(ns: Namespace, store: Store, options: MountOptions) -> dict[str, Any]:
    """The value of a mount's state: ns, store and options."""
    slots: list[list[Any]] = []
    ids: dict[int, int] = {}

    def slot_id(slot: Slot) -> int:
        if id(slot) not in ids:
            ids[id(slot)] = len(slots)
            slots.append([slot.tier.name, slot.number, slot.held, slot.written, slot.owners])
        return ids[id(slot)]

    namespace = ns.to_value(slot_id)
    return {
        "version": VERSION,
        "options": options_value(options),
        "store": {"limit": store.limit, "ram_budget": store.ram_budget,
                  "tiers": {tier.name: tier.to_value() for tier in (store.ram, store.spill)
                            if tier is not None},
                  "ram_order": [slot_id(slot) for slot in store.lru_order()]},
        "slots": slots,
        "namespace": namespace,
    }


def load(value: Any, ram: Tier,
         spill: Tier | None = None) -> tuple[Namespace, Store, MountOptions]:
    """(ns, store, options) from dump()'s *value*, over the tier files that
    the old daemon held, opened as *ram* and *spill* Tiers."""
    if not isinstance(value, dict) or value.get("version") != VERSION:
        found = value.get("version") if isinstance(value, dict) else type(value).__name__
        raise Unreadable(f"state of version {found}; this holefs reads version {VERSION}")
    tiers = {name: tier for name, tier in (("ram", ram), ("spill", spill)) if tier is not None}
    given = value["store"]["tiers"]
    if given.keys() != tiers.keys():
        raise Unreadable(f"state has the tiers {sorted(given)}, but {sorted(tiers)} were given")
    slots = []
    for tier_name, number, held, written, owners in value["slots"]:
        slot = Slot(tiers[tier_name], number)
        slot.held, slot.written, slot.owners = held, written, owners
        slots.append(slot)
    for name, tier_value in given.items():
        tiers[name].restore(tier_value)
    store = Store(value["store"]["limit"], value["store"]["ram_budget"], ram, spill)
    store.restore_lru_order(slots[i] for i in value["store"]["ram_order"])
    ns = Namespace.from_value(value["namespace"], slots.__getitem__)
    return ns, store, options_from(value["options"])


def options_value(options: MountOptions) -> dict[str, Any]:
    fields = dataclasses.asdict(options)
    fields["quotas"] = {kind: [lim.bytes, lim.inodes] for kind, lim in options.quotas.items()}
    return fields


def options_from(fields: dict[str, Any]) -> MountOptions:
    fields = dict(fields)
    fields["quotas"] = {kind: Limits(*lim) for kind, lim in fields["quotas"].items()}
    for name in ("fuse_flags", "no_effect"):
        fields[name] = tuple(tuple(x) if isinstance(x, list) else x for x in fields[name])
    return MountOptions(**fields)
