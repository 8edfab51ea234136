"""What a phase's checkpoint was made from, so a changed job never resumes stale work.

Each phase's fingerprint is a set of named hashes: the checkpoint format's version, the
input files' contents, the prompt, models, seed, mode and guidance, and the resolved config
sections that shape this phase and the ones before it (`progress` and `export` do not).
A later phase depends on every earlier one, so the first phase whose fingerprint differs
and all after it are run again; the names of the parts that differ say why.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from ..job import Job
from .settings import PHASES, Config

# Bump when a phase's state changes layout or meaning (3: every random stream its own,
# pipeline/seeds.py; CDS's one shared ε*).
CHECKPOINT_VERSION = 3


def _hash(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_hash(path: str) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def phase_fingerprints(job: Job, cfg: Config) -> dict[str, dict[str, str]]:
    """{phaseN: {part: hash}} for a read job (absolute input paths) and its config."""
    prompt = {"text": job.prompt.text, "weights": dataclasses.asdict(job.prompt.weights)}  # files hash below
    common = {"format": str(CHECKPOINT_VERSION),
              "inputs": _hash([(field, _file_hash(path)) for field, path in job.inputs()]),
              "prompt": _hash(prompt), "models": _hash(job.models), "seed": str(job.seed),
              "mode": _hash([job.mode, job.guidance])}
    # The typed values (defaults filled in, a weight 1 and {"weight": 1} alike), so only a
    # change of what the phase runs on discards its checkpoint.
    shaping = {k: dataclasses.asdict(getattr(cfg, k)) for k in ("render", "source") if getattr(cfg, k) is not None}
    out = {}
    for key in PHASES:
        shaping[key] = dataclasses.asdict(cfg.phase(key))
        out[key] = {**common, "config": _hash(shaping)}
    return out


def changed_parts(stored: dict | None, current: dict[str, str]) -> list[str]:
    """Names of the parts that differ (all of them for a checkpoint without a fingerprint)."""
    stored = stored or {}
    return sorted(k for k, v in current.items() if stored.get(k) != v)
