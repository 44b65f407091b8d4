"""Cold starts measured, not assumed: the price book's cold start is the prior, the operator's observations update it.

The price book gives every target a cold start for a model size (``economics.py``: start-up base plus size / load
rate) and a migration lead (deploy plus that cold start). The operator observes real ones (the router's
first-request latencies after a scale-from-zero: the activator's holds on the cluster, the first request after an
idle gap on Cloud Run and Lambda, ``policy/first_request.py``; a migration's start until its target passed its
own health check; see ``controller/reconciler.py``) and keeps the last ``MAX_SAMPLES`` of each per target in
``status.coldStart`` for the model size they were measured on. The estimate the policy uses is a shrinkage blend of
the two (the same for cold starts and leads):

    estimate = (1 - w) * assumed + w * median(samples),    w = n / (n + k)

It is the posterior mean of a normal-normal model where the book value is worth ``k`` observations,
``k = sigma^2 / tau^2``: ``sigma`` is the spread of one measured cold start around the platform's typical one
and ``tau`` is how far the book's typical value is off for a given deployment, both relative. Measured cold starts
of one model on one platform vary by about +-50% (image cached on the node or not, instance placement, the
activator's poll and the reconcile's reaction included), and the median of ``n`` samples has ~1.25x the mean's
standard error, so ``sigma`` ~ 0.6; the price book's figures are vendor and benchmark medians that match a real
deployment within about +-30% (``tau`` ~ 0.3). ``k = (0.6 / 0.3)^2 = 4``: with 1 sample the book keeps 80% of the
weight, with 4 samples half, with 20 (``MAX_SAMPLES``) the measurements carry 83%. The median rather than the mean,
so one slow outlier (a node pulling the image for the first time) moves the estimate by one rank, not by its size.

Garbage is refused per sample, with a reason (``screen``): a non-number, NaN or infinity, a value of zero or less
(no cold start takes no time: a measurement of a warm request or a clock skew), or one over ``ABSURD_SECONDS``
(no platform's cold start is an hour: a stuck rollout or an operator that was down during the wake).

Pure: numbers in, numbers out; the controller, ``explain`` and tests call it. ``calibrated_price_book`` feeds the
estimate to the policy through the same input that carries the book's cold starts today (the price book), so
``decide``, the accelerator choice and the scale-to-zero answer all see one number.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from inference_placement.api.spec import InferenceWorkloadSpec, TargetName
from inference_placement.api.status import (
    MAX_COLD_START_SAMPLES,
    ColdStartStatus,
    ColdStartTargetStatus,
    MeasuredDuration,
    ProvisionTimeStatus,
)
from inference_placement.policy.economics import economics_for
from inference_placement.policy.price_book import PriceBook

__all__ = [
    "ABSURD_SECONDS",
    "MAX_SAMPLES",
    "SHRINKAGE_K",
    "ColdStartEstimate",
    "MeasuredTarget",
    "assumed_provision",
    "assumed_cold_start",
    "calibrated_price_book",
    "cold_start_status",
    "estimate_cold_start",
    "measured_estimates",
    "measured_price_book",
    "record_sample",
    "screen",
]

SHRINKAGE_K = 4.0
"""Pseudo-observations the price book's value is worth (see the module's docstring for why 4)."""
MAX_SAMPLES = MAX_COLD_START_SAMPLES
"""Samples kept per target (the most recent): bounds status, and past ~20 the weight changes little (83% -> 91% at
40) while older samples describe a platform that may have changed (node images, a new runtime)."""
ABSURD_SECONDS = 3600.0
"""A measured cold start or lead above this is refused as a broken measurement, not a slow platform."""


@dataclass(frozen=True)
class ColdStartEstimate:
    """One target's cold start: the book's, the measured one and the blend the policy uses."""

    assumed_seconds: float
    """The price book's cold start for this model size (the prior)."""
    measured_seconds: float | None
    """Median of the accepted samples; None without any."""
    samples: int
    """Accepted samples."""
    weight: float
    """Weight of the measurement in the estimate, n / (n + k)."""
    seconds: float
    """The estimate the policy uses."""
    rejected: tuple[str, ...] = ()
    """Why each refused sample was refused."""


