"""Cloud Run GPUs as they are in 2026, Lambda Managed Instances as facts: the price book, feasibility, the cost model.

Cloud Run attaches one NVIDIA L4 (at least 4 CPU / 16 GiB) or RTX PRO 6000 Blackwell (at least 20 CPU / 80 GiB) per
instance; GPU zonal redundancy is on by default and priced higher, and the book prices what the target deploys.
Lambda's GPUs exist only on Lambda Managed Instances, which the Lambda target does not deploy: they are never a
placement, and never a scale-to-zero one.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from inference_placement.api.spec import InferenceWorkloadSpec, TargetName
from inference_placement.api.validation import semantic_problems
from inference_placement.controller.reconciler import Reconciler, TickInputs
from inference_placement.policy.capacity import ClusterCapacity
from inference_placement.policy.economics import economics_for
from inference_placement.policy.feasibility import assess_feasibility, lambda_managed_instances_fact
from inference_placement.policy.price_book import PriceBook, PriceBookError, default_price_book, price_book_from_mapping
from inference_placement.targets.cloudrun import CloudRunTarget
from tests.cloudrun_standin import CloudRunStandin
from tests.plugins.cloud import TEST_PROJECT
from tests.plugins.memory_api import MemoryWriter, inline_tenancy

BOOK = default_price_book()


def _spec(accelerator: str = "none", *, cpu: str = "1", memory: str = "2Gi", **extra: Any) -> InferenceWorkloadSpec:
    raw: dict[str, Any] = {
        "model": {"image": "m:1", "sizeMb": 2000, "cpu": cpu, "memory": memory},
        "accelerator": {"type": accelerator},
        "placement": {"allowedTargets": ["cluster", "cloudrun"]},
        "cloudRun": {"project": "p"},
    }
    raw.update(extra)
    return InferenceWorkloadSpec.model_validate(raw)


def _book(**platform: Any) -> PriceBook:
    raw = BOOK.model_dump(by_alias=True)
    raw["platforms"]["cloudrun"].update(platform)
    return price_book_from_mapping(raw)


def test_the_book_lists_cloud_runs_2026_gpus_with_their_minimums_and_both_prices() -> None:
    run = BOOK.platforms.cloudrun
    assert run.gpu_types == ["nvidia-l4", "nvidia-rtx-pro-6000"]
    l4, rtx = run.gpu_instance("nvidia-l4"), run.gpu_instance("nvidia-rtx-pro-6000")
    assert (l4.min_vcpu, l4.min_memory_gib, l4.max_vcpu, l4.max_memory_gib) == (4, 16, 8, 32)
    assert (rtx.min_vcpu, rtx.min_memory_gib) == (20, 80)
    prices = BOOK.prices.cloudrun
    assert prices.gpu_second == pytest.approx({"nvidia-l4": 0.0001867, "nvidia-rtx-pro-6000": 0.00036522})
    assert prices.gpu_second_zonal_redundancy == pytest.approx(
        {"nvidia-l4": 0.0002909, "nvidia-rtx-pro-6000": 0.00056913}
    )
    # the operator deploys without zonal redundancy, so that is the price that applies
    assert run.gpu_zonal_redundancy is False
    assert BOOK.cloudrun_gpu_second("nvidia-l4") == pytest.approx(0.0001867)
    assert _book(gpu_zonal_redundancy=True).cloudrun_gpu_second("nvidia-l4") == pytest.approx(0.0002909)


def test_the_cost_model_prices_the_zonal_redundancy_that_is_deployed() -> None:
    spec = _spec("nvidia-l4", cpu="4", memory="16Gi")
    without = economics_for(TargetName.CLOUDRUN, spec, BOOK)
    with_redundancy = economics_for(TargetName.CLOUDRUN, spec, _book(gpu_zonal_redundancy=True))
    assert without is not None and with_redundancy is not None
    assert with_redundancy.instance_usd_per_second - without.instance_usd_per_second == pytest.approx(
        0.0002909 - 0.0001867
    )


def test_an_rtx_pro_6000_instance_is_priced_at_its_20_cpu_80_gib_minimum() -> None:
    econ = economics_for(TargetName.CLOUDRUN, _spec("nvidia-rtx-pro-6000", cpu="2", memory="8Gi"), BOOK)
    assert econ is not None
    rates = BOOK.prices.cloudrun.instance_based
    assert econ.instance_usd_per_second == pytest.approx(20 * rates.vcpu_second + 80 * rates.gib_second + 0.00036522)


@pytest.mark.parametrize(
    ("accelerator", "cpu", "memory", "reason"),
    [
        pytest.param("nvidia-l4", "4", "16Gi", None, id="l4-minimum"),
        pytest.param("nvidia-l4", "1", "2Gi", None, id="l4-raised-to-its-minimum"),
        pytest.param("nvidia-l4", "8", "32Gi", None, id="l4-largest"),
        pytest.param("nvidia-l4", "4", "48Gi", "48 GiB > cloudrun max 32 GiB with nvidia-l4", id="l4-too-much-memory"),
        pytest.param("nvidia-l4", "12", "32Gi", "12 vCPU > cloudrun max 8 vCPU with nvidia-l4", id="l4-too-many-cpus"),
        pytest.param("nvidia-rtx-pro-6000", "4", "16Gi", None, id="rtx-raised-to-its-minimum"),
        pytest.param("nvidia-rtx-pro-6000", "20", "80Gi", None, id="rtx-minimum"),
        pytest.param(
            "nvidia-rtx-pro-6000",
            "24",
            "80Gi",
            "24 vCPU > cloudrun max 20 vCPU with nvidia-rtx-pro-6000",
            id="rtx-cpus",
        ),
        pytest.param(
            "nvidia-a100-80gb", "4", "16Gi", "cloudrun GPUs are nvidia-l4, nvidia-rtx-pro-6000 only", id="a100"
        ),
        pytest.param("none", "12", "8Gi", "12 vCPU > cloudrun max 8 vCPU", id="cpu-only-too-many-cpus"),
        pytest.param("none", "8", "48Gi", "48 GiB > cloudrun max 32 GiB", id="cpu-only-too-much-memory"),
    ],
)
def test_feasibility_refuses_gpu_cpu_memory_combinations_cloud_run_rejects(
    accelerator: str, cpu: str, memory: str, reason: str | None
) -> None:
    spec = _spec(accelerator, cpu=cpu, memory=memory)
    found = assess_feasibility(spec, BOOK, ClusterCapacity()).infeasible.get(TargetName.CLOUDRUN)
    if reason is None:
        assert found is None
    else:
        assert found is not None and reason in found


def test_the_spec_accepts_an_rtx_pro_6000_on_cloud_run_and_refuses_other_gpus() -> None:
    assert semantic_problems(_spec("nvidia-rtx-pro-6000")) == []
    [problem] = semantic_problems(_spec("nvidia-h100-80gb"))
    assert problem.field == "placement.allowedTargets"
    assert "nvidia-l4 and nvidia-rtx-pro-6000" in problem.message


def test_lambda_managed_instances_are_facts_never_a_target_and_never_scale_to_zero() -> None:
    lmi = BOOK.platforms.lambda_managed_instances
    prices = BOOK.prices.lambda_managed_instances
    assert lmi is not None and prices is not None
    assert lmi.deployed_by_operator is False
    assert lmi.scale_to_zero is False and lmi.default_min_instances == 3
    assert lmi.gpu_scale_from_zero_seconds >= 60  # "several minutes"
    assert (lmi.gpu_package_type, lmi.gpu_architecture) == ("Image", "x86_64")
    assert lmi.gpu_accelerator_memory_gib == [3, 6, 12, 16, 24, 48]
    assert prices.management_fee_fraction == pytest.approx(0.15)
    assert prices.per_request == pytest.approx(0.2e-6)
    assert lmi.instance_types["g6.xlarge"].gpu_type == "nvidia-l4"
    # no TargetName for them: the policy cannot place a workload there
    assert {t.value for t in TargetName} == {"cluster", "cloudrun", "lambda"}


def test_a_gpu_workload_refused_on_lambda_says_what_managed_instances_would_offer() -> None:
    spec = _spec("nvidia-l4", cpu="4", memory="16Gi")
    fact = lambda_managed_instances_fact(spec, BOOK)
    assert fact is not None
    assert "g6.xlarge at $0.926/h with the 15% management fee" in fact
    assert "scaling from zero takes ~5 min" in fact and "not deployed by this operator" in fact
    allowed = spec.model_copy(
        update={"placement": spec.placement.model_copy(update={"allowed_targets": [TargetName.LAMBDA]})}
    )
    reason = assess_feasibility(allowed, BOOK, ClusterCapacity()).infeasible[TargetName.LAMBDA]
    assert reason.startswith("lambda has no GPU (model needs nvidia-l4); Lambda Managed Instances could run it")
    # a GPU no managed instance type carries, and a CPU workload (plain Lambda's own case)
    assert "no instance with nvidia-h100-80gb" in (lambda_managed_instances_fact(_spec("nvidia-h100-80gb"), BOOK) or "")
    assert lambda_managed_instances_fact(_spec(), BOOK) is None


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        pytest.param(
            lambda raw: (
                raw["prices"]["cloudrun"]["gpu_second_zonal_redundancy"].pop("nvidia-rtx-pro-6000"),
                raw["platforms"]["cloudrun"].update(gpu_zonal_redundancy=True),
            ),
            "prices.cloudrun.gpu_second_zonal_redundancy has no price",
            id="zonal-price-missing",
        ),
        pytest.param(
            lambda raw: raw["platforms"]["cloudrun"]["gpu_instances"].update(
                {"nvidia-h100-80gb": {"min_vcpu": 1, "min_memory_gib": 1, "max_vcpu": 1, "max_memory_gib": 1}}
            ),
            "gpu_types does not list",
            id="sizes-of-an-unoffered-gpu",
        ),
        pytest.param(
            lambda raw: raw["platforms"]["cloudrun"]["gpu_instances"]["nvidia-l4"].update(max_vcpu=2),
            "max_vcpu 2 is below min_vcpu 4",
            id="sizes-upside-down",
        ),
        pytest.param(
            lambda raw: raw["platforms"]["lambda_managed_instances"].update(deployed_by_operator=True),
            "does not deploy to Lambda Managed Instances",
            id="lmi-as-a-target",
        ),
        pytest.param(
            lambda raw: raw["prices"]["lambda_managed_instances"]["instance_hour"].pop("g6.xlarge"),
            "lists g6.xlarge but prices.lambda_managed_instances.instance_hour has no price",
            id="lmi-instance-unpriced",
        ),
    ],
)
def test_inconsistent_gpu_facts_are_refused_naming_the_field(mutate: Any, message: str) -> None:
    raw = BOOK.model_dump(by_alias=True)
    mutate(raw)
    with pytest.raises(PriceBookError, match=message):
        price_book_from_mapping(raw)


def test_a_book_without_the_2026_sections_still_loads_as_before() -> None:
    """The benchmark's reference scenario has no gpu_instances, zonal-redundancy prices or managed instances."""
    raw = BOOK.model_dump(by_alias=True)
    for section in ("prices", "platforms"):
        raw[section].pop("lambda_managed_instances")
    raw["prices"]["cloudrun"].pop("gpu_second_zonal_redundancy")
    raw["prices"]["cloudrun"]["gpu_second"] = {"nvidia-l4": 0.0001867}
    for key in ("gpu_instances", "gpu_zonal_redundancy", "max_vcpu"):
        raw["platforms"]["cloudrun"].pop(key)
    raw["platforms"]["cloudrun"]["gpu_types"] = ["nvidia-l4"]
    book = price_book_from_mapping(raw)
    assert book.platforms.lambda_managed_instances is None
    l4 = book.platforms.cloudrun.gpu_instance("nvidia-l4")
    assert (l4.min_vcpu, l4.min_memory_gib, l4.max_vcpu, l4.max_memory_gib) == (4, 16, 8, 32)
    assert book.cloudrun_gpu_second("nvidia-l4") == pytest.approx(0.0001867)
    assert lambda_managed_instances_fact(_spec("nvidia-l4"), book) is None


