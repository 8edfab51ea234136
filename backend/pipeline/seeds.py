"""A job's random streams: every consumer of randomness (a phase's cameras, each guidance
term of each phase, each synthesis) draws from a CPU generator of its own, seeded from the
job seed and the consumer's name. Streams derived so are independent (no two terms add
the same noise or pick the same timesteps), and adding or removing one consumer does not
shift another's draws. Each generator's state is checkpointed with its phase, so a resumed
run draws exactly what an uninterrupted one would."""
from __future__ import annotations

import hashlib
from contextlib import contextmanager
from typing import Iterator

import torch


def stream_seed(job_seed: int, *name: str) -> int:
    """The seed of the stream `name` (e.g. "phase1", "aug_sds") of a job: SHA-256 of the
    job seed and the name, 63 bits (torch.Generator.manual_seed's range)."""
    digest = hashlib.sha256("/".join([str(job_seed), *name]).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def stream(job_seed: int, *name: str) -> torch.Generator:
    """A CPU generator on the stream `name` of a job."""
    return torch.Generator().manual_seed(stream_seed(job_seed, *name))


@contextmanager
def seeded(job_seed: int, *name: str) -> Iterator[None]:
    """Modules built in this block initialise their weights from the stream `name` of the
    job (torch initialises parameters from the global generator); the process's global
    generator is left as it was (a server runs many jobs, and a resumed run builds what an
    uninterrupted one did whatever ran before it in the process)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(job_seed, *name))
        yield
