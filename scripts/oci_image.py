#!/usr/bin/env python3
"""Build the edge-jwt OCI image for Istio, without a container engine.

Writes an OCI image layout (https://github.com/opencontainers/image-spec/blob/main/image-layout.md)
in the Wasm image "compat" variant that Istio's agent fetches
(istio/istio pkg/wasm/imagefetcher.go, extractOCIStandardImage):

    index.json  -> manifest  application/vnd.oci.image.manifest.v1+json
                   config    application/vnd.oci.image.config.v1+json  (architecture wasm, os wasip1)
                   layers    [application/vnd.oci.image.layer.v1.tar+gzip]
                               = a gzip'd tar with exactly one member: plugin.wasm

plus the same layout as one tar (an "oci-archive", for `skopeo copy oci-archive:...`).

The output is reproducible: same wasm + same tag -> same bytes and digests (tar member
mtime 0, uid/gid 0, mode 0644; gzip mtime 0 and no file name; sorted JSON; no
"created" time unless SOURCE_DATE_EPOCH is set).

    scripts/oci_image.py [--wasm target/edge_jwt.wasm] [--tag VERSION] [OUT_DIR]

OUT_DIR (default target/oci) receives:
    OUT_DIR/edge-jwt/                  the OCI layout (replaced on every run)
    OUT_DIR/edge-jwt-<tag>.oci.tar     the layout as a tar
Prints the manifest digest (what WasmPlugin.spec.sha256 / url @sha256: take).
Python 3.9+ standard library only.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
WASM_NAME = "plugin.wasm"  # the name Istio's compat extractor looks for
IMAGE_NAME = "edge-jwt"
SOURCE_URL = "https://github.com/edge-jwt/edge-jwt"  # placeholder, as in wasmplugin.yaml


def crate_version() -> str:
    text = (ROOT / "Cargo.toml").read_text()
    m = re.search(r'^\[package\][^\[]*?^version\s*=\s*"([^"]+)"', text, re.M | re.S)
    return m.group(1) if m else "0.0.0"


def canonical_json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def layer_tar(wasm: bytes) -> bytes:
    """Uncompressed tar holding only plugin.wasm, with fixed metadata."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(WASM_NAME)
        info.size = len(wasm)
        info.mode = 0o644
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.type = tarfile.REGTYPE
        tar.addfile(info, io.BytesIO(wasm))
    return buf.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    buf = io.BytesIO()
    # filename="" and mtime=0: the gzip header carries neither a name nor a time.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(data)
    return buf.getvalue()


def descriptor(media_type: str, blob: bytes, **extra) -> dict:
    d = {"mediaType": media_type, "digest": "sha256:" + hashlib.sha256(blob).hexdigest(),
         "size": len(blob)}
    d.update(extra)
    return d


def build(wasm: bytes, tag: str, created: str | None = None) -> dict:
    """-> {"blobs": {digest: bytes}, "index": bytes, "manifest_digest": str, ...}"""
    tar = layer_tar(wasm)
    layer = gzip_bytes(tar)
    config_obj = {
        "architecture": "wasm",
        "os": "wasip1",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()]},
    }
    if created:
        config_obj["created"] = created
    config = canonical_json(config_obj)
    annotations = {
        "org.opencontainers.image.title": IMAGE_NAME,
        "org.opencontainers.image.description": "edge-jwt proxy-wasm filter (Istio compat variant: plugin.wasm)",
        "org.opencontainers.image.version": tag,
        "org.opencontainers.image.source": SOURCE_URL,
        "org.opencontainers.image.licenses": "Apache-2.0",
    }
    if created:
        annotations["org.opencontainers.image.created"] = created
    manifest = canonical_json({
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": descriptor(MT_CONFIG, config),
        "layers": [descriptor(MT_LAYER, layer, annotations={
            "org.opencontainers.image.title": WASM_NAME})],
        "annotations": annotations,
    })
    mdesc = descriptor(MT_MANIFEST, manifest, annotations={
        "org.opencontainers.image.ref.name": tag})
    index = canonical_json({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [mdesc]})
    blobs = {}
    for b in (config, layer, manifest):
        blobs["sha256:" + hashlib.sha256(b).hexdigest()] = b
    return {"blobs": blobs, "index": index, "manifest_digest": mdesc["digest"],
            "layer_digest": "sha256:" + hashlib.sha256(layer).hexdigest(),
            "oci_layout": canonical_json({"imageLayoutVersion": "1.0.0"})}


def layout_files(img: dict) -> list[tuple[str, bytes | None]]:
    """(path, content) in archive order; content None = directory."""
    files: list[tuple[str, bytes | None]] = [
        ("oci-layout", img["oci_layout"]),
        ("index.json", img["index"]),
        ("blobs", None),
        ("blobs/sha256", None),
    ]
    for digest in sorted(img["blobs"]):
        files.append((f"blobs/sha256/{digest.split(':', 1)[1]}", img["blobs"][digest]))
    return files


def write_layout(img: dict, out: Path) -> None:
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for path, content in layout_files(img):
        p = tmp / path
        if content is None:
            p.mkdir(parents=True, exist_ok=True)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(content)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def write_archive(img: dict, out: Path) -> None:
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for path, content in layout_files(img):
            info = tarfile.TarInfo(path)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if content is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.mode = 0o644
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    tmp.replace(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Build the edge-jwt OCI image (Istio compat variant).")
    ap.add_argument("out_dir", nargs="?", default=str(ROOT / "target" / "oci"))
    ap.add_argument("--wasm", default=os.environ.get("EDGE_JWT_WASM") or str(ROOT / "target" / "edge_jwt.wasm"))
    ap.add_argument("--tag", default=None, help="image tag / ref.name (default: the crate version)")
    a = ap.parse_args(argv)

    wasm_path = Path(a.wasm)
    if not wasm_path.is_file():
        print(f"oci-image: {wasm_path} not found; build it first (scripts/build.sh)", file=sys.stderr)
        return 1
    wasm = wasm_path.read_bytes()
    if wasm[:4] != b"\0asm":
        print(f"oci-image: {wasm_path} is not a wasm module", file=sys.stderr)
        return 1
    tag = a.tag or crate_version()
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}", tag):
        print(f"oci-image: {tag!r} is not a valid tag", file=sys.stderr)
        return 1
    created = None
    if os.environ.get("SOURCE_DATE_EPOCH"):
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(os.environ["SOURCE_DATE_EPOCH"])))

    img = build(wasm, tag, created)
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    layout = out / IMAGE_NAME
    archive = out / f"{IMAGE_NAME}-{tag}.oci.tar"
    write_layout(img, layout)
    write_archive(img, archive)
    print(f"oci-image: layout   {layout}  (ref {tag})")
    print(f"oci-image: archive  {archive}")
    print(f"oci-image: manifest {img['manifest_digest']}")
    print(f"oci-image: layer    {img['layer_digest']} ({WASM_NAME}, {len(wasm)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
