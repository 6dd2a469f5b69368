"""A storage tier without a mount: slots in a real memfd."""

import os

from holefs.extents import CHUNK
from holefs.tiers import open_ram_tier


def test_released_slots_give_memory_back_and_are_reused_lowest_first():
    tier = open_ram_tier()
    try:
        numbers = [tier.alloc() for _ in range(6)]
        for number in numbers:
            tier.write(number, 0, bytes([number + 1]) * CHUNK)
        tier.release([5, 2, 1, 3])  # two runs: 1-3 and 5
        assert tier.allocated_bytes() == 2 * CHUNK
        for number in (0, 4):
            assert os.pread(tier.fd, CHUNK, number * CHUNK) == bytes([number + 1]) * CHUNK
        assert os.pread(tier.fd, 3 * CHUNK, CHUNK) == bytes(3 * CHUNK)
        assert [tier.alloc() for _ in range(5)] == [1, 2, 3, 5, 6]
    finally:
        os.close(tier.fd)