def test_the_controller_deploys_the_zonal_redundancy_its_price_book_prices(
    cloudrun_target: CloudRunTarget, cloudrun_standin: CloudRunStandin
) -> None:
    """Reconciler -> Cloud Run target -> the Admin API stand-in: the packaged book (priced without zonal
    redundancy) yields gpuZonalRedundancyDisabled: true; a book pricing zonal redundancy turns it back on."""
    writer = MemoryWriter()
    reconciler = Reconciler(cast(Any, writer), {TargetName.CLOUDRUN: cloudrun_target}, tenancy=inline_tenancy())
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    body = {
        "metadata": {"name": "l4", "namespace": "unit", "uid": "uid-l4", "generation": 1, "finalizers": []},
        "spec": {
            "model": {"image": "us-docker.pkg.dev/p/r/m:1", "sizeMb": 500, "cpu": "4", "memory": "16Gi"},
            "accelerator": {"type": "nvidia-l4"},
            "placement": {"allowedTargets": ["cloudrun"], "pin": "cloudrun"},
            "cloudRun": {"project": TEST_PROJECT},
        },
    }
    writer.put(body)

    def deployed() -> bool:
        [service] = cloudrun_standin.services()
        return bool(service.template.gpu_zonal_redundancy_disabled)

    async def run() -> None:
        for book in (BOOK, _book(gpu_zonal_redundancy=True)):
            inputs = TickInputs(now=now, price_book=book, capacity=ClusterCapacity())
            await reconciler.reconcile(writer.objects[("unit", "l4")], inputs)
            assert deployed() is (not book.platforms.cloudrun.gpu_zonal_redundancy)

    asyncio.run(run())
