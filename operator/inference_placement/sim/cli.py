"""``inference-placement simulate`` (a what-if on your own traffic) and ``inference-placement bench``."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from inference_placement.api.spec import InferenceWorkloadSpec
from inference_placement.commandline import (
    CommandError,
    ExitCode,
    load_yaml_file,
    one_line,
    require_extra,
    unreachable,
)
from inference_placement.policy.price_book import PriceBook
from inference_placement.sim.simulator import WorkloadResult
from inference_placement.sim.traces import Trace

__all__ = ["TrafficSource", "WhatIf", "read_price_book_or_scenario", "register", "what_if"]


def _parse_time(text: str, flag: str) -> datetime:
    try:
        return datetime.fromtimestamp(float(text), tz=UTC)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{text!r} is neither RFC 3339 nor epoch seconds", param_hint=flag) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _prometheus_rates(url: str, query: str, start: datetime, end: datetime, step: float) -> list[float]:
    """The query's value at each step of [start, end] (several series are summed; a step without a sample is 0)."""
    params = urllib.parse.urlencode(
        {"query": query, "start": start.timestamp(), "end": end.timestamp(), "step": f"{step:g}"}
    )
    where = f"Prometheus at {url}"
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/api/v1/query_range?{params}", timeout=60) as response:
            body: dict[str, Any] = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as err:  # Prometheus answers a bad query with 400 and its reason in JSON
        try:
            reason = json.loads(err.read().decode("utf-8")).get("error") or err.reason
        except ValueError:
            reason = err.reason
        raise CommandError(f"{where} refused the query (HTTP {err.code}): {reason}", ExitCode.UNREACHABLE) from None
    except (urllib.error.URLError, OSError) as err:
        raise unreachable(where, err) from None
    except ValueError:
        raise CommandError(
            f"{where} answered something that is not JSON (is it Prometheus?)", ExitCode.UNREACHABLE
        ) from None
    if body.get("status") != "success":
        raise CommandError(f"{where} answered {body.get('status')}: {body.get('error')}", ExitCode.UNREACHABLE)
    series = body.get("data", {}).get("result", [])
    if not series:
        raise CommandError(f"the query returned no series between {start.isoformat()} and {end.isoformat()}")
    steps = math.floor((end - start).total_seconds() / step) + 1
    rates = [float("nan")] * steps
    # a query with several series (e.g. per pod) is summed
    for s in series:
        for stamp, value in s.get("values", []):
            i = round((float(stamp) - start.timestamp()) / step)
            if 0 <= i < steps:
                v = float(value)
                rates[i] = v if math.isnan(rates[i]) else rates[i] + v
    return [0.0 if math.isnan(r) else r for r in rates]


def _workload_name(document: Any, path: Path) -> str:
    """The workload's ``metadata.name``, else the file's stem (a bare spec has no name)."""
    if isinstance(document, dict):
        name = (document.get("metadata") or {}).get("name")
        if isinstance(name, str) and name:
            return name
    return path.stem


@dataclass(frozen=True)
class TrafficSource:
    """Where a what-if's traffic comes from: a trace file (and its row) or a Prometheus range query."""

    trace: Path | None = None
    row: int = 0
    prometheus: str | None = None
    query: str | None = None
    start: str | None = None
    end: str | None = None
    step_seconds: float = 60.0

    def check(self) -> None:
        """The flags' usage errors, before any work."""
        if self.prometheus is not None and not (self.query and self.start and self.end):
            raise typer.BadParameter("--prometheus needs --query, --start and --end")
        if self.prometheus is None and self.trace is None:
            raise typer.BadParameter("give --trace FILE or --prometheus URL --query Q --start T --end T")

    def load(self) -> tuple[Trace, int]:
        """The trace and the row of it to replay."""
        from inference_placement.sim.traces import TraceError, load_trace, minute_trace_from_rates

        self.check()
        if self.prometheus is not None:
            assert self.query and self.start and self.end  # checked
            t0, t1 = _parse_time(self.start, "--start"), _parse_time(self.end, "--end")
            if t1 <= t0:
                raise typer.BadParameter("--end must be after --start")
            import numpy as np

            rates = _prometheus_rates(self.prometheus, self.query, t0, t1, self.step_seconds)
            return minute_trace_from_rates(self.query, np.array(rates), self.step_seconds, t0), 0
        assert self.trace is not None  # checked
        if not self.trace.is_file():
            raise CommandError(f"--trace {self.trace}: no such file", ExitCode.INPUT)
        try:
            loaded = load_trace(self.trace, step_seconds=self.step_seconds)
        except (TraceError, ValueError, OSError) as err:
            raise CommandError(f"--trace {self.trace}: {err}", ExitCode.INPUT) from None
        if not 0 <= self.row < loaded.workloads:
            raise typer.BadParameter(f"the trace has {loaded.workloads} workload(s)", param_hint="--row")
        return loaded, self.row


