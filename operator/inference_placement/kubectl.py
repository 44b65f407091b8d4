"""``kubectl iw``: the kubectl plugin (the console script ``kubectl-iw``; ``deploy/krew/iw.yaml``).

``kubectl iw explain NAME``, ``kubectl iw simulate NAME --trace FILE`` and ``kubectl iw status [NAME]`` follow the
kubeconfig's current context and its namespace, as kubectl does (``--context``, ``-n``, ``--kubeconfig``), read
the price book the running operator uses (its Deployment's price-book ConfigMap, found by the chart's labels), put
the verdict first, and print tables or ``-o json|yaml``. ``explain`` is ``inference_placement.explain`` (the policy's
own ``decide``), ``simulate`` the simulator ``inference-placement simulate`` runs: no second decision path here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer

from inference_placement.api.workload import GROUP, PLURAL, VERSION
from inference_placement.commandline import (
    CommandError,
    OutputFormat,
    apiserver_error,
    compact_table,
    one_line,
    require_extra,
    require_kubeconfig,
    run_app,
)
from inference_placement.policy.price_book import PriceBook, PriceBookError, default_price_book, load_price_book

__all__ = [
    "OPERATOR_SELECTOR",
    "PRICE_BOOK_KEY",
    "PROG_NAME",
    "KubeContext",
    "PriceBookSource",
    "app",
    "explain_command",
    "main",
    "operator_price_book",
    "price_book_configmaps",
    "resolve_context",
    "simulate_command",
    "status_command",
    "status_rows",
    "workload_status",
]

PROG_NAME = "kubectl iw"
"""How the plugin names itself in usage and errors: kubectl runs the `kubectl-iw` executable as `kubectl iw`."""
OPERATOR_SELECTOR = "app.kubernetes.io/name=inference-placement,app.kubernetes.io/component=operator"
"""The chart's labels on the operator's Deployment (``charts/inference-placement/templates/_helpers.tpl``)."""
PRICE_BOOK_KEY = "price-book.yaml"
"""The key of the price book in its ConfigMap (the chart's, or ``priceBook.existingConfigMap``)."""

T = TypeVar("T")

app = typer.Typer(
    name="kubectl iw",
    help="InferenceWorkloads from kubectl: why each runs where it runs (explain), what-if on its traffic "
    "(simulate), and where each is now (status). Follows the current context and namespace.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_Context = Annotated[
    Optional[str], typer.Option("--context", help="The kubeconfig context to use (default: the current one).")
]
_Namespace = Annotated[
    Optional[str],
    typer.Option("--namespace", "-n", help="The workload's namespace (default: the context's, else default)."),
]
_Kubeconfig = Annotated[
    Optional[str], typer.Option("--kubeconfig", help="Kubeconfig path (default: $KUBECONFIG, then ~/.kube/config).")
]
_Output = Annotated[OutputFormat, typer.Option("--output", "-o", help="Output format.")]
_PriceBookFile = Annotated[
    Optional[Path],
    typer.Option("--price-book", help="Use this price book instead of the running operator's (a what-if)."),
]
_OperatorNamespace = Annotated[
    Optional[str],
    typer.Option(
        "--operator-namespace",
        help="Where the operator runs (default: found by the chart's labels in any namespace the user may list).",
    ),
]


# ----------------------------------------------------------------------------------------------- context


@dataclass(frozen=True)
class KubeContext:
    """Which cluster, as whom, and which namespace: kubectl's rules (flag, else the context's, else default)."""

    kubeconfig: str | None
    context: str | None
    namespace: str


def resolve_context(kubeconfig: str | None, context: str | None, namespace: str | None) -> KubeContext:
    """The context (``--context``, else the kubeconfig's current one) and namespace (``-n``, else the context's)."""
    from kubernetes_asyncio.config import list_kube_config_contexts

    require_kubeconfig(kubeconfig)
    try:
        contexts, current = list_kube_config_contexts(config_file=kubeconfig)
    except Exception as err:
        error = apiserver_error(err, "kubeconfig")
        if error is None:
            raise
        raise error from None
    chosen = current if context is None else next((c for c in contexts if c.get("name") == context), None)
    if chosen is None:
        known = ", ".join(str(c.get("name")) for c in contexts) or "none"
        raise typer.BadParameter(f"no context {context!r} in the kubeconfig (it has: {known})", param_hint="--context")
    default = (chosen.get("context") or {}).get("namespace") or "default"
    return KubeContext(kubeconfig=kubeconfig, context=chosen.get("name"), namespace=namespace or default)


def _with_api(kube: KubeContext, what: str, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``work(api)`` with a client on ``kube``'s context; the apiserver's errors as one-line CommandErrors."""
    from kubernetes_asyncio import client as k8s
    from kubernetes_asyncio import config as k8s_config

    async def session() -> T:
        configuration = k8s.Configuration()
        await k8s_config.load_kube_config(
            config_file=kube.kubeconfig, context=kube.context, client_configuration=configuration
        )
        async with k8s.ApiClient(configuration) as api:
            return await work(api)

    try:
        return asyncio.run(session())
    except CommandError:
        raise
    except Exception as err:
        error = apiserver_error(err, what)
        if error is None:
            raise
        raise error from None


# ----------------------------------------------------------------------------------------------- the price book


@dataclass(frozen=True)
class PriceBookSource:
    book: PriceBook
    where: str
    """Where it came from, for the output: the operator's ConfigMap, a file, or the packaged one (and why)."""


def price_book_configmaps(deployment: Mapping[str, Any]) -> list[str]:
    """The ConfigMaps an operator Deployment mounts its price book from (a ``configMap`` volume, or a projected one's
    source, holding :data:`PRICE_BOOK_KEY`)."""
    names: list[str] = []
    volumes = (((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}).get("volumes") or []
    for volume in volumes:
        sources = [volume.get("configMap")] + [
            s.get("configMap") for s in (volume.get("projected") or {}).get("sources") or []
        ]
        for source in sources:
            if not source or not source.get("name"):
                continue
            items = source.get("items")
            if items is None or any(item.get("key") == PRICE_BOOK_KEY for item in items):
                names.append(str(source["name"]))
    return names


async def operator_price_book(api: Any, operator_namespace: str | None) -> PriceBookSource:
    """The price book the running operator reads: its Deployment (the chart's labels) -> its price-book ConfigMap.

    No operator found (or no permission to look): the packaged price book, said so. Operators that mount different
    price books: a usage error asking for ``--operator-namespace``."""
    from kubernetes_asyncio import client as k8s
    from kubernetes_asyncio.client.rest import ApiException

    apps = k8s.AppsV1Api(api)
    try:
        if operator_namespace is None:
            listing = await apps.list_deployment_for_all_namespaces(label_selector=OPERATOR_SELECTOR)
        else:
            listing = await apps.list_namespaced_deployment(operator_namespace, label_selector=OPERATOR_SELECTOR)
    except ApiException as err:
        if err.status != 403:
            raise
        return PriceBookSource(
            default_price_book(),
            "the packaged one (not allowed to list the operator's Deployments; pass --operator-namespace or "
            "--price-book)",
        )
    found: dict[tuple[str, str], list[str]] = {}
    for item in listing.items:
        deployment = api.sanitize_for_serialization(item)
        meta = deployment.get("metadata") or {}
        for configmap in price_book_configmaps(deployment):
            found.setdefault((str(meta.get("namespace")), configmap), []).append(str(meta.get("name")))
    if not found:
        where = f" in {operator_namespace}" if operator_namespace else ""
        return PriceBookSource(default_price_book(), f"the packaged one (no operator Deployment found{where})")
    if len(found) > 1:
        listed = "; ".join(f"{ns}/{'/'.join(deps)} reads ConfigMap {cm}" for (ns, cm), deps in sorted(found.items()))
        raise typer.BadParameter(
            f"several operators with their own price books ({listed})", param_hint="--operator-namespace"
        )
    (namespace, name), deployments = next(iter(found.items()))
    where = f"ConfigMap {namespace}/{name} (the price book of the operator {namespace}/{', '.join(deployments)})"
    stored = await k8s.CoreV1Api(api).read_namespaced_config_map(name, namespace)
    text = (stored.data or {}).get(PRICE_BOOK_KEY)
    if text is None:
        raise CommandError(f"{where} has no key {PRICE_BOOK_KEY}")
    try:
        return PriceBookSource(load_price_book(text, source=f"ConfigMap {namespace}/{name}"), where)
    except (PriceBookError, ValueError) as err:
        raise CommandError(
            f"{where} is invalid (the operator keeps its last good one; pass --price-book): {one_line(err)}"
        ) from None


async def _price_book(api: Any, path: Path | None, operator_namespace: str | None) -> PriceBookSource:
    if path is not None:
        from inference_placement.explain import load_price_book_file

        return PriceBookSource(load_price_book_file(path), f"{path} (--price-book)")
    return await operator_price_book(api, operator_namespace)


# ----------------------------------------------------------------------------------------------- explain


@app.command("explain")
def explain_command(
    name: Annotated[str, typer.Argument(help="The InferenceWorkload.")],
    namespace: _Namespace = None,
    context: _Context = None,
    kubeconfig: _Kubeconfig = None,
    price_book: _PriceBookFile = None,
    operator_namespace: _OperatorNamespace = None,
    output: _Output = OutputFormat.TABLE,
) -> None:
    """Why the workload runs where it runs: the verdict, then costs and feasibility per target, thresholds and the
    decisions (``inference-placement explain`` with the operator's price book)."""
    from inference_placement.explain import (
        explain_workload,
        print_explanation,
        read_tenancy_with,
        read_workload_with,
    )
    from inference_placement.policy.tenancy import TenancyView

    kube = resolve_context(kubeconfig, context, namespace)

    async def work(api: Any) -> tuple[dict[str, Any], list[dict[str, Any]], PriceBookSource, TenancyView | None]:
        obj, events = await read_workload_with(api, name, kube.namespace)
        tenancy = await read_tenancy_with(api, kube.namespace)
        return obj, events, await _price_book(api, price_book, operator_namespace), tenancy

    obj, events, source, tenancy = _with_api(kube, f"InferenceWorkload {kube.namespace}/{name}", work)
    explanation = explain_workload(obj, source.book, events=events, tenancy=tenancy)
    explanation = dataclasses.replace(explanation, notes=(*explanation.notes, f"price book: {source.where}"))
    print_explanation(explanation, output)


# ----------------------------------------------------------------------------------------------- simulate


@app.command("simulate")
def simulate_command(
    name: Annotated[str, typer.Argument(help="The InferenceWorkload whose spec is simulated.")],
    trace: Annotated[Optional[Path], typer.Option("--trace", help="Trace CSV: per-step matrix or per-request.")] = None,
    row: Annotated[int, typer.Option("--row", help="Row of a per-step matrix.")] = 0,
    prometheus: Annotated[Optional[str], typer.Option("--prometheus", help="Prometheus base URL.")] = None,
    query: Annotated[Optional[str], typer.Option("--query", help="PromQL giving requests/s.")] = None,
    start: Annotated[Optional[str], typer.Option("--start", help="Range start (RFC 3339 or epoch).")] = None,
    end: Annotated[Optional[str], typer.Option("--end", help="Range end (RFC 3339 or epoch).")] = None,
    step_seconds: Annotated[float, typer.Option("--step-seconds", help="Metrics step and policy tick.")] = 60.0,
    optimum: Annotated[bool, typer.Option("--optimum/--no-optimum", help="Also compute the offline optimum.")] = True,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write the what-if to a PNG (matplotlib).")] = None,
    namespace: _Namespace = None,
    context: _Context = None,
    kubeconfig: _Kubeconfig = None,
    price_book: _PriceBookFile = None,
    operator_namespace: _OperatorNamespace = None,
    output: _Output = OutputFormat.TABLE,
) -> None:
    """What-if: the workload's spec, as stored in the cluster, on a trace or a Prometheus range through every
    policy, with the operator's price book (``inference-placement simulate``)."""
    from rich.console import Console

    from inference_placement.api.validation import parse_spec
    from inference_placement.explain import read_workload_with
    from inference_placement.sim.cli import TrafficSource, what_if
    from inference_placement.sim.report import simulation_table

    if plot is not None:
        require_extra("matplotlib", "plot", "--plot")
    traffic = TrafficSource(trace, row, prometheus, query, start, end, step_seconds)
    traffic.check()
    kube = resolve_context(kubeconfig, context, namespace)

    async def work(api: Any) -> tuple[dict[str, Any], PriceBookSource]:
        obj, _ = await read_workload_with(api, name, kube.namespace)
        return obj, await _price_book(api, price_book, operator_namespace)

    obj, source = _with_api(kube, f"InferenceWorkload {kube.namespace}/{name}", work)
    spec, problems = parse_spec(obj.get("spec"))
    if spec is None or problems:
        listed = "; ".join(str(p) for p in problems) or "no spec"
        raise CommandError(f"InferenceWorkload {kube.namespace}/{name}: invalid spec: {listed}")
    console = Console(stderr=output is not OutputFormat.TABLE)  # the progress display never mixes into JSON
    result = what_if(name, spec, traffic, source.book, console=console, optimum=optimum)
    if plot is not None:
        result.plot(plot)
    if output is OutputFormat.TABLE:
        console.print(result.verdict, style="bold", markup=False, highlight=False)
        console.print(simulation_table(result.results, result.title))
        console.print(f"price book: {source.where}", markup=False, highlight=False)
        if plot is not None:
            console.print(f"plot written to {plot}")
        return
    _print_data({**result.to_json(f"{kube.namespace}/{name}"), "price_book": source.where}, output)


# ----------------------------------------------------------------------------------------------- status


def _condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), {})


def workload_status(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Where one workload is, as its status records it, the verdict first (nothing is decided here)."""
    meta = obj.get("metadata") or {}
    status: Mapping[str, Any] = obj.get("status") or {}
    ready = _condition(status, "Ready")
    placement = status.get("placement")
    costs = status.get("projectedMonthlyCostUsd") or {}
    migration = status.get("migration") or {}
    where = f"serves on {placement}" if placement else "not placed yet"
    ready_text = ready.get("status", "Unknown")
    verdict = f"{where}, Ready={ready_text}"
    if migration:
        verdict += f", migrating to {migration.get('target')} ({migration.get('step')})"
    if ready_text != "True" and ready.get("message"):
        verdict += f": {ready.get('message')}"
    decision = status.get("lastDecision") or {}
    return {
        "verdict": verdict,
        "namespace": meta.get("namespace"),
        "name": meta.get("name"),
        "placement": placement,
        "phase": status.get("phase"),
        "ready": ready_text,
        "rps": (status.get("observed") or {}).get("rps"),
        "monthlyCostUsd": costs.get("lambda" if placement == "lambda" else placement) if placement else None,
        "reason": decision.get("reason"),
        "decidedAt": decision.get("decidedAt"),
        "endpoint": status.get("endpoint"),
        "migration": migration or None,
        "conditions": [
            {k: c.get(k) for k in ("type", "status", "reason", "message")} for c in status.get("conditions") or []
        ],
    }


def status_rows(rows: Sequence[Mapping[str, Any]], *, all_namespaces: bool) -> Any:
    """The rich table of :func:`workload_status` rows: name, verdict, rates, cost, why (wraps at 80 columns)."""
    columns = ["namespace"] if all_namespaces else []
    table = compact_table(None, *columns, "name", "verdict", "rps", "cost/mo", "why", right=("rps", "cost/mo"))
    for column in table.columns[: len(columns) + 1]:
        column.no_wrap = True  # names are what a reader copies: never folded
    for row in rows:
        cost = row.get("monthlyCostUsd")
        cells = [str(row["namespace"])] if all_namespaces else []
        cells += [
            str(row["name"]),
            str(row["verdict"]),
            "-" if row.get("rps") is None else f"{row['rps']:.3g}",
            "-" if cost is None else f"${cost:,.2f}",
            str(row.get("reason") or "-"),
        ]
        table.add_row(*cells)
    return table


@app.command("status")
def status_command(
    name: Annotated[
        Optional[str], typer.Argument(help="One InferenceWorkload (default: all in the namespace).")
    ] = None,
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces", "-A", help="Every namespace (like kubectl get -A).")
    ] = False,
    namespace: _Namespace = None,
    context: _Context = None,
    kubeconfig: _Kubeconfig = None,
    output: _Output = OutputFormat.TABLE,
) -> None:
    """Where each workload runs now, as its status records it: the verdict (placement, Ready, a migration in
    flight), traffic, projected cost and the last decision's reason."""
    from kubernetes_asyncio import client as k8s

    if name is not None and all_namespaces:
        raise typer.BadParameter("a NAME is in one namespace: drop -A or the name", param_hint="--all-namespaces")
    kube = resolve_context(kubeconfig, context, namespace)

    async def work(api: Any) -> list[dict[str, Any]]:
        custom = k8s.CustomObjectsApi(api)
        if name is not None:
            return [await custom.get_namespaced_custom_object(GROUP, VERSION, kube.namespace, PLURAL, name)]
        if all_namespaces:
            listing = await custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
        else:
            listing = await custom.list_namespaced_custom_object(GROUP, VERSION, kube.namespace, PLURAL)
        items: list[dict[str, Any]] = listing.get("items") or []
        return sorted(items, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))

    what = f"InferenceWorkload {kube.namespace}/{name}" if name else "InferenceWorkloads"
    rows = [workload_status(obj) for obj in _with_api(kube, what, work)]
    if output is not OutputFormat.TABLE:
        _print_data(rows[0] if name is not None else {"items": rows}, output)
        return
    from rich.console import Console

    console = Console()
    if not rows:
        scope = "any namespace" if all_namespaces else f"namespace {kube.namespace}"
        console.print(f"no InferenceWorkloads in {scope}")
        return
    if name is not None:
        row = rows[0]
        console.print(f"verdict: {row['namespace']}/{row['name']} {row['verdict']}", style="bold", markup=False)
        details = compact_table(None, "field", "value")
        for key in ("phase", "endpoint", "rps", "monthlyCostUsd", "reason", "decidedAt"):
            details.add_row(key, "-" if row.get(key) is None else str(row[key]))
        console.print(details)
        conditions = compact_table("Conditions", "type", "status", "reason", "message")
        for c in row["conditions"]:
            conditions.add_row(*(str(c.get(k) or "") for k in ("type", "status", "reason", "message")))
        console.print(conditions)
        return
    console.print(status_rows(rows, all_namespaces=all_namespaces))


def _print_data(data: Any, output: OutputFormat) -> None:
    if output is OutputFormat.YAML:
        import yaml

        typer.echo(yaml.safe_dump(data, sort_keys=False), nl=False)
    else:
        typer.echo(json.dumps(data, indent=2))


def main() -> None:
    """The console script ``kubectl-iw`` (kubectl runs it as ``kubectl iw``)."""
    run_app(app, PROG_NAME)


if __name__ == "__main__":
    main()
