"""`python -m backend models {status, download, build-tiny}`."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .job import MODES


def add_parser(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser("models", help="model weights: status, download, tiny test models")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    tiny = models_sub.add_parser("build-tiny", help="write tiny random models in the real on-disk formats")
    tiny.add_argument("--out", required=True)
    status = models_sub.add_parser("status", help="every role: present or missing, where, size, source, licence")
    status.add_argument("--models", default="default", help="default, tiny, a folder or a manifest")
    status.add_argument("--json", action="store_true", help="one JSON list instead of a table")
    dl = models_sub.add_parser("download", help="fetch the files the loaders read (resumable, with progress)")
    dl.add_argument("roles", nargs="*", help="roles by name (see `models status`)")
    dl.add_argument("--for-job", metavar="JOB.json", help="every role this job needs")
    dl.add_argument("--mode", choices=MODES, help="every role a job of this mode needs (with --preset)")
    dl.add_argument("--preset", help="with --mode (default: a job's default preset)")
    dl.add_argument("--accept-licences", action="store_true", help="accept the roles' licences without asking")
    dl.add_argument("--json", action="store_true", help="progress as JSON lines on stdout")


def _wanted(args: argparse.Namespace) -> list[str]:
    from .job import Job, parse_job
    from .pipeline.guidance_terms import needed_roles

    roles = set(args.roles)
    if args.for_job:
        roles |= needed_roles(parse_job(json.loads(Path(args.for_job).read_text())))
    if args.mode:  # a job of that mode and preset with a text prompt (an image prompt needs fewer)
        roles |= needed_roles(Job(mode=args.mode, **({"preset": args.preset} if args.preset else {})))
    if not roles:
        raise SystemExit("name roles, --for-job JOB.json or --mode MODE [--preset P]")
    return sorted(roles)


def _size(n: float) -> str:
    if n < 1000:
        return f"{int(n)} B"
    for unit in ("KB", "MB", "GB"):
        n /= 1000
        if n < 1000 or unit == "GB":
            break
    return f"{n:.1f} {unit}"


def _bar(event: dict) -> None:
    eta = event["eta_s"]
    eta_text = "--:--" if eta is None else f"{int(eta) // 60}:{int(eta) % 60:02d}"
    sys.stderr.write(f"\r{event['role']:<20} {_size(event['bytes_done']):>9} / {_size(event['bytes_total']):<9} "
                     f"{_size(event['rate_bps'])}/s  ETA {eta_text}   ")
    sys.stderr.flush()


def status(args: argparse.Namespace) -> int:
    from .models.cached import role_status
    from .models.roles import registered
    from .models.store import ModelStore

    roles = registered()
    if args.models == "default":
        rows = [role_status(r.name) for r in roles]
    else:
        store = ModelStore(args.models)
        companions = {c for r in roles for c in r.companions}  # read from the folder's own roles
        rows = [{"role": r.name, "present": store.available(r.name), "where": store.location(r.name)} for r in roles
                if r.name not in companions]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for row in rows:
        state = "present" if row["present"] else "missing"
        extra = f"  {_size(row['size_bytes'])}  {row['licence']}" if "licence" in row else ""
        if len(row.get("sources", ())) > 1:  # which of the role's sources answered
            extra += (f"  (from {row['source']} of " if row["present"] else "  (sources, in order: ") + \
                f"{', '.join(row['sources'])})"
        print(f"{row['role']:<20} {state:<8} {row['where']}{extra}")
    return 0


def download(args: argparse.Namespace) -> int:
    from .models.download import DownloadError, check_space, plan
    from .models.licences import accept_licences, licence_lines, unaccepted
    from .models.download import download as fetch

    try:
        p = plan(_wanted(args))
    except DownloadError as exc:
        print(f"error: {exc}\nhint: {exc.hint}", file=sys.stderr)
        return 1
    todo = sorted({t.role for t in p.tasks})
    if not todo:
        print("every file is here already: " + ", ".join(p.roles))
        return 0
    pending = unaccepted(todo)
    if pending:
        print("licences of the models to download:\n  " + "\n  ".join(licence_lines(pending)), file=sys.stderr)
        agreed = args.accept_licences or (sys.stdin.isatty() and input("accept them? [y/N] ").strip().lower() == "y")
        if not agreed:
            print("error: licences not accepted; nothing was downloaded\nhint: read them, then run again with "
                  "--accept-licences (asked once per machine)", file=sys.stderr)
            return 3
        accept_licences(pending)
    report = (lambda e: print(json.dumps(e), flush=True)) if args.json else _bar
    try:
        check_space(p)
        fetch(p, report)
    except KeyboardInterrupt:
        print("\ncancelled: run the same command again to resume", file=sys.stderr)
        return 130
    except DownloadError as exc:
        print(f"\nerror: {exc}\nhint: {exc.hint}", file=sys.stderr)
        return 1
    if not args.json:
        print(f"\ndone: {', '.join(p.roles)} ({_size(p.total)})", file=sys.stderr)
    return 0


def main(args: argparse.Namespace) -> int:
    if args.models_command == "status":
        return status(args)
    if args.models_command == "download":
        return download(args)
    from .models.tiny import build_tiny

    print(build_tiny(args.out))
    return 0
