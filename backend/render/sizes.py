"""Data-dependent sizes without a host sync in a step (CUDA's dense evaluation).

How many samples of a volume render are live, how many pixel-triangle pairs a rasterize
tests: the work is sized by such counts, and reading one waits for the device. Inside a
step, a `StepSizes` gives each count a capacity instead, the last step's count with room to
grow, and the work runs at that fixed size with the slots past the count masked. The counts
go back to the host with the step's loss values, in the one read a step makes (Phase.step);
if one outgrew its capacity, that step's renders missed work, and the step runs again with
room (rare: counts change slowly). The first use of a site in a phase has no capacity yet
and reads its count (once a phase, not a step).

Sites are keyed by name and order of use within the step ("raster#0" the step's first
rasterize, "raster#1" its anchor's), so each keeps its own capacity.
"""
from __future__ import annotations

import math
from collections import Counter
from contextlib import contextmanager
from typing import Iterator

import torch
from torch._subclasses.fake_tensor import is_fake

GROWTH = 1.25  # capacity = count * GROWTH, rounded up to a QUANTUM
QUANTUM = 1 << 12

_active: list["StepSizes"] = []
_first_reads = 0  # depth of first-use reads (perf/tracker.py counts them apart)


class StepSizes:
    def __init__(self) -> None:
        self.capacity: dict[str, int] = {}
        self._counts: list[tuple[str, torch.Tensor]] = []
        self._uses: Counter = Counter()

    def room(self, site: str, count: torch.Tensor, upper: int | None) -> int:
        """The size to run at for a count (a 0-d integer tensor on the device) that cannot
        exceed `upper` (None: no bound known): this site's capacity, or on its first use the
        count itself (read now, once). A fake count (the estimator) gets its worst case."""
        if is_fake(count):
            if upper is None:
                raise ValueError(f"{site}: a fake count needs an upper bound")
            return upper
        key = f"{site}#{self._uses[site]}"
        self._uses[site] += 1
        self._counts.append((key, count.reshape(())))
        if key not in self.capacity:
            global _first_reads
            _first_reads += 1
            try:
                self.capacity[key] = int(count)
            finally:
                _first_reads -= 1
        return self.capacity[key] if upper is None else min(self.capacity[key], upper)

    def pending(self) -> list[torch.Tensor]:
        """The step's counts, for the step's one read."""
        return [c for _, c in self._counts]

    def settle(self, counts: list[float]) -> bool:
        """The step's counts as read -> whether each fitted its capacity; the capacities
        follow the counts (with room) for the next step."""
        fits = all(int(c) <= self.capacity[key] for (key, _), c in zip(self._counts, counts))
        for (key, _), c in zip(self._counts, counts):
            self.capacity[key] = max(QUANTUM, math.ceil(int(c) * GROWTH / QUANTUM) * QUANTUM)
        self._counts.clear()
        self._uses.clear()
        return fits

    def discard(self) -> None:
        """Forget counts no read settled (a step that raised before its read)."""
        self._counts.clear()
        self._uses.clear()


@contextmanager
def sizing(sizes: StepSizes) -> Iterator[StepSizes]:
    """Counts met in this block take capacities from `sizes`."""
    _active.append(sizes)
    try:
        yield sizes
    finally:
        _active.pop()


def active() -> StepSizes | None:
    return _active[-1] if _active else None


def first_read() -> bool:
    """Whether a read now is a site's first use in its phase (not a per-step sync)."""
    return _first_reads > 0


def compact(mask: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of a flat mask's True elements, in order, in a buffer of `size`, without
    reading how many there are: (index [size] (mask.numel() past the count, and for any
    element past the size), valid [size] bool). nonzero(mask)[:size] where valid."""
    n = mask.numel()
    flat = mask.reshape(-1)
    slot = torch.cumsum(flat, 0) - 1  # where each True element goes
    slot = torch.where(flat & (slot < size), slot, size)  # the rest into a spare slot
    index = torch.full((size + 1,), n, dtype=torch.long, device=mask.device)
    index.scatter_(0, slot, torch.arange(n, device=mask.device))
    index = index[:size]
    return index, index < n
