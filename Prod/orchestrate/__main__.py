"""``python -m Prod.orchestrate [--local|--docker] up|down|status|logs|mode``.

``start_services.sh`` calls this after choosing the interpreter (a venv in local mode). With
``--json``, ``up`` and ``status`` print one JSON object as the last line of stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from Prod.orchestrate import environment


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="start_services.sh", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--local",
        dest="mode",
        action="store_const",
        const="local",
        help="run on this machine (no Docker)",
    )
    mode.add_argument(
        "--docker",
        dest="mode",
        action="store_const",
        const="docker",
        help="run docker-compose.yaml",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object as the last line")
    parser.add_argument(
        "--timeout",
        type=float,
        default=300,
        help="seconds to wait for each service (local) or for all (docker)",
    )
    parser.add_argument(
        "command", nargs="?", default="up", choices=("up", "down", "status", "logs", "mode")
    )
    parser.add_argument("service", nargs="?", help="logs: one service, server or job")
    parser.add_argument("-f", "--follow", action="store_true", help="logs: keep following")
    parser.add_argument("-n", "--lines", type=int, default=40, help="logs: lines per file")
    parser.add_argument("--volumes", action="store_true", help="docker down: delete data volumes")
    return parser


def _say(message: str) -> None:
    print(f"==> {message}", flush=True)


def _print_json(result: object) -> None:
    sys.stdout.write(json.dumps(result, default=str) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "mode":
        if args.mode == "docker" and not environment.docker_usable():
            print("docker mode needs `docker compose` and a running Docker engine", file=sys.stderr)
            return 2
        print(environment.detect_mode(args.mode))
        return 0
    mode = environment.detect_mode(args.mode)
    return _docker(args) if mode == "docker" else _local(args)


def _docker(args: argparse.Namespace) -> int:
    from Prod.orchestrate import docker

    try:
        if args.command == "up":
            result = docker.up(args.timeout if args.timeout != 300 else 1800)
            if args.json:
                _print_json(result)
            else:
                for name, url in result["urls"].items():
                    what = "open it in a browser" if name == "web" else f"docs: {url}/docs"
                    print(f"  {name:<18} {url}  ({what})")
                print(f"  header X-API-Key: your API_KEY, else the one in {result['secrets_file']}")
                for name in result.get("background", []):  # the model pull: not waited for
                    print(f"  {name} runs in the background (logs: start_services.sh logs {name})")
            return 0
        if args.command == "down":
            docker.down(volumes=args.volumes)
            return 0
        if args.command == "status":
            if args.json:  # the same shape as local mode's: services, urls, model version
                _print_json(docker.status_report())
                return 0
            return docker.status()
        return docker.logs(args.service, args.follow, args.lines)
    except docker.DockerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _local(args: argparse.Namespace) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from config import Settings
    from Prod.common.errors import RecoError
    from Prod.orchestrate import local, render

    settings = Settings()
    report = (lambda message: None) if args.json else _say
    try:
        if args.command == "up":
            result = local.up(settings, report, timeout_s=args.timeout)
            _print_json(result) if args.json else render.summary(result)
            return 0
        if args.command == "down":
            result = local.down(settings, report)
            if args.json:
                _print_json(result)
            return 0
        if args.command == "status":
            result = local.status(settings)
            _print_json(result) if args.json else render.status_table(result)
            return 0
        return _show_logs(local.log_files(settings, args.service), args.follow, args.lines)
    except RecoError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1


def _show_logs(paths: list[Path], follow: bool, lines: int) -> int:
    if not paths:
        print("no logs yet (run `bash start_services.sh up` first)")
        return 0
    if follow:
        os.execvp("tail", ["tail", "-n", str(lines), "-F", *map(str, paths)])
    for path in paths:
        print(f"==> {path} <==")
        print("\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
