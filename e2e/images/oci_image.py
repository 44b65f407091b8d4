#!/usr/bin/env python3
"""Pack an image tarball without a container engine or registry (standard library only).

The tarball holds both an OCI image layout (oci-layout, index.json, blobs/sha256/...) and a docker-archive
manifest.json pointing at the same blobs, so `ctr images import`, `docker load` and `podman load` all accept it.
Layers are stored uncompressed (their digest is their diff_id): importing locally never pays for gzip.

Examples
  oci_image.py --name localhost/x/pause:3.4.1 --output pause.tar --add bin/pause:/pause:0755 --entrypoint '["/pause"]'
  oci_image.py --name localhost/x/model:dev --output model.tar --layer-tar rootfs.tar \\
      --add model_server.py:/app/model_server.py --entrypoint '["python3", "/app/model_server.py"]'
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Blob:
    digest: str  # "sha256:<hex>"
    size: int
    path: Path | None = None  # streamed from a file ...
    data: bytes | None = None  # ... or held in memory

    @property
    def name(self) -> str:
        return "blobs/sha256/" + self.digest.split(":", 1)[1]


def _file_blob(path: Path) -> Blob:
    sha = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
            size += len(chunk)
    return Blob("sha256:" + sha.hexdigest(), size, path=path)


def _bytes_blob(data: bytes) -> Blob:
    return Blob("sha256:" + hashlib.sha256(data).hexdigest(), len(data), data=data)


def _json_bytes(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _add_layer(adds: list[str], out: Path) -> None:
    """Write one deterministic layer tar holding the given SRC:DEST[:MODE] files (parents created)."""
    dirs: set[str] = set()
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for spec in adds:
            parts = spec.split(":")
            if len(parts) not in (2, 3):
                raise SystemExit(f"--add expects SRC:DEST[:MODE], got {spec!r}")
            src, dest = Path(parts[0]), PurePosixPath(parts[1])
            if not dest.is_absolute():
                raise SystemExit(f"--add destination must be absolute: {dest}")
            data = src.read_bytes()
            mode = int(parts[2], 8) if len(parts) == 3 else (0o755 if os.access(src, os.X_OK) else 0o644)
            for parent in reversed(dest.parents[:-1]):  # skip "/"
                rel = str(parent).lstrip("/")
                if rel not in dirs:
                    dirs.add(rel)
                    info = tarfile.TarInfo(rel)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
                    tar.addfile(info)
            info = tarfile.TarInfo(str(dest).lstrip("/"))
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))


def build(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="oci-image-", dir=str(Path(args.output).resolve().parent)) as tmp:
        layer_paths = [Path(p) for p in args.layer_tar]
        if args.add:
            extra = Path(tmp) / "add-layer.tar"
            _add_layer(args.add, extra)
            layer_paths.append(extra)
        if not layer_paths:
            raise SystemExit("an image needs at least one layer (--layer-tar or --add)")
        layers = [_file_blob(p) for p in layer_paths]

        env = [f"PATH={DEFAULT_PATH}", *args.env]
        config: dict[str, object] = {"Env": env}
        if args.entrypoint:
            config["Entrypoint"] = json.loads(args.entrypoint)
        if args.cmd:
            config["Cmd"] = json.loads(args.cmd)
        if args.workdir:
            config["WorkingDir"] = args.workdir
        if args.user:
            config["User"] = args.user
        if args.label:
            config["Labels"] = dict(label.split("=", 1) for label in args.label)
        image_config = _bytes_blob(
            _json_bytes(
                {
                    "architecture": args.arch,
                    "os": "linux",
                    "created": "1970-01-01T00:00:00Z",
                    "config": config,
                    "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]},
                    "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "e2e/images/oci_image.py"}],
                }
            )
        )
        manifest = _bytes_blob(
            _json_bytes(
                {
                    "schemaVersion": 2,
                    "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": OCI_CONFIG, "digest": image_config.digest, "size": image_config.size},
                    "layers": [
                        {"mediaType": OCI_LAYER_TAR, "digest": layer.digest, "size": layer.size} for layer in layers
                    ],
                }
            )
        )
        tag = args.name.rsplit(":", 1)[1] if ":" in args.name.rsplit("/", 1)[-1] else "latest"
        index = {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": manifest.digest,
                    "size": manifest.size,
                    "platform": {"architecture": args.arch, "os": "linux"},
                    "annotations": {
                        "io.containerd.image.name": args.name,
                        "org.opencontainers.image.ref.name": tag,
                    },
                }
            ],
        }
        docker_manifest = [
            {"Config": image_config.name, "RepoTags": [args.name], "Layers": [layer.name for layer in layers]}
        ]

        partial = Path(tmp) / "image.tar"
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as out:

            def put(name: str, blob: Blob) -> None:
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = blob.size, 0o644, 0
                if blob.path is not None:
                    with blob.path.open("rb") as f:
                        out.addfile(info, f)
                else:
                    out.addfile(info, io.BytesIO(blob.data or b""))

            for d in ("blobs", "blobs/sha256"):
                info = tarfile.TarInfo(d)
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
                out.addfile(info)
            seen: set[str] = set()
            for blob in [*layers, image_config, manifest]:
                if blob.digest not in seen:
                    seen.add(blob.digest)
                    put(blob.name, blob)
            put("oci-layout", _bytes_blob(_json_bytes({"imageLayoutVersion": "1.0.0"})))
            put("index.json", _bytes_blob(_json_bytes(index)))
            put("manifest.json", _bytes_blob(_json_bytes(docker_manifest)))
        os.replace(partial, args.output)  # atomic: a half-written tarball never sits at the output path
    print(json.dumps({"name": args.name, "manifest": manifest.digest, "config": image_config.digest}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="full image reference, e.g. localhost/project/image:tag")
    parser.add_argument("--output", required=True, help="image tarball to write")
    parser.add_argument("--layer-tar", action="append", default=[], help="an uncompressed layer tar (repeatable)")
    parser.add_argument("--add", action="append", default=[], help="SRC:DEST[:MODE] into one extra top layer")
    parser.add_argument("--entrypoint", help='JSON list, e.g. ["/pause"]')
    parser.add_argument("--cmd", help="JSON list")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE (repeatable; PATH is preset)")
    parser.add_argument("--workdir")
    parser.add_argument("--user")
    parser.add_argument("--label", action="append", default=[], help="KEY=VALUE (repeatable)")
    parser.add_argument("--arch", default="amd64")
    build(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
