"""inference-placement: a Kubernetes operator that places inference workloads on cluster GPUs, Cloud Run or Lambda."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("inference-placement")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
