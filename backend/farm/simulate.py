"""The farm's scheduling at a scale beyond one machine's GPUs: the real front, queue and
worker actors (on a local Ray started here), running the trivial "sleep" kind.

    python -m backend.farm.simulate [--jobs 1000] [--users 50] [--workers 8] [--seconds 0.02]

Every user submits jobs_per_user jobs, user after user (the order that starves the last
users under first come, first served), all before the first worker is up. Prints one JSON
report: throughput, the front's overhead per job (worker time beyond the jobs' own sleep),
per-user mean waits from the first dispatch and their spread, (max - min) / mean, beside
what first come, first served would give at the same dispatch instants, whether service
went in rounds, and jobs lost or run twice.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from collections import Counter

RESOURCE = "conjure_sim"


def simulate(jobs: int = 1000, users: int = 50, workers: int = 8, seconds: float = 0.02,
             max_running_per_user: int = 1, timeout: float = 600.0) -> dict:
    import ray

    from .cluster import connect
    from .front import Farm

    per_user = jobs // users
    total = per_user * users
    ended: Counter = Counter()
    all_ended = threading.Event()
    lock = threading.Lock()

    def collect(event: dict) -> None:
        if event["type"] in ("done", "cancelled", "error"):
            with lock:
                ended[(event["id"], event["type"])] += 1
                if sum(ended.values()) >= total:
                    all_ended.set()

    connect("local", num_cpus=2, resources={RESOURCE: workers}, object_store_memory=128 << 20)
    farm = None
    try:
        farm = Farm(collect, None, workers, RESOURCE, max_running_per_user)
        order = [(f"u{u:03d}-{k:03d}", f"u{u:03d}") for u in range(users) for k in range(per_user)]
        for job_id, user in order:
            farm.submit_task(job_id, {"kind": "sleep", "steps": 1, "seconds": seconds}, user)
        submitted_by = time.time()
        finished = all_ended.wait(timeout)
        table = farm.jobs()
        history = [j for runs in farm.worker_history() for j in runs]
    finally:
        if farm is not None:
            farm.close()
        if ray.is_initialized():
            ray.shutdown()
    done = {job_id for (job_id, kind), n in ended.items() if kind == "done"}
    runs = Counter(history)
    dispatched = sorted(j.dispatched for j in table.values() if j.dispatched is not None)
    # Waits from the first dispatch: the workers' start-up is the same for everyone.
    first = dispatched[0] if dispatched else 0.0
    waits: dict[str, list[float]] = {}
    for job_id, user in order:
        if table[job_id].dispatched is not None:
            waits.setdefault(user, []).append(table[job_id].dispatched - first)
    means = [statistics.fmean(w) for w in waits.values()]
    # FIFO at the same dispatch instants: the i-th submitted job takes the i-th dispatch.
    fifo: dict[str, list[float]] = {}
    for (_, user), when in zip(order, dispatched):
        fifo.setdefault(user, []).append(when - first)
    fifo_means = [statistics.fmean(w) for w in fifo.values()]
    ranks = {j: table[j].dispatch_rank for j, _ in order}
    in_rounds = all(ranks[j] is not None and users * int(j[-3:]) <= ranks[j] < users * (int(j[-3:]) + 1)
                    for j, _ in order)
    busy = sum(j.ended - j.dispatched for j in table.values() if j.ended and j.dispatched)
    # From the first dispatch: the workers' start-up (seconds) is not the scheduler's.
    makespan = max(j.ended for j in table.values() if j.ended) - first if done else float("nan")
    spread = lambda m: (max(m) - min(m)) / statistics.fmean(m) if m and statistics.fmean(m) > 0 else 0.0  # noqa: E731
    return {
        "jobs": total, "users": users, "workers": workers, "job_seconds": seconds, "finished": finished,
        "done": len(done), "lost": total - len(done), "run_twice": sum(n > 1 for n in runs.values()),
        "runs_recorded": len(history), "all_submitted_before_first_dispatch": bool(dispatched) and
        submitted_by <= dispatched[0],
        "makespan_s": round(makespan, 3), "throughput_jobs_per_s": round(total / makespan, 2),
        "ideal_throughput_jobs_per_s": round(workers / seconds, 2) if seconds > 0 else None,
        "overhead_ms_per_job": round(1000 * (busy - total * seconds) / total, 2),
        "wait_mean_s_per_user": {"min": round(min(means), 3), "max": round(max(means), 3),
                                 "spread": round(spread(means), 4)},
        "fifo_wait_mean_s_per_user": {"min": round(min(fifo_means), 3), "max": round(max(fifo_means), 3),
                                      "spread": round(spread(fifo_means), 4)},
        "served_in_rounds": in_rounds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend.farm.simulate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=0.02, help="each job's own work (a sleep)")
    args = parser.parse_args(argv)
    report = simulate(args.jobs, args.users, args.workers, args.seconds)
    print(json.dumps(report, indent=2))
    return 0 if report["lost"] == 0 and report["run_twice"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
