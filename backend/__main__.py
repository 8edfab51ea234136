"""Command line: python -m backend {run, serve, submit, status, bench, doctor, models {status, download,
build-tiny}}."""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

from .models_cli import add_parser as add_models_parser
from . import protocol
from .job import parse_job
from .protocol import PRIORITIES
from .models_cli import main as models_main


def _print_event(event: dict) -> None:
    kind = event["type"]
    if kind == "progress":
        losses = " ".join(f"{k}={v:.4g}" for k, v in event.get("losses", {}).items())
        print(f"[{event['phase']}] {event['step']}/{event['total']} eta {event['eta_s']:.0f}s {losses}", flush=True)
    elif kind == "error":
        print(f"error ({event['code']}): {event['message']}", file=sys.stderr)
        if event.get("hint"):
            print(f"hint: {event['hint']}", file=sys.stderr)
    elif kind in ("log", "cancelled"):
        print(event["message"], flush=True)
    elif kind == "result":
        print(f"result: {event['glb']}", flush=True)
    elif kind == "queued":
        farm = event.get("farm")
        load = f" (farm: {farm['busy']}/{farm['workers']} busy, {farm['queued']} waiting)" if farm else ""
        print(f"queued: {event['position']} job(s) ahead{load}", flush=True)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


class _Refused(Exception):
    """A command-line input that cannot be used; the text says why."""