@dataclass(frozen=True)
class WhatIf:
    """One workload's traffic through every policy (and the offline optimum)."""

    name: str
    spec: InferenceWorkloadSpec
    results: list[WorkloadResult]
    requests: int
    requests_per_step: Any
    step_seconds: float

    @property
    def title(self) -> str:
        hours = len(self.requests_per_step) * self.step_seconds / 3600
        return f"{self.name} on {self.requests:,} requests over {hours:.1f} h"

    @property
    def verdict(self) -> str:
        from inference_placement.sim.report import simulation_verdict

        return simulation_verdict(self.results)

    def to_json(self, workload: str) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "workload": workload,
            "requests": self.requests,
            "policies": {
                r.policy: {
                    "cost_usd": r.cost_usd,
                    "attainment": r.attainment,
                    "meets_slo": r.meets_slo,
                    "cold_starts": r.cold_starts,
                    "migrations": r.migrations,
                }
                for r in self.results
            },
        }

    def plot(self, path: Path) -> None:
        from inference_placement.sim.report import plot_simulation

        plot_simulation(
            self.results,
            self.requests_per_step,
            self.step_seconds,
            path,
            workload=self.name,
            subtitle=self.title,
            slo_attainment=self.spec.slo.attainment,
        )


def read_price_book_or_scenario(path: Path | None, flag: str = "--price-book") -> PriceBook:
    """A price book (or a scenario YAML, whose profiles and rows are ignored); the packaged one when None."""
    from inference_placement.policy.price_book import default_price_book, price_book_from_mapping

    if path is None:
        return default_price_book()
    data = load_yaml_file(path, flag)
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k not in ("profiles", "benchmark")}
    try:
        return price_book_from_mapping(data, source=str(path))
    except (ValueError, TypeError) as err:  # PriceBookError is a ValueError
        raise CommandError(f"{flag} {path}: invalid: {one_line(err)}", ExitCode.INPUT) from None


def what_if(
    name: str,
    spec: InferenceWorkloadSpec,
    traffic: TrafficSource,
    price_book: PriceBook,
    *,
    console: Any,
    service_formula: str | None = None,
    first_token: bool = False,
    optimum: bool = True,
    warmup_seconds: float = 300.0,
) -> WhatIf:
    """Run ``spec`` on ``traffic`` through every online policy (and the optimum), with a progress display."""
    from rich.progress import Progress

    from inference_placement.sim.optimum import optimum as run_optimum
    from inference_placement.sim.registry import online_policies
    from inference_placement.sim.simulator import SimPolicy, feasible_economics
    from inference_placement.sim.simulator import simulate as run
    from inference_placement.sim.workloads import spec_workloads

    loaded, row = traffic.load()
    sim_workload = spec_workloads(loaded, spec, formula_text=service_formula, first_token=first_token, rows=[row])[0]
    economics = feasible_economics(spec, price_book)
    if not economics:
        raise CommandError(
            f"{name}: no allowed target can run it with this price book (see the spec's allowedTargets and limits)"
        )
    policies: list[SimPolicy] = online_policies()
    results: list[WorkloadResult] = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("simulating", total=len(policies) + int(optimum))
        for policy in policies:
            progress.update(task, description=f"simulating {policy.name}")
            check = getattr(policy, "applicable", None)
            if check is None or check(economics):
                results.append(
                    run(sim_workload, policy, price_book, economics=economics, warmup_seconds=warmup_seconds)
                )
            progress.advance(task)
        if optimum:
            progress.update(task, description="offline optimum")
            results.append(run_optimum(sim_workload, economics, price_book, warmup_seconds=warmup_seconds))
            progress.advance(task)
    return WhatIf(
        name=name,
        spec=spec,
        results=results,
        requests=sim_workload.requests.count,
        requests_per_step=sim_workload.requests.per_step(),
        step_seconds=sim_workload.requests.step_seconds,
    )


