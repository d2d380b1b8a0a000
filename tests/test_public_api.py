"""The public surface and what importing it costs."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import ttft_probe

PUBLIC = [
    "CONTRACT_VERSION",
    "AdapterOptions",
    "ConfigError",
    "MarkerTimes",
    "Probe",
    "RunOutcome",
    "RunRecord",
    "RunResult",
    "RuntimeFamily",
    "Status",
    "StoreError",
    "TimingUnavailableReason",
    "TtftProbeError",
    "UnknownAdapterError",
    "probe_of",
    "record_schema",
]
"""``ttft_probe``'s public names, written out: adding or removing one fails the test below
until this list is updated too."""


def test_all_is_sorted_and_exactly_the_public_surface() -> None:
    assert ttft_probe.__all__ == PUBLIC
    assert {n for n in dir(ttft_probe) if not n.startswith("_")} == set(PUBLIC)
    for name in PUBLIC:  # each name resolves (imported on first use)
        assert getattr(ttft_probe, name) is not None
    public = {
        name
        for name, value in vars(ttft_probe).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"
    }
    assert set(ttft_probe.__all__) == public

    def kind(name: str) -> tuple[int, str]:  # constants, classes, functions (isort style)
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert list(ttft_probe.__all__) == sorted(ttft_probe.__all__, key=kind)


ADAPTERS_PUBLIC = [
    "ENTRY_POINT_GROUP",
    "Adapter",
    "AdapterOptions",
    "AgentInfo",
    "AgentReportedTimings",
    "ContentObserved",
    "Event",
    "FirstTokenGranularity",
    "FirstTokenKind",
    "LineSplitter",
    "Marker",
    "MarkerObserved",
    "RuntimeFamily",
    "SessionInitSource",
    "SessionObserved",
    "TurnEnded",
    "UsageReported",
    "adapter_for",
    "check_family",
    "decode_count",
    "decode_ms",
    "decode_name",
    "decode_object",
    "decode_text",
    "registered_families",
]
"""What a plugin adapter imports from ``ttft_probe.adapters``, written out."""


def test_adapters_exports_what_a_plugin_needs() -> None:
    from ttft_probe import adapters

    assert adapters.__all__ == ADAPTERS_PUBLIC
    for name in ADAPTERS_PUBLIC:
        value = getattr(adapters, name)
        assert value is not None
        if callable(value):
            assert value.__doc__, f"{name} has no docstring"


def test_import_does_not_pull_in_exporters_or_backends() -> None:
    code = (
        "import sys, ttft_probe, ttft_probe.cli\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in {'posthog', 'langfuse', 'grpc'}"
        " or m.startswith('opentelemetry.exporter')]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == ""


def test_cli_run_with_nothing_configured_imports_no_telemetry_or_backend(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "POSTHOG_", "LANGFUSE_"))}
    env["TTFT_PROBE_HOME"] = str(tmp_path)
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "ttft_probe", "run", "--", "true"],
        capture_output=True, text=True, check=True, timeout=60, env=env,
    )
    imported = {
        line.rsplit("|", 1)[1].strip()
        for line in out.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "ttft_probe.spawn" in imported  # the scan sees the run path
    top = {m.split(".")[0] for m in imported}
    assert top.isdisjoint({"opentelemetry", "posthog", "langfuse", "grpc", "asyncio", "rich"})


def test_console_script_resumes_the_collector_before_the_agent_starts(tmp_path: Path) -> None:
    hook = (
        "import gc, sys\n"
        "sys.argv = ['ttft-probe', 'run', '--', 'true']\n"
        "import ttft_probe.spawn as sp\n"
        "run = sp.Probe.run\n"
        "def spy(self, *a, **k):\n"
        "    print('at spawn', gc.isenabled(), gc.get_freeze_count() > 0, file=sys.stderr)\n"
        "    return run(self, *a, **k)\n"
        "sp.Probe.run = spy\n"
        "print('loading', gc.isenabled(), file=sys.stderr)\n"
        "from ttft_probe._entry import main\n"
        "main()\n"
    )
    env = {**os.environ, "TTFT_PROBE_HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", hook], capture_output=True, text=True, timeout=60, env=env,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "loading True" in out.stderr  # the hook ran before the entry point paused it
    assert "at spawn True True" in out.stderr
