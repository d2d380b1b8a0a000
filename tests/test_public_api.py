"""The public surface and what importing it costs."""

from __future__ import annotations

import subprocess
import sys
import types

import ttft_probe


def test_all_is_sorted_and_exactly_the_public_surface() -> None:
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
