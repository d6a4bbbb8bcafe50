"""Walking Envoy bootstraps loaded from YAML/JSON, shared by the config tests."""
from __future__ import annotations

from typing import Iterator

WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"


def walk(node) -> Iterator[dict]:
    """Every mapping in a nested structure, depth first."""
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


def wasm_config(boot: dict) -> dict:
    """The `config` of the first wasm HTTP filter in a bootstrap."""
    for d in walk(boot):
        if d.get("@type") == WASM_TYPE:
            return d["config"]
    raise AssertionError("no wasm filter in the bootstrap")
