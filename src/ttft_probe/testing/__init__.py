"""Test support: a streaming fake LLM provider and the setup to run real agent CLIs offline.

Nothing here is part of the public API; the test-suite and ``scripts/`` import the
modules directly (``ttft_probe.testing.fake_provider``, ``ttft_probe.testing.agent_env``).
"""

from __future__ import annotations

__all__: list[str] = []
