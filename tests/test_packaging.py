"""What a user installs: the wheel (pip / pipx, compatible ranges) and the Helm chart (an OCI artifact).

pyproject.toml states compatible ranges; requirements.lock pins the versions CI, `make setup` and the image install.
The chart's default image is where a release publishes it, so a plain ``helm install`` from the OCI registry runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import venv
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from inference_placement.devtools.processes import free_port, log_tail, spawn, stop_process, wait_http
from tests.plugins.cluster import REPO_ROOT
from tests.test_chart import CHART, _unavailable, helm

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
PUBLISHED_IMAGE = "ghcr.io/inference-placement/inference-placement"
CHART_OCI = "oci://ghcr.io/inference-placement/charts/inference-placement"


def _lock() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (REPO_ROOT / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = Version(version)
    return pins


def _user_requirements() -> list[Requirement]:
    project = PYPROJECT["project"]
    extras = project["optional-dependencies"]
    return [Requirement(r) for r in [*project["dependencies"], *extras["cli"], *extras["plot"]]]


def test_runtime_and_cli_dependencies_are_compatible_ranges_that_contain_the_lock() -> None:
    lock = _lock()
    for req in _user_requirements():
        operators = {spec.operator for spec in req.specifier}
        assert "==" not in operators and "<" in operators and ">=" in operators, (
            f"{req}: a range with a lower and an upper bound (exact pins belong in requirements.lock)"
        )
        name = canonicalize_name(req.name)
        assert name in lock, f"{req.name} is not pinned in requirements.lock"
        assert req.specifier.contains(lock[name]), f"requirements.lock pins {req.name}=={lock[name]} outside {req}"
        lowest = min(Version(spec.version) for spec in req.specifier if spec.operator == ">=")
        assert lowest == lock[name], f"{req}: the lower bound is the tested (locked) version {lock[name]}"


def test_the_cli_extra_and_entry_points_are_declared() -> None:
    scripts = PYPROJECT["project"]["scripts"]
    assert scripts["inference-placement"] == "inference_placement.cli:main"
    assert scripts["kubectl-iw"] == "inference_placement.kubectl:main"
    assert {canonicalize_name(Requirement(r).name) for r in PYPROJECT["project"]["optional-dependencies"]["cli"]} == {
        "matplotlib"
    }


@pytest.mark.slow
def test_the_built_wheel_installs_into_a_fresh_venv_and_exposes_the_commands(tmp_path: Path) -> None:
    """pip (as pipx does) installs the wheel with the cli extra into an empty venv; both commands answer. The lock is
    the constraint set, so the run is reproducible; the range test above shows the ranges admit it."""
    dist = tmp_path / "dist"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(REPO_ROOT)],
        capture_output=True, text=True, timeout=600, check=False, env=env,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    wheels = list(dist.glob("inference_placement-*.whl"))
    assert len(wheels) == 1, wheels
    target = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(target)
    python = target / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "-c", str(REPO_ROOT / "requirements.lock"), f"{wheels[0]}[cli]"],
        capture_output=True, text=True, timeout=900, check=False, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-3000:]
    version = subprocess.run(
        [str(target / "bin" / "inference-placement"), "version"],
        capture_output=True, text=True, timeout=120, check=False, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == PYPROJECT["project"]["version"]
    plugin = subprocess.run(
        [str(target / "bin" / "kubectl-iw"), "--help"],
        capture_output=True, text=True, timeout=120, check=False, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert plugin.returncode == 0, plugin.stderr
    imported = subprocess.run(
        [str(python), "-c", "import matplotlib, inference_placement; print(inference_placement.__file__)"],
        capture_output=True, text=True, timeout=120, check=False, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    assert str(target) in imported.stdout, "the command must come from the fresh venv, not the checkout"


def test_the_chart_packages_with_the_release_image_as_its_default(tmp_path: Path) -> None:
    chart_meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart_meta["appVersion"] == PYPROJECT["project"]["version"]
    helm("package", str(CHART), "--destination", str(tmp_path))
    package = tmp_path / f"inference-placement-{chart_meta['version']}.tgz"
    assert package.is_file(), list(tmp_path.iterdir())
    with tarfile.open(package) as tar:
        names = set(tar.getnames())
        assert "inference-placement/Chart.yaml" in names
        assert "inference-placement/values.schema.json" in names
        assert "inference-placement/files/crds/inferenceworkloads.yaml" in names
        assert "inference-placement/files/crds/serverlesstargets.yaml" in names
    # the packaged chart (what `helm push` uploads) renders the published image at the chart's appVersion
    rendered = helm("template", "ip", str(package), "--namespace", "inference-placement").stdout
    images = {
        container["image"]
        for doc in yaml.safe_load_all(rendered)
        if doc and doc.get("kind") == "Deployment"
        for container in doc["spec"]["template"]["spec"]["containers"]
        if container["name"] != "router"
    }
    assert f"{PUBLISHED_IMAGE}:{chart_meta['appVersion']}" in images, images


def test_the_chart_is_an_oci_artifact_that_helm_pushes_and_renders_from_a_registry(tmp_path: Path) -> None:
    """``helm package`` + ``helm push`` to a real OCI registry (the CNCF distribution registry, Debian's
    docker-registry, on loopback), then ``helm show chart`` / ``helm template`` from the ``oci://`` reference: what the
    README's one-liner does against ghcr.io."""
    registry_bin = shutil.which("docker-registry")
    if registry_bin is None:
        _unavailable("docker-registry (Debian package) not installed: e2e/setup.sh installs it")
    assert registry_bin is not None
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "version": 0.1,
                "log": {"level": "warn"},
                "storage": {"filesystem": {"rootdirectory": str(tmp_path / "blobs")}},
                "http": {"addr": f"127.0.0.1:{port}"},
            }
        )
    )
    registry = spawn([registry_bin, "serve", str(config)], tmp_path / "registry.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/", 30, process=registry)
        chart_meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
        helm("package", str(CHART), "--destination", str(tmp_path))
        package = tmp_path / f"inference-placement-{chart_meta['version']}.tgz"
        pushed = helm("push", str(package), f"oci://127.0.0.1:{port}/charts", "--plain-http")
        assert f"127.0.0.1:{port}/charts/inference-placement:{chart_meta['version']}" in pushed.stdout + pushed.stderr
        reference = f"oci://127.0.0.1:{port}/charts/inference-placement"
        shown = yaml.safe_load(
            helm("show", "chart", reference, "--version", chart_meta["version"], "--plain-http").stdout
        )
        assert (shown["name"], shown["version"], shown["appVersion"]) == (
            "inference-placement",
            chart_meta["version"],
            chart_meta["appVersion"],
        )
        rendered = helm(
            "template", "inference-placement", reference, "--version", chart_meta["version"], "--plain-http",
            "--namespace", "placement-system",
        ).stdout  # fmt: skip
        assert f'image: "{PUBLISHED_IMAGE}:{chart_meta["appVersion"]}"' in rendered
    except BaseException:
        print(log_tail(tmp_path / "registry.log", 40))
        raise
    finally:
        stop_process(registry, 10)


def test_the_readme_install_is_a_helm_install_from_the_oci_chart() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Installing in a cluster", 1)[1].split("\n## ", 1)[0]
    assert f"helm install inference-placement {CHART_OCI}" in section
    assert "pipx install 'inference-placement[cli]'" in section