def register(app: typer.Typer) -> None:
    @app.command()
    def simulate(
        workload: Annotated[Path, typer.Option("--workload", help="InferenceWorkload YAML (or a bare spec).")],
        trace: Annotated[Optional[Path], typer.Option("--trace", help="Trace CSV: per-step matrix or per-request.")] = (
            None
        ),
        row: Annotated[int, typer.Option("--row", help="Row of a per-step matrix (one workload per row).")] = 0,
        prometheus: Annotated[Optional[str], typer.Option("--prometheus", help="Prometheus base URL.")] = None,
        query: Annotated[Optional[str], typer.Option("--query", help="PromQL giving requests/s.")] = None,
        start: Annotated[Optional[str], typer.Option("--start", help="Range start (RFC 3339 or epoch).")] = None,
        end: Annotated[Optional[str], typer.Option("--end", help="Range end (RFC 3339 or epoch).")] = None,
        price_book: Annotated[Optional[Path], typer.Option("--price-book", help="Price book or scenario YAML.")] = None,
        step_seconds: Annotated[float, typer.Option("--step-seconds", help="Metrics step and policy tick.")] = 60.0,
        first_token: Annotated[
            bool, typer.Option("--first-token", help="The SLO latency is time to first token.")
        ] = False,
        service_formula: Annotated[
            Optional[str],
            typer.Option("--service-formula", help="e.g. '0.0002 * context_tokens + 0.02 * generated_tokens'."),
        ] = None,
        optimum: Annotated[
            bool, typer.Option("--optimum/--no-optimum", help="Also compute the offline optimum.")
        ] = True,
        plot: Annotated[
            Optional[Path],
            typer.Option("--plot", help="Write traffic, placement per policy, SLO and cost to a PNG (matplotlib)."),
        ] = None,
        warmup_seconds: Annotated[
            float, typer.Option("--warmup-seconds", help="Run but neither bill nor score the first seconds.")
        ] = 300.0,
        json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the results as JSON.")] = None,
    ) -> None:
        """What-if: run your workload's traffic through every policy and compare cost and SLO."""
        from rich.console import Console

        from inference_placement.api.validation import parse_spec
        from inference_placement.sim.report import simulation_table

        if plot is not None:  # refused before any work, not after the simulation
            require_extra("matplotlib", "plot", "--plot")
        traffic = TrafficSource(trace, row, prometheus, query, start, end, step_seconds)
        traffic.check()
        console = Console()
        raw = load_yaml_file(workload, "--workload")
        body = raw.get("spec", raw) if isinstance(raw, dict) else raw
        spec, problems = parse_spec(body)
        if spec is None or problems:
            listed = "; ".join(str(problem) for problem in problems) or "not an InferenceWorkload spec"
            raise CommandError(f"--workload {workload}: invalid spec: {listed}", ExitCode.INPUT)
        pb = read_price_book_or_scenario(price_book)
        result = what_if(
            _workload_name(raw, workload),
            spec,
            traffic,
            pb,
            console=console,
            service_formula=service_formula,
            first_token=first_token,
            optimum=optimum,
            warmup_seconds=warmup_seconds,
        )
        console.print(f"[bold]{result.verdict}[/bold]")
        console.print(simulation_table(result.results, result.title))
        if plot is not None:
            result.plot(plot)
            console.print(f"plot written to {plot}")
        if json_out is not None:
            json_out.write_text(json.dumps(result.to_json(str(workload)), indent=2), encoding="utf-8")

    @app.command()
    def bench(
        scenario: Annotated[Path, typer.Option("--scenario", help="Scenario YAML (price book + profiles + rows).")],
        traces: Annotated[Path, typer.Option("--traces", help="Directory the scenario's trace paths are under.")],
        json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the results as JSON.")] = None,
        jobs: Annotated[Optional[int], typer.Option("--jobs", help="Worker processes (default: all cores).")] = None,
        step_seconds: Annotated[float, typer.Option("--step-seconds", help="Metrics step and policy tick.")] = 60.0,
        warmup_seconds: Annotated[
            float, typer.Option("--warmup-seconds", help="Run but neither bill nor score the first seconds.")
        ] = 300.0,
    ) -> None:
        """Every benchmark row of the scenario x every policy, with the offline optimum, in one run."""
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from inference_placement.sim.bench import run_bench
        from inference_placement.sim.report import print_bench
        from inference_placement.sim.scenario import ScenarioError
        from inference_placement.sim.traces import TraceError

        if not scenario.is_file():
            raise CommandError(f"--scenario {scenario}: no such file", ExitCode.INPUT)
        if not traces.is_dir():
            raise CommandError(f"--traces {traces}: no such directory", ExitCode.INPUT)
        console = Console()
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task("workloads", total=None)

            def tick(done: int, total: int, label: str) -> None:
                progress.update(task, completed=done, total=total, description=label)

            try:
                result = run_bench(
                    scenario, traces, jobs=jobs, step_seconds=step_seconds, warmup_seconds=warmup_seconds, progress=tick
                )
            except (ScenarioError, TraceError) as err:
                raise CommandError(f"--scenario {scenario}: {err}", ExitCode.INPUT) from None
            except FileNotFoundError as err:  # a trace the scenario names is not under --traces
                raise CommandError(f"--traces {traces}: {err.filename or err}: no such file", ExitCode.INPUT) from None
        print_bench(result, console)
        if json_out is not None:
            json_out.write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
            console.print(f"results written to {json_out}")
