"""Every command of the README's shell examples works when pasted against the default platform.

The platform is started on the shipped default dataset (`default_platform`, free ports); each
`curl` of the README's ```bash blocks runs through bash as written, with only the host and port
pointed at that platform, and must exit 0 with a 2xx JSON answer that is not an error (the chat
stream: events ending in `done`). Quick read-only `reco` and `start_services.sh` commands run too.
Commands with a placeholder (`<dataset>`) or that are not quick and read-only are skipped, each
for a stated reason; a new kind of command fails the test until it is classified.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from Prod.orchestrate.environment import ROOT

README = ROOT / "README.md"
_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.S | re.M)
_PORT = re.compile(r"http://(?:127\.0\.0\.1|localhost):(8000|8001|8002)\b")
_PLACEHOLDER = re.compile(r"<[^<>]+>")
_ENV_PREFIX = re.compile(r"^(?:[A-Z][A-Z0-9_]*=\S*\s+)+")
# the placeholders a reader fills from an earlier answer in the same block
FROM_EARLIER_ANSWER = {"<session_id from the first answer>": "session_id"}
# `reco` commands that read nothing of the platform's data and change nothing
QUICK_RECO = re.compile(r"^reco (--version|[a-z -]+ --help)$")
QUICK_LAUNCHER = re.compile(r"^bash start_services\.sh status$")
# commands that are run elsewhere or need a placeholder filled, by how they start
NOT_RUN_HERE = {
    "bash start_services.sh": "starts or stops the platform (tests/e2e/test_platform.py)",
    "pip install": "installs the project",
    "bash .ci/run": "the CI itself (installs, lints, runs this suite)",
    "python -m Prod.examples": "the example clients (tests/e2e/test_platform.py)",
    "python -m Prod.llm_server": "starts a local LLM server (loads a model)",
    "reco ": "writes data, trains or benchmarks (minutes), or needs a dataset folder",
}


def commands(readme: str) -> list[str]:
    """The shell commands of the README's ```bash blocks: continuation lines joined, comment
    and blank lines dropped (a trailing comment stays: bash ignores it)."""
    found = []
    for block in _BLOCK.findall(readme):
        pending = ""
        for line in block.splitlines():
            if line.endswith("\\"):
                pending += line[:-1].rstrip() + " "
                continue
            line = (pending + line.strip()).strip()
            pending = ""
            if line and not line.startswith("#"):
                found.append(line)
    return found


def _without_comment(command: str) -> str:
    return re.sub(r"\s{2,}#.*$", "", command).strip()


def test_commands_joins_continuations_and_drops_comment_lines():
    text = "x\n```bash\n# a comment\ncurl -X POST http://a \\\n     -d '{}'   # why\n```\n"
    assert commands(text) == ["curl -X POST http://a -d '{}'   # why"]
    assert _without_comment(commands(text)[0]) == "curl -X POST http://a -d '{}'"


def _point_at(command: str, urls: dict[str, str]) -> str:
    return _PORT.sub(lambda m: urls[m.group(1)], command)


def _trainer_idle(trainer_url: str, timeout_s: float = 240) -> None:
    """Wait for a training run the previous command started (a reader sees it finish in
    `/status` before rolling back)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if httpx.get(f"{trainer_url}/api/v1/status", timeout=30).json().get("running") is None:
            return
        time.sleep(0.5)
    raise AssertionError(f"the training run did not finish within {timeout_s:.0f} s")


def _answer(command: str, result: subprocess.CompletedProcess) -> dict | None:
    """The JSON answer of a curl (None for the event stream); fails on an error answer."""
    where = f"`{command}` -> exit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr}"
    assert result.returncode == 0, where
    body, _, status = result.stdout.rpartition("\n")
    assert status.isdigit() and 200 <= int(status) < 300, where
    if " -N " in f" {command} ":  # server-sent events
        events = re.findall(r"^event: (\w+)$", body, re.M)
        assert events and events[-1] == "done" and "error" not in events, where
        return None
    answer = json.loads(body)
    assert "error" not in answer, where
    for key in ("items", "products"):
        if key in answer:
            assert answer[key], f"{where}\nan empty {key!r} list"
    return answer


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_every_readme_command_works_against_the_default_platform(default_platform):
    platform = default_platform
    urls = {"8000": platform.reco, "8001": platform.chat, "8002": platform.trainer}
    reco = shutil.which("reco", path=str(Path(sys.executable).parent)) or "reco"
    ran: list[str] = []
    skipped: dict[str, str] = {}
    earlier: dict = {}
    for command in commands(README.read_text()):
        line = _without_comment(command)
        for placeholder, key in FROM_EARLIER_ANSWER.items():
            if placeholder in line and key in earlier:
                line = line.replace(placeholder, str(earlier[key]))
        if line.startswith("curl ") and not _PLACEHOLDER.search(line):
            pointed = _point_at(line, urls)
            assert pointed != line or "http" not in line, f"unknown host in `{line}`"
            if "/api/v1/rollback" in line:
                _trainer_idle(platform.trainer)
            run = ["bash", "-c", pointed.replace("curl ", "curl -sS -w '\\n%{http_code}' ", 1)]
            result = subprocess.run(
                run, cwd=ROOT, env=platform.env, capture_output=True, text=True, timeout=180
            )
            answer = _answer(line, result)
            earlier = answer or earlier
            ran.append(line)
        elif QUICK_RECO.match(line) or QUICK_LAUNCHER.match(line):
            argv = line.split()
            argv = [reco, *argv[1:]] if argv[0] == "reco" else argv
            result = subprocess.run(
                argv, cwd=ROOT, env=platform.env, capture_output=True, text=True, timeout=120
            )
            assert result.returncode == 0, f"`{line}` -> {result.returncode}\n{result.stderr}"
            assert "Traceback" not in result.stdout + result.stderr, line
            ran.append(line)
        else:
            bare = _ENV_PREFIX.sub("", line)  # `VAR=value command` is classified by command
            reason = next((r for p, r in NOT_RUN_HERE.items() if bare.startswith(p)), None)
            if reason is None and _PLACEHOLDER.search(line):
                reason = "placeholder"
            assert reason, f"README command of an unknown kind: `{line}` (classify it here)"
            skipped[line] = reason
    curls = [line for line in ran if line.startswith("curl ")]
    assert {m for c in curls for m in _PORT.findall(c)} == set(urls), curls  # all 3 services
    assert len(curls) >= 10, (curls, skipped)
    assert any(line.startswith("reco ") for line in ran), ran
    _trainer_idle(platform.trainer)  # leave no run behind for the next test
