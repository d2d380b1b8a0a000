"""Probe every turn of the ``openai-codex`` SDK: two runs on one thread of ``ProbedCodex``.

    pip install 'ttft-probe[openai-codex]'
    python examples/openai_codex_sdk.py

``ProbedCodex`` is ``Codex`` with its ``codex app-server`` under the probe: one record per
turn, the second served by the same process (``process_reused``).
"""

from __future__ import annotations

import os

from openai_codex import CodexConfig

from ttft_probe.integrations.openai_codex import ProbedCodex


def main() -> None:
    with ProbedCodex(CodexConfig(cwd=os.getcwd())) as codex:
        thread = codex.thread_start()
        for text in ("Say hello", "Say it again"):
            print(thread.run(text).final_response)
        probe = codex.probe
    for r in probe.records:
        print(
            f"turn {r.turn_ordinal} reused={r.process_reused}: first token "
            f"{r.spawn_to_first_token_ms} ms = cli_ready {r.cli_ready_ms} + session_init "
            f"{r.session_init_ms} + client_wait {r.client_wait_ms} + model "
            f"{r.model_first_token_ms}"
        )


if __name__ == "__main__":
    main()
