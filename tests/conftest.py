"""Shared fixtures: the probe's home, record validation, the stand-in children."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import settings

from ttft_probe.record import RunRecord, record_schema
from ttft_probe.testing.fake_provider import FakeProvider

pytest_plugins = ["reliability"]

settings.register_profile("ttft", derandomize=True, database=None, deadline=None)
settings.load_profile("ttft")
"""Hypothesis runs the same examples on every machine: the fault table counts them."""

TESTS = Path(__file__).parent
CHILDREN = TESTS / "children"
PROBE = [sys.executable, "-m", "ttft_probe"]
REPO = TESTS.parent
DELAY_MS = 400
"""The fake provider's injected first-token delay in the real-CLI tests (ms)."""


@pytest.fixture(scope="session")
def provider() -> Iterator[FakeProvider]:
    """The fake provider, first token after DELAY_MS (400 ms), shared by every real-CLI test.

    Tests read its log from their own run's start on (a run's ground truth is the
    generation whose first token came last before the probe's), so sharing it is safe.
    """
    with FakeProvider(first_token_delay_ms=DELAY_MS) as fp:
        yield fp


class ProviderProcess:
    """The fake provider in a process of its own, read through its JSON-lines log.

    For assertions within a couple of ms: in the test's own process, the provider's
    threads compete with the test for the GIL, so its clock readings can run late.
    Same ``url`` / ``log`` / ``generations()`` interface as ``FakeProvider``.
    """

    def __init__(self, log_path: Path, first_token_delay_ms: float) -> None:
        self._log_path = log_path
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "ttft_probe.testing.fake_provider", "--port", "0",
             "--first-token-delay-ms", str(first_token_delay_ms), "--log", str(log_path)],
            stdout=subprocess.PIPE,
        )
        assert self._proc.stdout is not None
        ready = self._proc.stdout.readline().decode().split()  # bounded by the provider's start
        assert ready[:1] == ["READY"], ready
        self.url = ready[1]

    @property
    def log(self) -> list[dict[str, Any]]:
        """Every logged request so far."""
        if not self._log_path.exists():
            return []
        lines = self._log_path.read_text("utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def generations(self) -> list[dict[str, Any]]:
        """The logged generation calls, in order of arrival."""
        return sorted((e for e in self.log if e["generation"]), key=lambda e: e["arrival_ns"])

    def stop(self) -> None:
        """End the provider process."""
        self._proc.terminate()
        self._proc.communicate(timeout=10)


AnyProvider = FakeProvider | ProviderProcess
"""Either fake provider: both have ``url``, ``log`` and ``generations()``."""


@pytest.fixture(scope="module")
def provider_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProviderProcess]:
    """The fake provider (DELAY_MS) in its own process, for ms-exact ground truth."""
    fp = ProviderProcess(tmp_path_factory.mktemp("provider") / "log.jsonl", DELAY_MS)
    yield fp
    fp.stop()


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A scratch directory inside the repository (codex refuses helper binaries in /tmp)."""
    path = REPO / ".scratch" / "pytest" / uuid.uuid4().hex[:12]
    path.mkdir(parents=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def assert_valid(record: RunRecord | dict[str, Any]) -> None:
    """The record validates against the shipped run_finished JSON Schema."""
    data = record.to_dict() if isinstance(record, RunRecord) else record
    jsonschema.Draft202012Validator(
        record_schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).validate(data)


@pytest.fixture
def probe_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private TTFT_PROBE_HOME for the test (and its children)."""
    home = tmp_path / "probe-home"
    monkeypatch.setenv("TTFT_PROBE_HOME", str(home))
    for var in (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "POSTHOG_API_KEY",
        "LANGFUSE_PUBLIC_KEY",
    ):
        monkeypatch.delenv(var, raising=False)
    return home


def script(tmp_path: Path, steps: list[dict[str, Any]]) -> list[str]:
    """argv of the scripted stand-in child running ``steps`` (see children/stream_child.py)."""
    path = tmp_path / f"script-{len(list(tmp_path.glob('script-*')))}.json"
    path.write_text(json.dumps(steps), encoding="utf-8")
    return [sys.executable, str(CHILDREN / "stream_child.py"), str(path)]


def stored(home: Path) -> list[dict[str, Any]]:
    """Every record in the store under ``home``, via `ttft-probe runs --all --json`."""
    out = subprocess.run(
        [*PROBE, "runs", "--all", "--json"],
        capture_output=True,
        check=True,
        timeout=30,
        env={**os.environ, "TTFT_PROBE_HOME": str(home)},
    ).stdout.decode()
    return [json.loads(line) for line in out.splitlines() if line.strip()]
