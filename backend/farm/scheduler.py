"""The farm's waiting room: fair between users, priorities first, FIFO within a user.

pick() serves, among the users below their running limit, the highest priority waiting;
between users at that priority it goes round robin (the user served least recently first,
a new user before everyone already served), and within a user first come, first served.
A requeued job keeps its sequence number and its user is served next (it has waited its
turn already), so a job whose worker died goes back to the head of the line, at its
priority. Priorities are ints (protocol.PRIORITIES names them). Pure Python, no Ray: the
front and its tests share it; the positions it reports are the order pick() would follow.
"""
from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Mapping

@dataclass(order=True)
class _Entry:
    sort_key: tuple[int, int]  # (-priority, seq)
    job_id: str = field(compare=False)


class FairQueue:
    def __init__(self, max_running_per_user: int) -> None:
        if max_running_per_user < 1:
            raise ValueError("max_running_per_user must be >= 1")
        self.max_running_per_user = max_running_per_user
        self._lines: dict[str, list[_Entry]] = {}  # user -> heap of their waiting jobs
        self._where: dict[str, tuple[str, int, int]] = {}  # job id -> (user, priority, seq)
        self._seq = itertools.count()
        self._served = itertools.count(1)
        self._last_served: dict[str, int] = {}  # user -> serve counter when last picked (0: never)
        self._arrival: dict[str, int] = {}  # user -> order first seen (ties among never-served users)

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._where

    def push(self, job_id: str, user: str, priority: int = 0, seq: int | None = None) -> int:
        """Queue a job. seq: its original number when it comes back because its worker died;
        it then goes first in its user's line and its user first in the round (it has
        waited its turn already). -> its seq."""
        if job_id in self._where:
            raise ValueError(f"job {job_id!r} is already queued")
        self._arrival.setdefault(user, len(self._arrival))
        self._last_served.setdefault(user, 0)
        if seq is None:
            seq = next(self._seq)
        else:
            self._last_served[user] = -1
        heapq.heappush(self._lines.setdefault(user, []), _Entry((-priority, seq), job_id))
        self._where[job_id] = (user, priority, seq)
        return seq

    def remove(self, job_id: str) -> bool:
        """-> whether it was waiting (cancel of a queued job)."""
        if job_id not in self._where:
            return False
        user, _, _ = self._where.pop(job_id)
        line = [e for e in self._lines[user] if e.job_id != job_id]
        heapq.heapify(line)
        self._lines[user] = line
        return True

    def _user_key(self, user: str, last_served: Mapping[str, int]) -> tuple[int, int, int]:
        return self._lines[user][0].sort_key[0], last_served[user], self._arrival[user]

    def pick(self, running: Mapping[str, int]) -> str | None:
        """The next job to dispatch, removed from the queue; None when nothing may start
        (empty, or every waiting user at the running limit). running: user -> jobs running."""
        users = [u for u, line in self._lines.items() if line and running.get(u, 0) < self.max_running_per_user]
        if not users:
            return None
        user = min(users, key=lambda u: self._user_key(u, self._last_served))
        entry = heapq.heappop(self._lines[user])
        self._last_served[user] = next(self._served)
        del self._where[entry.job_id]
        return entry.job_id

    def order(self) -> list[str]:
        """Waiting jobs in the order pick() would serve them if no user were at the limit
        (index = the job's queue position, 0 = next)."""
        lines = {u: sorted(line) for u, line in self._lines.items() if line}
        heap = [(self._user_key(u, self._last_served), u) for u in lines]
        heapq.heapify(heap)
        last = dict(self._last_served)
        served, out, cursor = itertools.count(max(last.values(), default=0) + 1), [], {u: 0 for u in lines}
        while heap:
            _, user = heapq.heappop(heap)
            line, i = lines[user], cursor[user]
            out.append(line[i].job_id)
            cursor[user] = i + 1
            last[user] = next(served)
            if i + 1 < len(line):
                heapq.heappush(heap, ((line[i + 1].sort_key[0], last[user], self._arrival[user]), user))
        return out

    def info(self, job_id: str) -> tuple[str, int, int]:
        """-> (user, priority, seq) of a waiting job."""
        return self._where[job_id]

    def waiting(self) -> dict[str, int]:
        """user -> jobs waiting."""
        return {u: len(line) for u, line in self._lines.items() if line}
