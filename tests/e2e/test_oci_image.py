"""scripts/oci-image.sh: the OCI image Istio pulls (Wasm "compat" variant), read back.

Read back twice, independently of the builder's code:
  - here, with the standard library, following the OCI image-layout spec and then Istio's
    own extraction rule (istio/istio pkg/wasm/imagefetcher.go, extractOCIStandardImage:
    last layer application/vnd.oci.image.layer.v1.tar+gzip, gunzip, untar, the member
    whose base name is plugin.wasm);
  - with skopeo (Debian package 1.9.3, the tool the README uses to push), which parses
    the oci-archive and copies it while checking every blob's digest. When skopeo is not
    on PATH it is unpacked project-locally into .tools/skopeo from Debian's packages
    (skopeo, libgpgme11) with `apt-get download` + `dpkg-deb -x`; no system change.
"""
from __future__ import annotations

import glob
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from harness.envoy import REPO

SCRIPT = REPO / "scripts" / "oci-image.sh"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"  # go-containerregistry types.OCILayer
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


def crate_version() -> str:
    m = re.search(r'^\[package\][^\[]*?^version\s*=\s*"([^"]+)"', (REPO / "Cargo.toml").read_text(),
                  re.M | re.S)
    assert m
    return m.group(1)


def build(out: Path, wasm: Path, *extra: str) -> dict:
    env = dict(os.environ)
    env.pop("SOURCE_DATE_EPOCH", None)
    p = subprocess.run(["bash", str(SCRIPT), "--wasm", str(wasm), *extra, str(out)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                       timeout=120, env=env)
    text = p.stdout.decode(errors="replace")
    assert p.returncode == 0, text
    digest = re.search(r"manifest (sha256:[0-9a-f]{64})", text)
    assert digest, text
    tag = extra[extra.index("--tag") + 1] if "--tag" in extra else crate_version()
    return {"layout": out / "edge-jwt", "archive": out / f"edge-jwt-{tag}.oci.tar",
            "manifest_digest": digest.group(1), "tag": tag, "output": text}


# -- an independent OCI layout reader ------------------------------------------------------

def read_blob(layout: Path, desc: dict) -> bytes:
    assert DIGEST_RE.match(desc["digest"]), desc
    data = (layout / "blobs" / "sha256" / desc["digest"].split(":", 1)[1]).read_bytes()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == desc["digest"], f"digest mismatch: {desc}"
    assert len(data) == desc["size"], f"size mismatch: {desc} vs {len(data)}"
    return data


def read_layout(layout: Path, tag: str) -> dict:
    """Spec-level read of an OCI image layout -> manifest, config, layer bytes and plugin.wasm."""
    assert json.loads((layout / "oci-layout").read_bytes()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((layout / "index.json").read_bytes())
    assert index["schemaVersion"] == 2 and index.get("mediaType", MT_INDEX) == MT_INDEX
    (mdesc,) = index["manifests"]
    assert mdesc["mediaType"] == MT_MANIFEST
    assert mdesc["annotations"]["org.opencontainers.image.ref.name"] == tag

    manifest_raw = read_blob(layout, mdesc)
    manifest = json.loads(manifest_raw)
    assert manifest["schemaVersion"] == 2 and manifest["mediaType"] == MT_MANIFEST
    assert manifest["config"]["mediaType"] == MT_CONFIG
    config = json.loads(read_blob(layout, manifest["config"]))
    assert len(manifest["layers"]) == 1, "compat variant: exactly one layer"
    (ldesc,) = manifest["layers"]
    assert ldesc["mediaType"] == MT_LAYER
    layer = read_blob(layout, ldesc)

    # Istio: gzip reader, tar reader, base name plugin.wasm. We ask for more: exactly one
    # member, a regular file named plugin.wasm at the root.
    tar_bytes = gzip.decompress(layer)
    assert config["rootfs"] == {"type": "layers",
                                "diff_ids": ["sha256:" + hashlib.sha256(tar_bytes).hexdigest()]}
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["plugin.wasm"], [m.name for m in members]
        (m,) = members
        assert m.isreg() and m.mode == 0o644 and m.uid == 0 and m.gid == 0 and m.mtime == 0
        wasm = tar.extractfile(m).read()

    referenced = {mdesc["digest"], manifest["config"]["digest"], ldesc["digest"]}
    present = {"sha256:" + Path(p).name for p in glob.glob(str(layout / "blobs" / "sha256" / "*"))}
    assert present == referenced, f"unreferenced or missing blobs: {present ^ referenced}"
    return {"manifest_digest": mdesc["digest"], "manifest_raw": manifest_raw, "manifest": manifest,
            "config": config, "layer": layer, "wasm": wasm}


# -- tests ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def image(wasm_path, tmp_path_factory):
    return build(tmp_path_factory.mktemp("oci"), wasm_path)


def test_layout_reads_back_to_the_built_wasm(image, wasm_path):
    got = read_layout(image["layout"], image["tag"])
    assert got["wasm"] == wasm_path.read_bytes()
    assert got["manifest_digest"] == image["manifest_digest"]
    assert got["config"]["architecture"] == "wasm" and got["config"]["os"] == "wasip1"
    assert got["manifest"]["annotations"]["org.opencontainers.image.version"] == image["tag"]
    assert "org.opencontainers.image.created" not in got["manifest"]["annotations"]


def test_archive_is_the_layout(image):
    with tarfile.open(image["archive"], mode="r:") as tar:
        members = {m.name: m for m in tar.getmembers()}
        files = {name: tar.extractfile(m).read() for name, m in members.items() if m.isreg()}
    on_disk = {str(p.relative_to(image["layout"])): p.read_bytes()
               for p in image["layout"].rglob("*") if p.is_file()}
    assert files == on_disk
    assert {"oci-layout", "index.json"} <= set(members)
    assert all(m.uid == 0 and m.mtime == 0 for m in members.values())


def test_build_is_reproducible(image, wasm_path, tmp_path):
    again = build(tmp_path, wasm_path)
    assert again["archive"].read_bytes() == image["archive"].read_bytes()
    assert again["manifest_digest"] == image["manifest_digest"]


def test_tag_option(wasm_path, tmp_path):
    img = build(tmp_path, wasm_path, "--tag", "9.9.9-test")
    assert img["archive"].name == "edge-jwt-9.9.9-test.oci.tar"
    assert read_layout(img["layout"], "9.9.9-test")["wasm"] == wasm_path.read_bytes()


def test_refuses_a_non_wasm_file(tmp_path):
    bogus = tmp_path / "x.wasm"
    bogus.write_bytes(b"not wasm")
    p = subprocess.run(["bash", str(SCRIPT), "--wasm", str(bogus), str(tmp_path / "out")],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    assert p.returncode == 1 and b"not a wasm module" in p.stdout, p.stdout


def test_reader_catches_a_corrupt_blob(image, tmp_path):
    """The read-back is not vacuous: one flipped byte in the layer fails it."""
    bad = tmp_path / "layout"
    shutil.copytree(image["layout"], bad)
    manifest = json.loads(read_layout(bad, image["tag"])["manifest_raw"])
    blob = bad / "blobs" / "sha256" / manifest["layers"][0]["digest"].split(":", 1)[1]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(AssertionError, match="digest mismatch"):
        read_layout(bad, image["tag"])


# -- skopeo ----------------------------------------------------------------------------------

def skopeo() -> tuple[list[str], dict]:
    """skopeo from PATH, else Debian's package unpacked into .tools/skopeo."""
    env = dict(os.environ)
    if shutil.which("skopeo"):
        return ["skopeo"], env
    local = REPO / ".tools" / "skopeo"
    binary = local / "usr" / "bin" / "skopeo"
    if not binary.exists():
        if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
            pytest.fail("skopeo not found and no apt-get/dpkg-deb to fetch it: install skopeo",
                        pytrace=False)
        dl = local.with_name("skopeo-deb")
        shutil.rmtree(dl, ignore_errors=True)
        dl.mkdir(parents=True)
        pkgs = ["skopeo", "libgpgme11"]

        def download() -> subprocess.CompletedProcess:
            return subprocess.run(["apt-get", "download", *pkgs], cwd=dl, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, timeout=300)
        p = download()
        if p.returncode != 0 and os.geteuid() == 0:  # a fresh machine may have no package lists
            subprocess.run(["apt-get", "update", "-qq"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=300)
            p = download()
        if p.returncode != 0:
            pytest.fail(f"could not fetch skopeo: {p.stdout.decode(errors='replace')}", pytrace=False)
        tmp = local.with_name("skopeo.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        for deb in sorted(dl.glob("*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True, timeout=120)
        shutil.rmtree(local, ignore_errors=True)
        tmp.rename(local)
        shutil.rmtree(dl, ignore_errors=True)
    libs = [d for d in glob.glob(str(local / "usr" / "lib" / "*")) if os.path.isdir(d)]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libs + [env.get("LD_LIBRARY_PATH", "")]).strip(os.pathsep)
    return [str(binary)], env


def run_skopeo(*args: str) -> subprocess.CompletedProcess:
    cmd, env = skopeo()
    return subprocess.run([*cmd, "--insecure-policy", *args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=120, env=env)


def test_skopeo_reads_the_archive(image, wasm_path, tmp_path):
    ref = f"oci-archive:{image['archive']}:{image['tag']}"
    p = run_skopeo("inspect", "--raw", ref)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    raw = p.stdout
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == image["manifest_digest"]

    p = run_skopeo("inspect", ref)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    info = json.loads(p.stdout)
    assert info["Digest"] == image["manifest_digest"]
    assert info["Architecture"] == "wasm" and info["Os"] == "wasip1"

    # A full copy (what `skopeo copy ... docker://REGISTRY/...` does, to a local dir):
    # every blob is read and its digest checked on the way.
    out = tmp_path / "copy"
    p = run_skopeo("copy", ref, f"dir:{out}")
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    assert (out / "manifest.json").read_bytes() == raw
    manifest = json.loads(raw)
    layer = (out / manifest["layers"][0]["digest"].split(":", 1)[1]).read_bytes()
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer)), mode="r:") as tar:
        assert tar.getnames() == ["plugin.wasm"]
        assert tar.extractfile("plugin.wasm").read() == wasm_path.read_bytes()

    # And the layout directory form.
    p = run_skopeo("inspect", "--raw", f"oci:{image['layout']}:{image['tag']}")
    assert p.returncode == 0 and p.stdout == raw, p.stderr.decode(errors="replace")


def test_skopeo_refuses_a_corrupt_layer(image, tmp_path):
    bad = tmp_path / "layout"
    shutil.copytree(image["layout"], bad)
    manifest = json.loads((bad / "blobs" / "sha256" /
                           image["manifest_digest"].split(":", 1)[1]).read_bytes())
    blob = bad / "blobs" / "sha256" / manifest["layers"][0]["digest"].split(":", 1)[1]
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF
    blob.write_bytes(bytes(data))
    p = run_skopeo("copy", f"oci:{bad}:{image['tag']}", f"dir:{tmp_path / 'copy'}")
    assert p.returncode != 0
    assert b"digest" in p.stderr.lower(), p.stderr