def _job_and_out(job: str, out_arg: str | None) -> tuple[Path, dict, Path]:
    """The job file read and the output folder made writable, or _Refused naming the cause."""
    path = Path(job)
    try:
        raw = protocol.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise _Refused(f"job file not found: {path}") from None
    except IsADirectoryError:
        raise _Refused(f"{path} is a folder; give the job's .json file") from None
    except UnicodeDecodeError:
        raise _Refused(f"{path} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise _Refused(f"{path} is not valid JSON ({exc})") from None
    except (protocol.DuplicateKey, protocol.JSONLimit) as exc:
        raise _Refused(f"{path}: {exc}") from None
    except OSError as exc:
        raise _Refused(f"cannot read {path}: {exc.strerror or exc}") from None
    out = Path(out_arg) if out_arg else path.parent / (path.stem + "_out")
    if out.exists() and not out.is_dir():
        raise _Refused(f"--out {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".conjure-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise _Refused(f"cannot write to --out {out}: {exc.strerror or exc}") from None
    return path, raw, out


def cmd_run(args: argparse.Namespace) -> int:
    """0 when the job finished or a signal cancelled it (checkpointed, resumable); 1 when
    it ended with an error."""
    import threading

    from .server.jobs import run_job
    from .server.signals import stop_on_signals

    try:
        path, raw, out = _job_and_out(args.job, args.out)
    except _Refused as exc:
        return _fail(str(exc))
    stop, last = threading.Event(), {}

    def show(event: dict) -> None:
        last["type"] = event["type"]
        _print_event(event)

    with stop_on_signals(lambda signum: stop.set(), "cancelling: the job stops at its next checkpoint"):
        result = run_job(raw, path.parent, out, show, stop.is_set, restart=args.restart)
    return 0 if result is not None or last.get("type") == "cancelled" else 1


def _remote(args: argparse.Namespace, priority: str = "normal"):  # noqa: ANN202 (client.HttpBackend)
    from .client import HttpBackend

    return HttpBackend(args.url, args.token or os.environ.get("CONJURE_TOKEN", ""), poll_wait=5.0,
                       cafile=args.cafile, priority=priority)


def cmd_submit(args: argparse.Namespace) -> int:
    """A job to a remote server or farm, followed to its end; outputs land in --out.
    Ctrl-C cancels it there (its folder on the server keeps the checkpoints)."""
    try:
        path, raw, out = _job_and_out(args.job, args.out)
        client = _remote(args, args.priority)
    except _Refused as exc:
        return _fail(str(exc))
    except RuntimeError as exc:  # unreachable server, wrong token
        return _fail(str(exc))
    try:
        job_id = client.submit(parse_job(raw), path.parent, out)
    except ValueError as exc:  # protocol.JobError: checked here before anything is uploaded
        client.close()
        return _fail(f"invalid job: {exc}")
    try:
        while True:
            try:
                for msg in client.poll():
                    if msg.get("id") == job_id:
                        _print_event(msg)
                        if msg["type"] in ("done", "cancelled", "error"):
                            return 0 if msg["type"] == "done" else 1
                time.sleep(0.1)
            except KeyboardInterrupt:
                print("cancelling (Ctrl-C again leaves it running on the server)", file=sys.stderr, flush=True)
                client.cancel(job_id)
    finally:
        client.close()


def cmd_status(args: argparse.Namespace) -> int:
    try:
        client = _remote(args)
        print(json.dumps(client.status(), indent=2))
        client.close()
    except RuntimeError as exc:
        return _fail(str(exc))
    return 0


def doctor() -> dict:
    report: dict = {"python": sys.version.split()[0], "platform": platform.platform(), "packages": {}}
    for name in ("torch", "diffusers", "transformers", "xatlas", "vtk", "trimesh", "numpy", "nvdiffrast"):
        try:
            report["packages"][name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            report["packages"][name] = None
    try:
        import torch

        report["cuda"] = torch.cuda.is_available()
        report["devices"] = ["cpu"] + [f"cuda:{i} ({torch.cuda.get_device_name(i)})"
                                       for i in range(torch.cuda.device_count())]
    except ImportError:
        report["cuda"], report["devices"] = False, []
    from .pipeline.preset_files import preset_names
    from .render.raster import nvdiffrast_available

    report["rasterizers"] = ["torch"] + (["nvdiffrast"] if nvdiffrast_available() else [])
    report["presets"] = preset_names()
    return report


def _run_parser(sub: Any) -> None:
    run = sub.add_parser("run", help="run one job file")
    run.add_argument("job", help="JOB.json (paths inside are relative to it)")
    run.add_argument("--out", help="output folder (default: JOB_out beside the job); resumes if it has checkpoints")
    run.add_argument("--restart", action="store_true", help="ignore checkpoints in the output folder")


def _serve_parser(sub: Any) -> None:
    serve = sub.add_parser("serve", help="protocol server for the Blender add-on")
    how = serve.add_mutually_exclusive_group(required=True)
    how.add_argument("--stdio", action="store_true", help="JSON lines on stdin/stdout (a local add-on)")
    how.add_argument("--http", metavar="HOST:PORT", help="HTTP server (a remote GPU machine)")
    serve.add_argument("--jobs-dir", help="--http: where job folders go (default ~/.cache/conjure/jobs)")
    serve.add_argument("--token", help="--http: required bearer token (default: $CONJURE_TOKEN); needed on a "
                                       "non-loopback address")
    serve.add_argument("--tls-cert", help="--http: serve HTTPS with this certificate (PEM)")
    serve.add_argument("--tls-key", help="--http: the certificate's private key (PEM)")
    serve.add_argument("--users", metavar="FILE", help="--http: JSON {\"user\": \"token\", ...}: one token per "
                                                      "artist (a farm shares its GPUs fairly between them)")
    farm = serve.add_argument_group("studio farm (docs/farm.md)")
    farm.add_argument("--ray", metavar="ADDRESS", help="--http: run the jobs on a Ray cluster's GPUs (auto, "
                                                       "HEAD:6379 or ray://HEAD:10001)")
    farm.add_argument("--workers", type=int, help="--ray: worker actors (default: one per GPU in the cluster)")
    farm.add_argument("--worker-resource", default="GPU", metavar="NAME",
                      help="--ray: what one worker takes (default GPU; a custom resource for CPU-only test clusters)")
    farm.add_argument("--max-running-per-user", type=int, default=1, metavar="N",
                      help="--ray: jobs one user may have running at once (default 1)")
    farm.add_argument("--shared-dir", metavar="DIR",
                      help="--ray: job folders in DIR, mounted at the same path on every node (workers write "
                           "checkpoints and outputs in place instead of sending them to the front)")


def _remote_parsers(sub: Any) -> None:
    for name, what in (("submit", "send a job to a remote server or farm and follow it"),
                       ("status", "a farm's workers, queue and per-user counts (JSON)")):
        remote = sub.add_parser(name, help=what)
        if name == "submit":
            remote.add_argument("job", help="JOB.json (paths inside are relative to it; those files are uploaded)")
            remote.add_argument("--out", help="where the outputs go (default: JOB_out beside the job)")
            remote.add_argument("--priority", choices=list(PRIORITIES), default="normal",
                                help="its place in a farm's queue")
        remote.add_argument("--url", required=True, help="http(s)://HOST:PORT of serve --http")
        remote.add_argument("--token", help="your token (default: $CONJURE_TOKEN)")
        remote.add_argument("--cafile", help="a PEM bundle that signs a self-signed server certificate")


def _bench_parser(sub: Any) -> None:
    bench = sub.add_parser("bench", help="per-phase seconds per iteration and peak memory (JSON)")
    bench.add_argument("--preset", default="standard")
    bench.add_argument("--device", default="auto")
    bench.add_argument("--size", choices=("full", "tiny"), default="full",
                       help="full: the papers' networks at real size, random weights; tiny: the test models")
    bench.add_argument("--iterations", type=int, default=5, help="timed iterations per phase (after one warm-up)")
    bench.add_argument("--overrides", help="JSON object of dotted preset keys")
    bench.add_argument("--estimate", action="store_true",
                       help="no GPU needed: peak memory (with its breakdown), FLOPs, launches, bytes and an "
                            "estimated time per phase, counted op by op through the real code")
    bench.add_argument("--json", action="store_true", help="--estimate: one JSON object instead of a table")
    bench.add_argument("--record", action="store_true",
                       help="--estimate: keep the preset's figures for the job-start memory check and the add-on")
    bench.add_argument("--profile", metavar="DIR",
                       help="on the bench's device: a torch.profiler Chrome trace per phase and a per-component "
                            "table (module, calls, time, memory) in DIR")


def cmd_serve(args: Any) -> int:
    if args.stdio:
        from .server.stdio import serve_stdio

        return serve_stdio()
    from .server.http import serve_http

    if args.ray is None:
        if args.shared_dir or args.workers is not None:
            return _fail("--shared-dir and --workers are for a farm: add --ray ADDRESS")
        return serve_http(args.http, args.jobs_dir, args.token, args.tls_cert, args.tls_key, users_file=args.users)
    if args.max_running_per_user < 1 or (args.workers is not None and args.workers < 1):
        return _fail("--workers and --max-running-per-user must be at least 1")
    if args.shared_dir and args.jobs_dir:
        return _fail("--shared-dir is where the job folders go: leave --jobs-dir out")
    from .farm.front import Farm

    def farm(emit: Callable[[dict], None]) -> Farm:
        return Farm(emit, args.ray, args.workers, args.worker_resource, args.max_running_per_user,
                    shared=bool(args.shared_dir))

    return serve_http(args.http, args.shared_dir or args.jobs_dir, args.token, args.tls_cert, args.tls_key,
                      farm, args.users)


def cmd_bench(args: Any) -> int:
    from .perf.cli import main as bench_main

    return bench_main(args)


def cmd_doctor(args: Any) -> int:
    print(json.dumps(doctor(), indent=2))
    return 0


COMMANDS: dict[str, Callable[[Any], int]] = {"run": cmd_run, "serve": cmd_serve, "submit": cmd_submit,
                                             "status": cmd_status, "bench": cmd_bench, "models": models_main,
                                             "doctor": cmd_doctor}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend", description="Conjure generation backend")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_run_parser, _serve_parser, _remote_parsers, _bench_parser):
        add(sub)
    sub.add_parser("doctor", help="environment report (JSON)")
    add_models_parser(sub)
    args = parser.parse_args(argv)
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
