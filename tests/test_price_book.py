"""The price book: the packaged default loads, the reference scenario is a price book, broken ones name the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from inference_placement.policy.price_book import (
    PriceBook,
    PriceBookError,
    default_price_book,
    load_price_book,
    price_book_from_mapping,
)
from tests.shared_files import shared_file

ROOT = Path(__file__).resolve().parents[1]
PACKAGED = ROOT / "operator" / "inference_placement" / "data" / "price-book.yaml"


def _packaged() -> dict[str, object]:
    data = yaml.safe_load(PACKAGED.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_packaged_default_loads_with_the_reference_figures() -> None:
    pb = default_price_book()
    assert pb.prices.lambda_.gb_second == pytest.approx(0.0000166667)
    assert pb.prices.lambda_.per_request == pytest.approx(0.2e-6)
    assert pb.prices.cluster.gpu_hour["nvidia-a100-80gb"] == pytest.approx(5.12)
    assert pb.prices.cloudrun.gpu_second["nvidia-l4"] == pytest.approx(0.0001867)
    assert pb.platforms.lambda_.max_memory_mb == 10240
    assert pb.platforms.cloudrun.gpu_types == ["nvidia-l4", "nvidia-rtx-pro-6000"]
    assert pb.migration.drain_seconds == 30


def test_reference_scenario_is_a_price_book_plus_profiles() -> None:
    raw = yaml.safe_load(shared_file("scenario/reference.yaml").read_text(encoding="utf-8"))
    raw.pop("profiles")
    raw.pop("benchmark")
    pb = price_book_from_mapping(raw)
    default = default_price_book()
    # the default starts from the reference figures: every reference price is the default's
    assert pb.prices.cluster.gpu_hour == default.prices.cluster.gpu_hour
    assert pb.prices.lambda_ == default.prices.lambda_
    run, default_run = pb.prices.cloudrun, default.prices.cloudrun
    assert (run.request_based, run.instance_based) == (default_run.request_based, default_run.instance_based)
    # the default adds the 2026 GPUs (RTX PRO 6000) and the zonal-redundancy prices; the reference's L4 is the same
    assert run.gpu_second.items() <= default_run.gpu_second.items()
    assert pb.cloudrun_gpu_second("nvidia-l4") == default.cloudrun_gpu_second("nvidia-l4")
    assert pb.platforms.lambda_ == default.platforms.lambda_
    assert pb.platforms.cloudrun.gpu_instance("nvidia-l4") == default.platforms.cloudrun.gpu_instance("nvidia-l4")


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        pytest.param(("prices", "lambda", "gb_second"), -1, "prices.lambda.gb_second", id="negative-price"),
        pytest.param(("prices", "cluster", "spot_discount"), 1.5, "prices.cluster.spot_discount", id="discount-over-1"),
        pytest.param(
            ("platforms", "lambda", "keep_alive_idle_seconds"), "soon", "keep_alive_idle_seconds", id="not-a-number"
        ),
        pytest.param(("prices", "cloudrun", "request_based", "per_requets"), 1, "per_requets", id="typo-field"),
        pytest.param(("platforms", "cluster", "gpu_types"), ["nvidia-b200"], "nvidia-b200", id="gpu-without-price"),
        pytest.param(
            ("prices", "cluster", "mig_profiles", "nvidia-a100-80gb", "1g.10gb"), 9, "1g.10gb", id="mig-over-7-slices"
        ),
    ],
)
def test_broken_price_book_names_the_field(path: tuple[str, ...], value: object, field: str) -> None:
    data = _packaged()
    node: dict[str, object] = data
    for key in path[:-1]:
        child = node[key]
        assert isinstance(child, dict)
        node = child
    node[path[-1]] = value
    with pytest.raises(PriceBookError) as err:
        load_price_book(yaml.safe_dump(data))
    assert field in str(err.value)


def test_not_yaml_and_not_a_mapping_are_clear_errors() -> None:
    with pytest.raises(PriceBookError, match="not valid YAML"):
        load_price_book("prices: [unclosed")
    with pytest.raises(PriceBookError, match="mapping"):
        load_price_book("- just\n- a list\n")


def test_missing_section_is_named() -> None:
    data = _packaged()
    del data["platforms"]
    with pytest.raises(PriceBookError, match="platforms"):
        load_price_book(yaml.safe_dump(data))


def test_price_book_is_immutable() -> None:
    pb: PriceBook = default_price_book()
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen error type is an implementation detail
        pb.prices.lambda_.gb_second = 0.0  # type: ignore[misc]  # the write under test is the one mypy forbids
