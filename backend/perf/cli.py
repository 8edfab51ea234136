"""`python -m backend bench [...]`: a measurement on this machine's GPU (perf/bench.py) or,
with --estimate, the counted estimate (perf/estimate.py)."""
from __future__ import annotations

import json
from typing import Any


def main(args: Any) -> int:
    overrides = json.loads(args.overrides) if args.overrides else {}
    if args.estimate:
        from .estimate import estimate, format_estimate, record

        report = estimate(args.preset, overrides, args.size)
        if args.record:
            record(report)
        print(json.dumps(report, indent=2) if args.json else format_estimate(report))
        return 0
    from .bench import bench

    print(json.dumps(bench(args.preset, args.device, args.size, args.iterations, overrides, args.profile), indent=2))
    return 0
