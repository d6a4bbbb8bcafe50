#!/usr/bin/env python3
"""Rewrite a shipped Envoy bootstrap so it runs natively on this machine.

The files under envoy/ (and the compose config) name hosts that only exist in a
container network (`issuer:9000`, `upstream:8080`), listen on 0.0.0.0 and load the
filter from /etc/envoy. The demo and the tests run the SAME file with only these
things changed:

  - the admin address              -> 127.0.0.1:<admin_port>
  - every listener's address       -> 127.0.0.1:<listener port>
  - the endpoints of named clusters -> the (host, port) given for that cluster
  - every wasm `code.local.filename` -> the built filter

Everything else (filters, the filter's JSON config, routes, cluster types) is left as
it is. Cluster types are kept too: a STRICT_DNS cluster whose endpoint is now
127.0.0.1 resolves to itself.

Library use:

    from envoy_localize import localize
    localize("envoy/edge-jwt.yaml", "demo-state/envoy.yaml",
             clusters={"issuer": ("127.0.0.1", 9000), "upstream": ("127.0.0.1", 8080)},
             listener_port=10000, admin_port=9901, wasm_path="target/edge_jwt.wasm")

Command line:

    scripts/envoy_localize.py envoy/edge-jwt.yaml out.yaml \\
        --cluster issuer=127.0.0.1:9000 --cluster upstream=127.0.0.1:8080 \\
        --listener-port 10000 --admin-port 9901 --wasm target/edge_jwt.wasm

Needs PyYAML (in .tools/venv).
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path
from typing import Any, Mapping

import yaml

LOOPBACK = "127.0.0.1"
WASM_FILTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"


class LocalizeError(ValueError):
    """The file does not have what the mapping talks about (or the reverse)."""


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _set_socket_address(holder: dict, host: str, port: int) -> None:
    """holder is a dict with `address: {socket_address: ...}` (listener, admin, endpoint)."""
    addr = holder.setdefault("address", {})
    sa = addr.setdefault("socket_address", {})
    if "pipe" in addr:
        raise LocalizeError("pipe addresses are not supported")
    sa["address"] = host
    sa["port_value"] = int(port)
    sa.pop("named_port", None)


def _walk(node: Any):
    """Every dict in the tree, depth first."""
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def localize_bootstrap(boot: dict, *, clusters: Mapping[str, tuple[str, int]],
                       listener_port: int | Mapping[str, int] | None = None,
                       admin_port: int | None = None,
                       wasm_path: str | os.PathLike | None = None,
                       listen_host: str = LOOPBACK,
                       strict: bool = True) -> dict:
    """Rewrite a bootstrap dict in place (and return it).

    clusters:      {cluster name: (host, port)}; every endpoint of that cluster becomes
                   this one address (a cluster keeps a single endpoint).
    listener_port: one port for a single listener, or {listener name: port}.
    admin_port:    admin listens on listen_host:admin_port.
    wasm_path:     replaces every `vm_config.code.local.filename`.
    strict:        refuse a mapping that names a missing cluster/listener, and a result
                   that still has a cluster endpoint with a DNS name (it would not
                   resolve outside its network).
    """
    static = boot.get("static_resources") or {}

    if admin_port is not None:
        admin = boot.setdefault("admin", {})
        _set_socket_address(admin, listen_host, admin_port)

    if listener_port is not None:
        listeners = static.get("listeners") or []
        if isinstance(listener_port, Mapping):
            by_name = {ls.get("name"): ls for ls in listeners}
            for name, port in listener_port.items():
                if name not in by_name:
                    if strict:
                        raise LocalizeError(f"no listener named {name!r} (have {sorted(by_name)})")
                    continue
                _set_socket_address(by_name[name], listen_host, port)
        else:
            if len(listeners) != 1:
                raise LocalizeError(f"{len(listeners)} listeners: give listener_port as "
                                    "{name: port}")
            _set_socket_address(listeners[0], listen_host, listener_port)

    found = set()
    for cl in static.get("clusters") or []:
        name = cl.get("name")
        if name not in clusters:
            continue
        found.add(name)
        host, port = clusters[name]
        la = cl.setdefault("load_assignment", {"cluster_name": name})
        la["endpoints"] = [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": host,
                                                          "port_value": int(port)}}}}]}]
        cl.pop("hosts", None)  # pre-v3 spelling, if any
    if strict:
        missing = set(clusters) - found
        if missing:
            raise LocalizeError(f"no cluster named {sorted(missing)} in the bootstrap")
        for cl in static.get("clusters") or []:
            for d in _walk(cl.get("load_assignment") or {}):
                sa = d.get("socket_address")
                if isinstance(sa, dict) and not _is_ip(str(sa.get("address", ""))):
                    raise LocalizeError(f"cluster {cl.get('name')!r} still points at "
                                        f"{sa.get('address')!r}; map it in `clusters`")

    if wasm_path is not None:
        replaced = 0
        for d in _walk(boot):
            vm = d.get("vm_config")
            if isinstance(vm, dict):
                local = (vm.get("code") or {}).get("local")
                if isinstance(local, dict) and "filename" in local:
                    local["filename"] = str(Path(wasm_path).resolve())
                    replaced += 1
        if strict and replaced == 0:
            raise LocalizeError("wasm_path given but no vm_config.code.local.filename found")
    return boot


class _Dumper(yaml.SafeDumper):
    pass


def _str_presenter(dumper: yaml.SafeDumper, data: str):
    # Multi-line strings (the filter's JSON config) stay readable as literal blocks.
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_presenter)


def load(path: str | os.PathLike) -> dict:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def dump(boot: dict, path: str | os.PathLike, source: str | os.PathLike | None = None) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    header = ""
    if source is not None:
        header = (f"# GENERATED from {source} by scripts/envoy_localize.py: only addresses,\n"
                  "# ports and the wasm path differ. Edit the source, not this file.\n")
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(header + yaml.dump(boot, Dumper=_Dumper, sort_keys=False, width=120),
                   encoding="utf-8")
    tmp.replace(out)
    return out


def localize(src: str | os.PathLike, dst: str | os.PathLike, *,
             clusters: Mapping[str, tuple[str, int]],
             listener_port: int | Mapping[str, int] | None = None,
             admin_port: int | None = None,
             wasm_path: str | os.PathLike | None = None,
             listen_host: str = LOOPBACK, strict: bool = True) -> Path:
    """Read the YAML (or JSON) bootstrap at src, rewrite it, write it to dst; returns dst."""
    boot = localize_bootstrap(load(src), clusters=clusters, listener_port=listener_port,
                              admin_port=admin_port, wasm_path=wasm_path,
                              listen_host=listen_host, strict=strict)
    return dump(boot, dst, source=src)


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--cluster", action="append", default=[], metavar="NAME=HOST:PORT")
    ap.add_argument("--listener-port", type=int)
    ap.add_argument("--listener", action="append", default=[], metavar="NAME=PORT",
                    help="per-listener port (several listeners)")
    ap.add_argument("--admin-port", type=int)
    ap.add_argument("--wasm")
    ap.add_argument("--listen-host", default=LOOPBACK)
    ap.add_argument("--no-strict", action="store_true")
    a = ap.parse_args(argv)
    clusters = {}
    for c in a.cluster:
        name, sep, hp = c.partition("=")
        if not sep:
            ap.error(f"--cluster {c!r}: want NAME=HOST:PORT")
        clusters[name] = _host_port(hp)
    listener: int | dict | None = a.listener_port
    if a.listener:
        listener = {n: int(p) for n, _, p in (x.partition("=") for x in a.listener)}
    try:
        localize(a.src, a.dst, clusters=clusters, listener_port=listener,
                 admin_port=a.admin_port, wasm_path=a.wasm, listen_host=a.listen_host,
                 strict=not a.no_strict)
    except LocalizeError as e:
        print(f"envoy_localize: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