def _reason(value: object) -> str | None:
    """Why a sample is refused, or None when it is a usable cold start in seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{value!r} is not a number"
    seconds = float(value)
    if not math.isfinite(seconds):
        return f"{seconds} is not finite"
    if seconds <= 0.0:
        return f"{seconds:g}s: a start takes time (a warm request or a clock skew)"
    if seconds > ABSURD_SECONDS:
        return f"{seconds:g}s > {ABSURD_SECONDS:g}s: a broken measurement (a stuck rollout, or the operator was down)"
    return None


def screen(samples: Iterable[object]) -> tuple[tuple[float, ...], tuple[str, ...]]:
    """The usable samples (in order) and a reason for each refused one."""
    kept: list[float] = []
    refused: list[str] = []
    for value in samples:
        reason = _reason(value)
        if reason is None:
            kept.append(float(value))  # type: ignore[arg-type]  # _reason checked it is an int or float
        else:
            refused.append(reason)
    return tuple(kept), tuple(refused)


def estimate_cold_start(assumed_seconds: float, samples: Iterable[object], k: float = SHRINKAGE_K) -> ColdStartEstimate:
    """The blend of the book's ``assumed_seconds`` with the median of the usable ``samples`` (at most the last
    ``MAX_SAMPLES`` of them), weight n / (n + k)."""
    if not (math.isfinite(k) and k >= 0.0):
        raise ValueError(f"shrinkage k must be a finite number >= 0, not {k!r}")
    kept, refused = screen(samples)
    kept = kept[-MAX_SAMPLES:]
    n = len(kept)
    if n == 0:
        return ColdStartEstimate(assumed_seconds, None, 0, 0.0, assumed_seconds, refused)
    # the median of at most MAX_SAMPLES floats, as numpy's (the middle one, or the mean of the middle two: (a + b) / 2
    # in both), without numpy's per-call overhead: this runs for every measured target on every reconcile
    measured = float(statistics.median(kept))
    weight = n / (n + k)
    blended = (1.0 - weight) * assumed_seconds + weight * measured
    return ColdStartEstimate(assumed_seconds, measured, n, weight, blended, refused)


def record_sample(samples: Sequence[float], value: object) -> tuple[tuple[float, ...], str | None]:
    """``samples`` with ``value`` appended (the oldest dropped past ``MAX_SAMPLES``), or unchanged and the reason
    ``value`` was refused."""
    reason = _reason(value)
    if reason is not None:
        return tuple(samples), reason
    kept, _ = screen(samples)
    return (*kept, float(value))[-MAX_SAMPLES:], None  # type: ignore[arg-type]  # _reason checked it


def assumed_cold_start(spec: InferenceWorkloadSpec, price_book: PriceBook, target: TargetName) -> float | None:
    """The price book's cold start of ``spec``'s model on ``target``; None when the book cannot price it there."""
    econ = economics_for(target, spec, price_book)
    return econ.cold_start_seconds if econ is not None else None


def assumed_provision(spec: InferenceWorkloadSpec, price_book: PriceBook, target: TargetName) -> float | None:
    """The price book's migration lead (deploy plus the first replica or instance warm) of ``spec`` on ``target``,
    without node provisioning; None when the book cannot price it there."""
    econ = economics_for(target, spec, price_book)
    return econ.provision_seconds if econ is not None else None


def _scaled_cold_start(price_book: PriceBook, target: TargetName, assumed: float, estimate: float) -> tuple[str, Any]:
    """(field of ``Platforms``, the platform with its cold-start terms scaled from ``assumed`` to ``estimate``)."""
    platforms = price_book.platforms
    if target is TargetName.CLUSTER:
        c = platforms.cluster
        if assumed <= 0.0:
            return "cluster", c.model_copy(update={"pod_start_seconds": estimate})
        f = estimate / assumed
        return "cluster", c.model_copy(
            update={
                "pod_start_seconds": c.pod_start_seconds * f,
                "model_load_mb_per_second": c.model_load_mb_per_second / f,
            }
        )
    if target is TargetName.LAMBDA:
        lam = platforms.lambda_
        if assumed <= 0.0:
            return "lambda_", lam.model_copy(update={"cold_start_base_seconds": estimate})
        f = estimate / assumed
        return "lambda_", lam.model_copy(
            update={
                "cold_start_base_seconds": lam.cold_start_base_seconds * f,
                "model_load_mb_per_second": lam.model_load_mb_per_second / f,
            }
        )
    run = platforms.cloudrun
    if assumed <= 0.0:
        return "cloudrun", run.model_copy(
            update={"cold_start_base_seconds": estimate, "gpu_cold_start_base_seconds": estimate}
        )
    f = estimate / assumed
    return "cloudrun", run.model_copy(
        update={
            "cold_start_base_seconds": run.cold_start_base_seconds * f,
            "gpu_cold_start_base_seconds": run.gpu_cold_start_base_seconds * f,
            "model_load_mb_per_second": run.model_load_mb_per_second / f,
        }
    )


def _usable(value: float) -> bool:
    return math.isfinite(value) and value > 0.0


def calibrated_price_book(
    price_book: PriceBook,
    spec: InferenceWorkloadSpec,
    estimates: Mapping[TargetName, float],
    provisions: Mapping[TargetName, float] | None = None,
) -> PriceBook:
    """The price book as it applies to ``spec``'s model with the cold starts of ``estimates`` and the migration
    leads of ``provisions`` (seconds per target).

    A platform's cold start is ``base + size / load rate``; both terms are scaled by ``estimate / book`` (the base
    multiplied, the rate divided), so this spec's cold start becomes the estimate, and the migration lead moves
    with it (it is deploy plus the cold start). A serverless lead in ``provisions`` then sets the platform's deploy
    time to the lead less the cold start (never below zero); the cluster's lead is its cold start (plus a node when
    none is free), which the book has no separate term for, so a cluster entry there changes nothing. The result
    is a book for this one workload's model size. A figure equal to the book's, or not positive, is left as is."""
    platforms = price_book.platforms
    updates: dict[str, Any] = {}
    for target, estimate in estimates.items():
        assumed = assumed_cold_start(spec, price_book, target)
        if assumed is None or not _usable(estimate) or math.isclose(estimate, assumed):
            continue
        name, platform = _scaled_cold_start(price_book, target, assumed, estimate)
        updates[name] = platform
    book = price_book
    if updates:
        book = price_book.model_copy(update={"platforms": platforms.model_copy(update=updates)})
    deploys: dict[str, Any] = {}
    for target, lead in (provisions or {}).items():
        if target is TargetName.CLUSTER or not _usable(lead):
            continue
        assumed_lead = assumed_provision(spec, book, target)
        cold = assumed_cold_start(spec, book, target)
        if assumed_lead is None or cold is None or math.isclose(lead, assumed_lead):
            continue
        name = "lambda_" if target is TargetName.LAMBDA else "cloudrun"
        platform = getattr(book.platforms, name)
        deploys[name] = platform.model_copy(update={"deploy_seconds": max(0.0, lead - cold)})
    if deploys:
        book = book.model_copy(update={"platforms": book.platforms.model_copy(update=deploys)})
    return book


def _entry(status: ColdStartStatus | None, target: TargetName) -> ColdStartTargetStatus | None:
    if status is None:
        return None
    if target is TargetName.CLUSTER:
        return status.cluster
    return status.lambda_ if target is TargetName.LAMBDA else status.cloudrun


def _same_model(entry: ColdStartTargetStatus | None, spec: InferenceWorkloadSpec) -> ColdStartTargetStatus | None:
    """The entry when it was measured with the spec's model size (another size starts over), else None."""
    if entry is None or not math.isclose(entry.model_size_mb, spec.model.size_mb):
        return None
    return entry


