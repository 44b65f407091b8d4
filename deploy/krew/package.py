"""Build the krew archive of ``kubectl iw`` reproducibly and check (or write) its sha256 in ``iw.yaml``.

    python deploy/krew/package.py OUT_DIR            # writes kubectl-iw_<version>.tar.gz, prints its sha256
    python deploy/krew/package.py OUT_DIR --update   # ... and writes that sha256 into iw.yaml

The archive holds ``kubectl-iw`` (the wrapper beside this file) and ``LICENSE`` (Apache-2.0, as pyproject.toml
says), with fixed owners and times, so the same sources always give the same bytes and the manifest's sha256 is
checked by tests/test_kubectl_plugin.py.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
MANIFEST = HERE / "iw.yaml"
LICENSE_TEXT = (
    "inference-placement is licensed under the Apache License, Version 2.0:\n"
    "https://www.apache.org/licenses/LICENSE-2.0\n"
)


def version() -> str:
    match = re.search(r"^  version: (v[0-9.]+)$", MANIFEST.read_text(encoding="utf-8"), re.M)
    if match is None:
        raise SystemExit("iw.yaml has no spec.version")
    return match.group(1)


def archive() -> bytes:
    """The tar.gz bytes: same sources, same bytes."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data, mode in (
            ("kubectl-iw", (HERE / "kubectl-iw").read_bytes(), 0o755),
            ("LICENSE", LICENSE_TEXT.encode(), 0o644),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, filename="") as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    data = archive()
    digest = hashlib.sha256(data).hexdigest()
    out = Path(argv[0]) / f"kubectl-iw_{version()}.tar.gz"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    if "--update" in argv[1:]:
        text = MANIFEST.read_text(encoding="utf-8")
        MANIFEST.write_text(re.sub(r"sha256: [0-9a-f]{64}", f"sha256: {digest}", text), encoding="utf-8")
    print(f"{out} {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
