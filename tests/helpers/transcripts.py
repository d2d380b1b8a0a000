"""The recorded transcripts under ``tests/transcripts``: one loader for every test.

A transcript is ``<family>/<case>.jsonl``: a ``{"meta": {...}}`` line, then one
``{"t_ms", "stream", "line"}`` record per line (``stream`` is ``stdout``, ``stderr`` or
``stdin``). ``<case>.expected.json`` holds what each turn must come to (see
``tests/transcripts/README.md``). A line that is not valid UTF-8 is stored with lone
surrogates (``"\\udcff"``) and replayed with ``surrogateescape``, byte for byte.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal, cast

import attrs

from ttft_probe.adapters import AdapterOptions

TRANSCRIPTS = Path(__file__).resolve().parents[1] / "transcripts"
EOF_MARK = "eof"
"""An expectation's time that stands for the ``close()`` at the end of stdout."""


@attrs.frozen
class Line:
    """One recorded line: its index (meta not counted), arrival (ns from spawn), stream, bytes."""

    index: int
    t_ns: int
    stream: str
    data: bytes


@attrs.frozen
class Transcript:
    """A loaded transcript: ``family`` is its folder, ``name`` is ``<family>/<case>``."""

    path: Path
    meta: dict[str, Any]
    lines: list[Line]

    @property
    def family(self) -> str:
        return self.path.parent.name

    @property
    def name(self) -> str:
        return f"{self.family}/{self.path.stem}"

    @property
    def eof_ns(self) -> int:
        """When stdout ended: ``meta.eof_t_ms``, else just after the last line."""
        eof_ms = self.meta.get("eof_t_ms")
        if isinstance(eof_ms, int | float):
            return round(eof_ms * 1e6)
        return max((line.t_ns for line in self.lines), default=0) + 1

    @property
    def expected(self) -> dict[str, Any]:
        """The case's ``.expected.json``."""
        path = self.path.with_name(self.path.stem + ".expected.json")
        data: dict[str, Any] = json.loads(path.read_text("utf-8"))
        return data

    def reads(self) -> list[tuple[Literal["stdout", "stdin"], bytes]]:
        """The stdout and stdin lines as the reads that carried them (newline restored)."""
        return [
            (cast("Literal['stdout', 'stdin']", line.stream), line.data + b"\n")
            for line in self.lines
            if line.stream in {"stdout", "stdin"}
        ]

    def options(self, *, capture_content: bool = False) -> AdapterOptions:
        """The adapter options the case was recorded with (plain regexes, argv)."""
        raw = self.meta.get("adapter_options") or self.meta.get("options") or {}
        names = ("cli_ready_regex", "session_init_regex", "first_token_regex")
        patterns = {n: re.compile(raw[n]) for n in names if raw.get(n) is not None}
        return AdapterOptions(
            cli_ready_regex=patterns.get("cli_ready_regex"),
            session_init_regex=patterns.get("session_init_regex"),
            first_token_regex=patterns.get("first_token_regex"),
            capture_content=capture_content,
            argv=self.meta.get("argv") or (),  # Claude Code's SDK mode is in its command line
        )

    def time_of(self, value: int | str | None) -> int | None:
        """An expectation's time: a line index, ``"eof"`` or ``None``, as ns."""
        if value is None:
            return None
        if value == EOF_MARK:
            return self.eof_ns
        assert isinstance(value, int)
        return self.lines[value].t_ns


def load(path_or_name: Path | str) -> Transcript:
    """Load a transcript by path or by ``<family>/<case>``."""
    path = path_or_name if isinstance(path_or_name, Path) else TRANSCRIPTS / f"{path_or_name}.jsonl"
    raw_lines = path.read_text("utf-8").splitlines()
    meta = json.loads(raw_lines[0])["meta"]
    lines: list[Line] = []
    for raw in raw_lines[1:]:
        if not raw.strip():
            continue
        rec = json.loads(raw)
        data = rec["line"].encode("utf-8", "surrogateescape")
        lines.append(Line(len(lines), round(rec["t_ms"] * 1e6), rec["stream"], data))
    return Transcript(path, meta, lines)


def paths(*, with_expectation: bool = True) -> list[Path]:
    """Every transcript, sorted; by default only those with an ``.expected.json``."""
    return [
        path
        for path in sorted(TRANSCRIPTS.glob("*/*.jsonl"))
        if not with_expectation or path.with_name(path.stem + ".expected.json").exists()
    ]