def _samples(measured: MeasuredDuration | None) -> tuple[float, ...]:
    return tuple(measured.recent_seconds) if measured is not None else ()


@dataclass(frozen=True)
class MeasuredTarget:
    """One target's cold start and migration lead for a spec: the book's, blended with what was measured."""

    cold_start: ColdStartEstimate
    provision: ColdStartEstimate


def measured_estimates(
    spec: InferenceWorkloadSpec, price_book: PriceBook, status: ColdStartStatus | None
) -> dict[TargetName, MeasuredTarget]:
    """Per target the book prices, its cold start and migration lead estimates from the samples in ``status`` (the
    book's own without samples)."""
    out: dict[TargetName, MeasuredTarget] = {}
    for target in TargetName:
        econ = economics_for(target, spec, price_book)  # what assumed_cold_start and assumed_provision read
        if econ is None:
            continue
        cold, lead = econ.cold_start_seconds, econ.provision_seconds
        entry = _same_model(_entry(status, target), spec)
        out[target] = MeasuredTarget(
            estimate_cold_start(cold, _samples(entry)),
            estimate_cold_start(lead, _samples(entry.provision if entry is not None else None)),
        )
    return out


def measured_price_book(
    price_book: PriceBook, spec: InferenceWorkloadSpec, status: ColdStartStatus | None
) -> PriceBook:
    """The price book the policy decides ``spec`` with: the book's cold starts and serverless migration leads
    replaced by the estimates from the samples ``status.coldStart`` records (the book itself while nothing was
    measured)."""
    if status is None:
        return price_book
    estimates = measured_estimates(spec, price_book, status)
    return calibrated_price_book(
        price_book,
        spec,
        {t: e.cold_start.seconds for t, e in estimates.items() if e.cold_start.measured_seconds is not None},
        {t: e.provision.seconds for t, e in estimates.items() if e.provision.measured_seconds is not None},
    )


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _measured_fields(
    before: MeasuredDuration | None,
    assumed: float | None,
    sample: tuple[object] | None,
    source: str | None,
    stamp: str | None,
) -> dict[str, Any]:
    """The fields of a ``MeasuredDuration`` after recording ``sample`` (a 1-tuple; None = nothing measured now)."""
    recent = _samples(before)
    rejected = before.last_rejected if before is not None else None
    sampled_at = before.last_sample_at if before is not None else None
    how = before.source if before is not None else None
    if sample is not None:
        recent, reason = record_sample(recent, sample[0])
        if reason is None:
            sampled_at, how = stamp or sampled_at, source or how
        else:
            rejected = reason
    estimate = estimate_cold_start(assumed if assumed is not None else 0.0, recent)
    return {
        "assumed_seconds": _rounded(assumed),
        "measured_seconds": _rounded(estimate.measured_seconds),
        "estimate_seconds": _rounded(estimate.seconds) if assumed is not None else None,
        "samples": len(recent),
        "recent_seconds": [max(round(v, 3), 0.001) for v in recent],
        "source": how,
        "last_sample_at": sampled_at,
        "last_rejected": rejected,
    }


