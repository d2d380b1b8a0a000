"""OTLP protobuf attributes as Python values, for the fakes that receive OTLP and their tests."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

__all__ = ["attributes_of", "value_of"]


def value_of(value: AnyValue) -> Any:
    """The Python value of an OTLP ``AnyValue`` (scalars, arrays as lists, kvlists as dicts)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [value_of(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes_of(value.kvlist_value.values)
    return getattr(value, kind)


def attributes_of(kvs: Any) -> dict[str, Any]:
    """OTLP ``repeated KeyValue`` as a dict."""
    items: list[KeyValue] = list(kvs)
    return {kv.key: value_of(kv.value) for kv in items}
