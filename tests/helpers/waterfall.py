"""A turn's model requests (the provider observer's waterfall) for the sink tests.

:func:`title_and_generation` is the waterfall the OTLP, PostHog and Langfuse tests share:
a title side call that arrives during ``session_init`` (before the prompt) and whose end
was not seen, then the turn's generation, which arrives after the prompt and reports
usage with a prompt-cache read and write.
"""

from __future__ import annotations

from ttft_probe.waterfall import ModelRequest, RequestKind, RequestUsage

__all__ = [
    "GENERATION_USAGE",
    "MS",
    "title_and_generation",
]

MS = 1_000_000

GENERATION_USAGE = RequestUsage(
    input_tokens=3000,  # cached ones included: 100 read anew + 2000 read + 900 written
    cache_read_tokens=2000,
    cache_write_tokens=900,
    output_tokens=50,
)
"""The generation's usage, as :func:`ttft_probe.waterfall.usage_from_payload` reports it."""


def title_and_generation(
    start_ns: int, *, api: str = "anthropic", model: str = "claude-x"
) -> tuple[ModelRequest, ModelRequest]:
    """Two requests of a run that started at ``start_ns`` (monotonic ns).

    - ``title`` (request 1, ``claude-haiku``): arrives at +600 ms, first content byte at
      +650 ms, end not seen, status 200, 800 bytes, no usage.
    - ``generation`` (request 2, ``model``): arrives at +950 ms, first content byte at
      +1350 ms, ends at +1900 ms, status 200, 123,456 bytes, :data:`GENERATION_USAGE`.
    """
    title = ModelRequest(
        request_id=1,
        api=api,
        kind=RequestKind.TITLE,
        model="claude-haiku",
        arrival_ns=start_ns + 600 * MS,
        first_content_ns=start_ns + 650 * MS,
        status=200,
        request_bytes=800,
    )
    generation = ModelRequest(
        request_id=2,
        api=api,
        kind=RequestKind.GENERATION,
        model=model,
        arrival_ns=start_ns + 950 * MS,
        first_content_ns=start_ns + 1350 * MS,
        end_ns=start_ns + 1900 * MS,
        status=200,
        request_bytes=123_456,
        usage=GENERATION_USAGE,
        has_tools=True,
    )
    return title, generation
