"""Run the operator's command line with only what its image installs importable: ``python -m
inference_placement.devtools.scale.as_deployed run ...``.

The image installs the project's runtime dependencies and nothing else (``Dockerfile``: ``project.dependencies``
against ``requirements.lock``). A development environment has the test tools too, and some are imported when merely
present: kopf imports the synchronous ``kubernetes`` client if it is installed (``kopf._cogs.helpers.thirdparty``, to
recognise its objects), ~40 MB of resident models the deployed operator never loads. ``bench-scale`` measures the
operator's RSS, so it starts it through this module: every installed top-level module that only distributions
outside the runtime closure provide is hidden (importing it raises ``ModuleNotFoundError``, as in the image).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.metadata as metadata
import sys
from collections.abc import Sequence
from types import ModuleType

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

__all__ = ["DISTRIBUTION", "VENV_SEED", "HiddenModules", "hidden_modules", "install", "main", "runtime_closure"]

DISTRIBUTION = "inference-placement"
VENV_SEED = frozenset({"pip", "setuptools"})
"""What ``python -m venv`` puts in every environment, the image's included (not requirements of anything)."""


def runtime_closure(root: str = DISTRIBUTION) -> frozenset[str]:
    """Canonical names of ``root`` and every installed distribution its requirements reach without extras (the
    extras a runtime requirement itself names are followed: ``moto[server]`` would pull its server's)."""
    environment: dict[str, str] = {k: str(v) for k, v in default_environment().items()}
    seen: set[str] = set()
    pending: list[tuple[str, frozenset[str]]] = [(root, frozenset())]
    while pending:
        name, extras = pending.pop()
        key = canonicalize_name(name)
        if key in seen and not extras:
            continue
        seen.add(key)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # not installed: nothing of it can be imported either
        for text in requires:
            try:
                requirement = Requirement(text)
            except InvalidRequirement:
                continue
            marker = requirement.marker
            if marker is not None and not any(
                marker.evaluate({**environment, "extra": extra}) for extra in (extras or {""})
            ):
                continue
            pending.append((requirement.name, frozenset(requirement.extras)))
    return frozenset(seen)


def hidden_modules(closure: frozenset[str] | None = None) -> frozenset[str]:
    """Installed top-level modules that no distribution of ``closure`` (default: the runtime closure) provides."""
    keep = (runtime_closure() if closure is None else closure) | VENV_SEED
    return frozenset(
        module
        for module, distributions in metadata.packages_distributions().items()
        if not any(canonicalize_name(d) in keep for d in distributions)
    )


class HiddenModules(importlib.abc.MetaPathFinder):
    """A finder first on ``sys.meta_path`` that refuses the given top-level modules and everything under them."""

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r} (not installed in the image)", name=fullname)
        return None


def install(names: frozenset[str] | None = None) -> HiddenModules:
    """Hide ``names`` (default: ``hidden_modules()``) from every later import; already imported ones stay."""
    finder = HiddenModules(hidden_modules() if names is None else names)
    sys.meta_path.insert(0, finder)
    return finder


def main() -> None:
    """The console script the image runs (``inference-placement``, looked up as installed), with ``sys.argv``."""
    install()
    (script,) = metadata.entry_points(group="console_scripts", name="inference-placement")
    script.load()()


if __name__ == "__main__":
    main()
