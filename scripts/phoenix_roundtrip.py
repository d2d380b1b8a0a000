"""Round trip through a real OTLP trace store: ttft-probe → Arize Phoenix → its REST API.

DESIGN §10: no registry here ships Jaeger, but ``pip install arize-phoenix`` is a real
OTLP trace store. This script

1. makes its own venv (``.scratch/phoenix-venv``, reused when present) with
   ``pip install arize-phoenix`` (the project's venv is never touched);
2. starts ``phoenix serve`` on 127.0.0.1 — OTLP/HTTP and the REST API on ``PHOENIX_PORT``
   (default 4318, so ``OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318`` works as for a
   collector), OTLP/gRPC on ``PHOENIX_GRPC_PORT`` (4317) — with a scratch
   ``PHOENIX_WORKING_DIR`` and its telemetry and external resources off;
3. runs one probed turn, ``python -m ttft_probe run -- <stand-in claude>``, replaying the
   recorded Claude Code transcript ``tests/transcripts/claude-stream-json/claude_fresh.jsonl``
   through ``tests/children/stream_child.py``, with the OTLP endpoint pointed at Phoenix,
   then ``python -m ttft_probe flush`` (the durable OTLP sink delivers from the outbox);
4. asks Phoenix (``GET /v1/projects/default/spans?trace_id=…``) for the run's spans and
   checks names, ids, parent links, attributes and events against the stored record.

Exit status 0 when everything matched, 1 on a mismatch, 2 when Phoenix could not be
installed or started. ``tests/test_phoenix.py`` runs it (the first install takes about a
minute and ~850 MB in .scratch/).

Usage: ``.venv/bin/python scripts/phoenix_roundtrip.py [--keep]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SCRATCH = REPO / ".scratch"
TRANSCRIPT = REPO / "tests" / "transcripts" / "claude-stream-json" / "claude_fresh.jsonl"
CHILD = REPO / "tests" / "children" / "stream_child.py"
ROOT_NAME = "invoke_agent claude_code"
PHASES = {"cli_ready", "session_init", "model_first_token"}
START_TIMEOUT_S = 120.0
SPANS_TIMEOUT_S = 30.0


def log(msg: str) -> None:
    """Progress on stderr."""
    print(f"phoenix_roundtrip: {msg}", file=sys.stderr, flush=True)


def ensure_venv(venv: Path) -> Path:
    """The venv's ``phoenix`` executable, installing arize-phoenix when missing."""
    phoenix = venv / "bin" / "phoenix"
    if phoenix.exists():
        log(f"reusing {venv}")
        return phoenix
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "arize-phoenix"],
        check=True,
    )
    log(f"installed arize-phoenix in {time.monotonic() - started:.0f} s")
    return phoenix


def http_json(url: str, timeout: float = 5.0) -> Any:
    """GET ``url`` and decode its JSON body."""
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback
        return json.loads(response.read())


def wait_healthy(base: str, proc: subprocess.Popen[bytes]) -> bool:
    """Poll ``/healthz`` until Phoenix answers (bounded)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{base}/healthz", timeout=2) as r,  # noqa: S310
        ):
            if r.status == 200:
                return True
        time.sleep(0.5)
    return False


def child_script(path: Path) -> None:
    """The stand-in child's steps: the recorded transcript's stdout lines, timed as recorded."""
    steps: list[dict[str, Any]] = []
    last_ms = 0.0
    for line in TRANSCRIPT.read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        if "meta" in item or item.get("stream") != "stdout":
            continue
        steps.append({"sleep_ms": max(0.0, item["t_ms"] - last_ms)})
        steps.append({"out": item["line"] + "\n"})
        last_ms = item["t_ms"]
    steps.append({"exit": 0})
    path.write_text(json.dumps(steps), encoding="utf-8")


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Phoenix nests dotted attribute keys (``{"gen_ai": {"agent": …}}``); flatten them."""
    if not isinstance(value, dict):
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, inner in value.items():
        out.update(flatten(inner, f"{prefix}.{key}" if prefix else key))
    return out