def cold_start_status(
    spec: InferenceWorkloadSpec,
    price_book: PriceBook,
    previous: ColdStartStatus | None,
    new_samples: Mapping[TargetName, float] | None = None,
    *,
    source: str | None = None,
    stamp: str | None = None,
    provision_samples: Mapping[TargetName, float] | None = None,
    provision_source: str | None = None,
) -> ColdStartStatus | None:
    """``status.coldStart`` after this reconcile: ``new_samples`` (cold starts, seconds per target, measured now at
    ``stamp`` by ``source``) and ``provision_samples`` (migration leads, by ``provision_source``) recorded, and each
    target's assumed, measured and estimated figures recomputed with the book in force. A target appears once it
    was measured (a refused sample is recorded with its reason); None while nothing was. Samples of another model
    size are dropped."""
    new_samples = new_samples or {}
    provision_samples = provision_samples or {}
    entries: dict[str, ColdStartTargetStatus] = {}
    for target in TargetName:
        recorded = _entry(previous, target)
        if recorded is None and target not in new_samples and target not in provision_samples:
            continue
        before = _same_model(recorded, spec)
        cold_sample = (new_samples[target],) if target in new_samples else None
        lead_sample = (provision_samples[target],) if target in provision_samples else None
        lead_before = before.provision if before is not None else None
        provision = None
        if lead_before is not None or lead_sample is not None:
            provision = ProvisionTimeStatus(
                **_measured_fields(
                    lead_before, assumed_provision(spec, price_book, target), lead_sample, provision_source, stamp
                )
            )
        entries["lambda_" if target is TargetName.LAMBDA else target.value] = ColdStartTargetStatus(
            model_size_mb=spec.model.size_mb,
            provision=provision,
            **_measured_fields(before, assumed_cold_start(spec, price_book, target), cold_sample, source, stamp),
        )
    if not entries:
        return None
    return ColdStartStatus(**entries)
