"""A job's random streams (backend/pipeline/seeds.py) and the process's global generator:
building a job's networks or the tiny models leaves torch's global generator as it was (a
server runs many jobs and builds models "tiny" on first use, between them)."""
import torch

from backend.models.tiny import build_tiny
from backend.pipeline.seeds import seeded, stream, stream_seed


def test_streams_are_named_and_independent():
    # Known answer: SHA-256(b"7/phase1/aug_sds") = 86bb557bbcfa70be..., its first 8 bytes
    # little-endian shifted right once (63 bits), worked out with hashlib outside the code
    assert stream_seed(7, "phase1", "aug_sds") == 6861371876013956547
    assert stream_seed(7, "phase1", "aug_sds") != stream_seed(7, "phase1", "zero123_sds") != stream_seed(8, "phase1")
    assert torch.equal(torch.rand(4, generator=stream(7, "a")), torch.rand(4, generator=stream(7, "a")))
    assert not torch.equal(torch.rand(4, generator=stream(7, "a")), torch.rand(4, generator=stream(7, "b")))


def test_seeded_blocks_and_tiny_builds_leave_the_global_generator_alone(tmp_path):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    with seeded(7, "phase1", "field"):
        first = torch.nn.Linear(3, 3).weight.detach().clone()
    with seeded(7, "phase1", "field"):
        again = torch.nn.Linear(3, 3).weight.detach().clone()
    assert torch.equal(first, again)  # the same stream, the same weights
    build_tiny(tmp_path, ["taesd"])
    assert torch.equal(torch.get_rng_state(), before)
