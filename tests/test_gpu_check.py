"""tools/gpu_check.sh: its no-GPU path (what CI can run), and the parts that turn a GPU run's
figures into a report and a calibration, on figures made up for the test."""
import json
import subprocess

from backend.perf import estimate, gpu_check

from .helpers import ROOT


def test_without_a_gpu_it_says_so_and_exits_0_without_work(tmp_path):
    proc = subprocess.run(["bash", "tools/gpu_check.sh", str(tmp_path / "out")], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and "no CUDA GPU on this machine" in proc.stdout
    assert not (tmp_path / "out").exists()


# A device made up for the test: 20 µs a launch, 400 TFLOP/s, 2 TB/s. Its seconds per step
# are written from those constants, so the refit must find them again.
S_PER_LAUNCH, S_PER_FLOP, S_PER_BYTE = 20e-6, 1 / 400e12, 1 / (2 * 2 ** 40)


def _phases(s: float, launches: int) -> dict:
    return {k: {"s_per_it": s, "peak_mem_gb": 9.0, "warmup_s": 2.0, "syncs_per_it": 1, "iterations": 100,
                "first_losses": {"aug_sds": 1.0 + i}, "launches": launches, "tflop": 10.0 + i, "gb_moved": 100.0 + 40 * i,
                "est_s_per_it": s}
            for i, k in enumerate(("phase1", "phase2", "phase3"))}


def _seconds(launches: int, tflop: float, gb: float) -> float:
    return launches * S_PER_LAUNCH + tflop * 1e12 * S_PER_FLOP + gb * 2 ** 30 * S_PER_BYTE


def test_the_refit_takes_each_eager_measurement_with_the_estimators_counts_and_fits(tmp_path, monkeypatch):
    """Each eager run's measured s/it is paired with the estimator's counts of the same
    configuration and phase; the time model refitted to them finds the device's constants
    the measurements were written from."""
    counted = {name: {"phases": _phases(0.0, 1000 * (i + 1))} for i, name in enumerate(gpu_check.EAGER)}

    def measured(name: str) -> dict:
        phases = _phases(0.0, 0)
        for key, phase in phases.items():
            c = counted.get(name, counted["draft"])["phases"][key]
            phase["s_per_it"] = _seconds(c["launches"], c["tflop"], c["gb_moved"])
        return {"phases": phases, "estimate_s": 30.0, "peak_mem_gb": 9.0}

    report = {"device": "NVIDIA H200", "date": "2026-12-03", "bench": {name: measured(name) for name in gpu_check.CONFIGS}}
    calibration = gpu_check.refit(report, counted)
    assert len(calibration["points"]) == 3 * len(gpu_check.EAGER)  # compiled runs are not counted by the estimator
    first = calibration["points"][0]
    assert (first["config"], first["phase"], first["launches"], first["tflop"]) == ("draft", "phase1", 1000, 10.0)
    assert first["s_per_it"] == _seconds(1000, 10.0, 100.0)
    assert "previous" in calibration and calibration["device"] == "NVIDIA H200"
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(calibration))
    monkeypatch.setattr(estimate, "CALIBRATION", path)
    estimate.time_model.cache_clear()
    try:
        fitted = estimate.time_model()
    finally:
        estimate.time_model.cache_clear()
    for got, expected in zip(fitted, (S_PER_LAUNCH, S_PER_FLOP, S_PER_BYTE)):
        assert abs(got - expected) <= 1e-6 * expected
    text = gpu_check._table(report)
    assert "NVIDIA H200" in text and "standard-compiled" in text
    losses = gpu_check._loss_diff(report["bench"]["standard"], {"phases": {"phase1": {"first_losses": {"aug_sds": 1.1}}}})
    assert abs(losses["phase1"] - 0.1) < 1e-12