def check(spans: list[dict[str, Any]], record: dict[str, Any]) -> list[str]:
    """Mismatches between Phoenix's spans and the stored record (empty: all good)."""
    problems: list[str] = []
    by_name = {s["name"]: s for s in spans}
    if sorted(by_name) != sorted({ROOT_NAME, *PHASES}) or len(spans) != len(by_name):
        problems.append(f"span names {sorted(s['name'] for s in spans)}")
    root = by_name.get(ROOT_NAME)
    if root is None:
        return [*problems, "no root span"]
    if root["context"]["trace_id"] != record["trace_id"]:
        problems.append(f"trace id {root['context']['trace_id']} != {record['trace_id']}")
    if root["context"]["span_id"] != record["span_id"]:
        problems.append(f"root span id {root['context']['span_id']} != {record['span_id']}")
    if root.get("parent_id"):
        problems.append(f"root has a parent {root['parent_id']}")
    # Phoenix reports its OpenInference kind, read from gen_ai.operation.name=invoke_agent.
    if root.get("span_kind", "").upper() not in {"AGENT", "CLIENT", "SPAN_KIND_CLIENT"}:
        problems.append(f"root kind {root.get('span_kind')}")
    problems.extend(
        f"{name} parent {by_name[name].get('parent_id')}"
        for name in PHASES & set(by_name)
        if by_name[name].get("parent_id") != record["span_id"]
    )
    attributes = flatten(root.get("attributes", {}))
    wanted = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": "claude_code",
        "gen_ai.provider.name": "anthropic",
        "ttft_probe.run_id": record["run_id"],
        "ttft_probe.turn_ordinal": record["turn_ordinal"],
        "ttft_probe.session_resumed": record["session_resumed"],
        "ttft_probe.status": record["status"],
        "ttft_probe.cli_ready_ms": record["cli_ready_ms"],
        "ttft_probe.session_init_ms": record["session_init_ms"],
        "ttft_probe.model_first_token_ms": record["model_first_token_ms"],
    }
    for key, value in wanted.items():
        if attributes.get(key) != value:
            problems.append(f"root attribute {key}={attributes.get(key)!r}, wanted {value!r}")
    events = [e["name"] for e in root.get("events", [])]
    problems.extend(
        f"root event {marker} missing ({events})"
        for marker in ("processSpawned", "cliReady", "sessionInitDone", "firstToken")
        if marker not in events
    )
    return problems


def main() -> int:  # noqa: C901, PLR0915 - one linear script reads best
    """Run the round trip; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=SCRATCH / "phoenix-venv")
    parser.add_argument("--port", type=int, default=4318, help="PHOENIX_PORT (HTTP + OTLP)")
    parser.add_argument("--grpc-port", type=int, default=4317, help="PHOENIX_GRPC_PORT")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()

    try:
        phoenix = ensure_venv(args.venv)
    except (OSError, subprocess.CalledProcessError) as exc:
        log(f"cannot install arize-phoenix: {exc}")
        return 2

    work = SCRATCH / "phoenix-roundtrip" / uuid.uuid4().hex[:12]
    work.mkdir(parents=True)
    base = f"http://127.0.0.1:{args.port}"
    phoenix_env = {
        **os.environ,
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(args.port),
        "PHOENIX_GRPC_PORT": str(args.grpc_port),
        "PHOENIX_WORKING_DIR": str(work / "phoenix"),
        "PHOENIX_TELEMETRY_ENABLED": "false",
        "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
        "PHOENIX_DISABLE_AGENT_ASSISTANT": "true",
    }
    phoenix_log = (work / "phoenix.log").open("wb")
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(phoenix), "serve"],
        env=phoenix_env,
        stdout=phoenix_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        if not wait_healthy(base, proc):
            log(f"Phoenix did not start; see {work / 'phoenix.log'}")
            return 2
        log(f"Phoenix up in {time.monotonic() - started:.1f} s on {base}")

        script = work / "claude.json"
        child_script(script)
        probe_env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        probe_env.update(
            {
                "PYTHONPATH": str(REPO / "src"),
                "TTFT_PROBE_HOME": str(work / "probe"),
                "OTEL_EXPORTER_OTLP_ENDPOINT": base,
                "OTEL_METRICS_EXPORTER": "none",  # Phoenix takes traces only
            }
        )
        probe = [sys.executable, "-m", "ttft_probe"]
        run = subprocess.run(
            [
                *probe,
                "run",
                "--agent",
                "claude_code",
                "--family",
                "claude-stream-json",
                "--turn",
                "1",
                "--",
                sys.executable,
                str(CHILD),
                str(script),
            ],
            env=probe_env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        log(f"run exited {run.returncode}: {run.stderr.decode(errors='replace').strip()}")
        if run.returncode != 0:
            return 1
        subprocess.run([*probe, "flush"], env=probe_env, timeout=60, check=False)
        listed = subprocess.run(
            [*probe, "runs", "--json"],
            env=probe_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        record: dict[str, Any] = json.loads(listed.stdout.strip().splitlines()[-1])
        if not record.get("trace_id"):
            log(f"the record has no trace id: {record}")
            return 1

        url = f"{base}/v1/projects/default/spans?trace_id={record['trace_id']}&limit=100"
        spans: list[dict[str, Any]] = []
        deadline = time.monotonic() + SPANS_TIMEOUT_S
        while time.monotonic() < deadline:  # Phoenix inserts spans asynchronously
            with contextlib.suppress(OSError, urllib.error.HTTPError):
                spans = http_json(url)["data"]
                if len(spans) >= 1 + len(PHASES):
                    break
            time.sleep(0.5)
        problems = check(spans, record)
        for problem in problems:
            log(f"MISMATCH {problem}")
        if problems:
            return 1
        log(
            f"OK: {len(spans)} spans of trace {record['trace_id']} in Phoenix, root "
            f"{record['span_id']}, names, parents, attributes and events as stored"
        )
        return 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the session we started, by its id
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        phoenix_log.close()
        if not args.keep:
            import shutil  # noqa: PLC0415

            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
