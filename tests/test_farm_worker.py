"""The farm worker's folder mirroring without Ray: what FolderSync reports and write_files
applies makes the front's copy equal to the worker's, file for file."""
import os

import pytest

from backend.farm.worker import FolderSync, relocate, write_files


def _tree(root) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_changes_applied_on_the_front_give_the_same_folder_less_the_event_log(tmp_path):
    worker, front = tmp_path / "worker", tmp_path / "front"
    (worker / "checkpoints").mkdir(parents=True)
    sync = FolderSync(worker)
    (worker / "checkpoints" / "current.pt").write_bytes(b"step 4")
    (worker / "preview.png").write_bytes(b"png 1")
    (worker / "events.jsonl").write_text("{}\n")  # the front keeps its own
    (worker / "checkpoints" / ".phase1.partial.pt").write_bytes(b"half")  # a write under way
    files, removed = sync.changes()
    assert sorted(files) == ["checkpoints/current.pt", "preview.png"] and removed == []
    write_files(front, files, removed)
    assert sync.changes() == ({}, [])  # nothing new
    (worker / "checkpoints" / "current.pt").unlink()  # a phase ended
    (worker / "checkpoints" / "phase1.pt").write_bytes(b"phase 1 done")
    (worker / "preview.png").write_bytes(b"png 2")
    os.utime(worker / "preview.png", ns=(1, 1))  # same size, new time: still a change
    files, removed = sync.changes()
    assert sorted(files) == ["checkpoints/phase1.pt", "preview.png"] and removed == ["checkpoints/current.pt"]
    write_files(front, files, removed)
    expected = {k: v for k, v in _tree(worker).items() if ".partial" not in k and k != "events.jsonl"}
    assert _tree(front) == expected


@pytest.mark.parametrize("name", ["../escape.txt", "/etc/passwd", "a/../../escape.txt", "."])
def test_a_file_name_that_leaves_the_job_folder_is_refused(tmp_path, name):
    with pytest.raises(ValueError, match="outside the job folder"):
        write_files(tmp_path / "front", {name: b"x"})
    assert not (tmp_path / "escape.txt").exists()


def test_paths_in_events_point_at_the_fronts_folder():
    event = {"type": "result", "glb": "/scratch/j1/out/result.glb", "faces": 12, "other": "/scratch/j1/outside"}
    assert relocate(event, "/scratch/j1/out", "/front/j1/out") == {
        "type": "result", "glb": "/front/j1/out/result.glb", "faces": 12, "other": "/scratch/j1/outside"}
    assert relocate(event, "/scratch/j1/out", "") == event
