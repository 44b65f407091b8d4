"""The command line behaves: a user error on any command is one line on stderr and a documented exit code, never a
traceback (each case a real run of ``python -m inference_placement.cli``); tables fit 80 columns; completion and
the enum choices complete; ``simulate --prometheus`` reads a real Prometheus; the ``simulate`` plot's panels."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from inference_placement.commandline import ExitCode
from tests.plugins.prometheus import OpenMetricsBuilder, PrometheusServer

ROOT = Path(__file__).resolve().parents[1]
WORKLOAD = ROOT / "examples" / "sentiment-bursty.yaml"
MINUTES = 120
START = 1_700_000_000.0 - 1_700_000_000.0 % 3600
"""The trace's first minute (an hour boundary in November 2023)."""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "operator") + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("KUBECONFIG", None)
    env["COLUMNS"] = "80"
    return env


def cli(*args: str, prelude: str = "", cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``inference-placement ARGS`` in a fresh interpreter (``prelude`` runs first, e.g. to hide a module)."""
    code = f"{prelude}\nimport sys\nsys.argv = ['inference-placement', *sys.argv[1:]]\n"
    code += "from inference_placement.cli import main\nmain()\n"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=_env(),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )


def assert_user_error(result: subprocess.CompletedProcess[str], code: ExitCode, *fragments: str) -> str:
    """Exit ``code``, no traceback anywhere, exactly one line on stderr starting "error: " and naming the
    fragments."""
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert result.returncode == code, (result.returncode, lines[0])
    return lines[0]


def _free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    header = "HashFunction,HashApp," + ",".join(f"minute_{i + 1}" for i in range(MINUTES))
    counts = ",".join(str(200 if (i // 20) % 2 else 3) for i in range(MINUTES))
    trace = tmp_path / "trace.csv"
    trace.write_text(f"{header}\nf,a,{counts}\n")
    broken = tmp_path / "broken.yaml"
    broken.write_text("spec: [\n")
    invalid_spec = tmp_path / "invalid.yaml"
    invalid_spec.write_text(
        "spec:\n  model: {image: x, sizeMb: 10}\n  placement: {allowedTargets: [lambda]}\n"
        "  accelerator: {type: nvidia-l4}\n"
    )
    not_a_trace = tmp_path / "notes.csv"
    not_a_trace.write_text("hello,world\n1,2\n")
    unreachable_kubeconfig = tmp_path / "kubeconfig"
    unreachable_kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: x\n"
        f"clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{_free_port()}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
    )
    return {
        "trace": trace,
        "broken": broken,
        "invalid_spec": invalid_spec,
        "not_a_trace": not_a_trace,
        "unreachable_kubeconfig": unreachable_kubeconfig,
        "dir": tmp_path,
    }


# ----------------------------------------------------------------------------------------------- error paths

CASES: dict[str, tuple[Callable[[dict[str, Path]], list[str]], ExitCode, tuple[str, ...]]] = {
    "unknown command": (lambda f: ["simulat"], ExitCode.USAGE, ("No such command",)),
    "simulate: workload missing": (
        lambda f: ["simulate", "--workload", str(f["dir"] / "nope.yaml"), "--trace", str(f["trace"])],
        ExitCode.INPUT,
        ("--workload", "no such file"),
    ),
    "simulate: workload not YAML": (
        lambda f: ["simulate", "--workload", str(f["broken"]), "--trace", str(f["trace"])],
        ExitCode.INPUT,
        ("--workload", "invalid YAML (line 2"),
    ),
    "simulate: workload spec invalid": (
        lambda f: ["simulate", "--workload", str(f["invalid_spec"]), "--trace", str(f["trace"])],
        ExitCode.INPUT,
        ("invalid spec", "lambda has no GPU"),
    ),
    "simulate: trace missing": (
        lambda f: ["simulate", "--workload", str(WORKLOAD), "--trace", str(f["dir"] / "nope.csv")],
        ExitCode.INPUT,
        ("--trace", "no such file"),
    ),
    "simulate: trace unreadable as a trace": (
        lambda f: ["simulate", "--workload", str(WORKLOAD), "--trace", str(f["not_a_trace"])],
        ExitCode.INPUT,
        ("--trace", "neither a per-request trace"),
    ),
    "simulate: price book not YAML": (
        lambda f: [
            "simulate", "--workload", str(WORKLOAD), "--trace", str(f["trace"]), "--price-book", str(f["broken"]),
        ],
        ExitCode.INPUT,
        ("--price-book", "invalid YAML"),
    ),
    "simulate: row out of range": (
        lambda f: ["simulate", "--workload", str(WORKLOAD), "--trace", str(f["trace"]), "--row", "3"],
        ExitCode.USAGE,
        ("--row", "1 workload(s)"),
    ),
    "simulate: neither a trace nor Prometheus": (
        lambda f: ["simulate", "--workload", str(WORKLOAD)],
        ExitCode.USAGE,
        ("give --trace FILE",),
    ),
    "simulate: Prometheus without a query": (
        lambda f: ["simulate", "--workload", str(WORKLOAD), "--prometheus", "http://127.0.0.1:9"],
        ExitCode.USAGE,
        ("--query",),
    ),
    "simulate: a start that is no time": (
        lambda f: [
            "simulate", "--workload", str(WORKLOAD), "--prometheus", "http://127.0.0.1:9", "--query", "up",
            "--start", "yesterday", "--end", "0",
        ],
        ExitCode.USAGE,
        ("--start", "RFC 3339"),
    ),
    "simulate: Prometheus unreachable": (
        lambda f: [
            "simulate", "--workload", str(WORKLOAD), "--prometheus", f"http://127.0.0.1:{_free_port()}",
            "--query", "up", "--start", "0", "--end", "3600",
        ],
        ExitCode.UNREACHABLE,
        ("Prometheus at http://127.0.0.1:", "unreachable", "Connection refused"),
    ),
    "bench: scenario missing": (
        lambda f: ["bench", "--scenario", str(f["dir"] / "nope.yaml"), "--traces", str(f["dir"])],
        ExitCode.INPUT,
        ("--scenario", "no such file"),
    ),
    "bench: traces directory missing": (
        lambda f: ["bench", "--scenario", str(f["broken"]), "--traces", str(f["dir"] / "nope")],
        ExitCode.INPUT,
        ("--traces", "no such directory"),
    ),
    "bench: scenario not YAML": (
        lambda f: ["bench", "--scenario", str(f["broken"]), "--traces", str(f["dir"])],
        ExitCode.INPUT,
        ("--scenario",),
    ),
    "explain: kubeconfig missing": (
        lambda f: ["explain", "w", "--kubeconfig", str(f["dir"] / "nope")],
        ExitCode.INPUT,
        ("--kubeconfig", "no such file"),
    ),
    "explain: kubeconfig not YAML": (
        lambda f: ["explain", "w", "--kubeconfig", str(f["broken"])],
        ExitCode.INPUT,
        ("kubeconfig",),
    ),
    "explain: apiserver unreachable": (
        lambda f: ["explain", "w", "--kubeconfig", str(f["unreachable_kubeconfig"])],
        ExitCode.UNREACHABLE,
        ("apiserver is unreachable",),
    ),
    "explain: price book missing": (
        lambda f: ["explain", "w", "--price-book", str(f["dir"] / "nope.yaml")],
        ExitCode.INPUT,
        ("--price-book", "no such file"),
    ),
    "explain: an output format it has not": (
        lambda f: ["explain", "w", "-o", "xml"],
        ExitCode.USAGE,
        ("'xml' is not one of 'table', 'json', 'yaml'",),
    ),
    "run: kubeconfig missing": (
        lambda f: ["run", "--kubeconfig", str(f["dir"] / "nope")],
        ExitCode.INPUT,
        ("--kubeconfig", "no such file"),
    ),
    "run: kubeconfig not YAML": (
        lambda f: ["run", "--kubeconfig", str(f["broken"]), "--metrics-port", "0", "--health-port", "0"],
        ExitCode.INPUT,
        ("kubeconfig",),
    ),
    "run: PromQL templates missing": (
        lambda f: [
            "run", "--kubeconfig", str(f["unreachable_kubeconfig"]), "--promql-templates", str(f["dir"] / "nope"),
        ],
        ExitCode.INPUT,
        ("--promql-templates", "no such file"),
    ),
    "run: an unknown --set key": (
        lambda f: ["run", "--set=router.nope=1"],
        ExitCode.USAGE,
        ("router.nope",),
    ),
    "run: a log format it has not": (
        lambda f: ["run", "--log-format", "xml"],
        ExitCode.USAGE,
        ("--log-format",),
    ),
    "crd: output into a directory": (
        lambda f: ["crd", "-o", str(f["dir"])],
        ExitCode.INPUT,
        ("--output", "cannot write"),
    ),
    "demo: trace missing": (
        lambda f: ["demo", "--trace", str(f["dir"] / "nope.csv")],
        ExitCode.INPUT,
        ("--trace", "no such file"),
    ),
    "bench-scale: sizes that are not numbers": (
        lambda f: ["bench-scale", "--workloads", "ten"],
        ExitCode.USAGE,
        ("comma-separated integers",),
    ),
    "bench-scale: kubeconfig missing": (
        lambda f: ["bench-scale", "--kubeconfig", str(f["dir"] / "nope")],
        ExitCode.INPUT,
        ("--kubeconfig", "no such file"),
    ),
    "bench-scale: apiserver unreachable": (
        lambda f: ["bench-scale", "--kubeconfig", str(f["unreachable_kubeconfig"]), "--workloads", "5"],
        ExitCode.UNREACHABLE,
        ("apiserver is unreachable",),
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_user_error_is_one_line_and_its_exit_code(case: str, files: dict[str, Path]) -> None:
    args, code, fragments = CASES[case]
    assert_user_error(cli(*args(files)), code, *fragments)


def test_plot_without_matplotlib_is_refused_before_the_simulation(files: dict[str, Path]) -> None:
    plot = files["dir"] / "what-if.png"
    result = cli(
        "simulate", "--workload", str(WORKLOAD), "--trace", str(files["trace"]), "--plot", str(plot),
        prelude="import sys\nsys.modules['matplotlib'] = None  # as if the plot extra were not installed",
    )  # fmt: skip
    assert_user_error(result, ExitCode.MISSING_EXTRA, "--plot needs matplotlib", "inference-placement[plot]")
    assert "ours" not in result.stdout  # nothing was simulated
    assert not plot.exists()


def test_the_exit_codes_are_documented() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Exit codes") :]
    for code in ExitCode:
        assert f"| {code.value} |" in section, f"exit code {code.value} ({code.name}) not in the README"


# ----------------------------------------------------------------------------------------------- it behaves


def test_simulate_table_fits_80_columns(files: dict[str, Path]) -> None:
    result = cli("simulate", "--workload", str(WORKLOAD), "--trace", str(files["trace"]))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, "\n".join(lines)
    assert "…" not in result.stdout  # wrapped or folded, never cut off
    assert any(line.strip().startswith("ours") for line in lines)


def test_shell_completion_completes_commands_and_choices() -> None:
    # the shell named, not detected from the process tree (a CI runner's parent may be no shell at all): typer's
    # switch for exactly that makes --show-completion take the shell as its value
    script = cli(
        "--show-completion",
        "bash",
        prelude="import os\nos.environ['_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION'] = '1'",
    )
    assert script.returncode == 0, script.stderr
    assert "_INFERENCE_PLACEMENT_COMPLETE" in script.stdout

    def complete(words: str) -> list[str]:
        env = _env() | {
            "_INFERENCE_PLACEMENT_COMPLETE": "complete_bash",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)),
        }
        done = subprocess.run(
            [sys.executable, "-m", "inference_placement.cli"],
            capture_output=True, text=True, timeout=60, check=False, env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert complete("inference-placement sim") == ["simulate"]
    assert complete("inference-placement bench-s") == ["bench-scale"]  # a developer tool, loaded on demand
    assert complete("inference-placement explain w -o ") == ["table", "json", "yaml"]
    assert complete("inference-placement run --log-format ") == ["json", "plain"]


# ----------------------------------------------------------------------------------------------- simulate --prometheus


def test_simulate_reads_its_traffic_from_a_real_prometheus(
    prometheus_factory: Callable[[str], PrometheusServer], files: dict[str, Path]
) -> None:
    counts = [600.0 if (m // 30) % 2 else 6.0 for m in range(MINUTES)]
    om = OpenMetricsBuilder()
    om.counter_from_minute_counts("model_requests_total", {"workload": "w", "pod": "a"}, START, counts)
    om.counter_from_minute_counts("model_requests_total", {"workload": "w", "pod": "b"}, START, counts)
    server = prometheus_factory(om.render())
    out = files["dir"] / "what-if.json"
    result = cli(
        "simulate", "--workload", str(WORKLOAD), "--prometheus", server.url,
        "--query", 'rate(model_requests_total{workload="w"}[1m])',
        "--start", str(START + 60), "--end", str(START + (MINUTES - 1) * 60), "--no-optimum", "--json", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    doc = json.loads(out.read_text())
    # two pods' series summed: 2 x the per-minute counts over the range (the first and last minute excepted)
    expected = 2 * sum(counts[1 : MINUTES - 1])
    assert doc["requests"] == pytest.approx(expected, rel=0.03)
    assert {"ours", "static-cluster", "lambda"} <= set(doc["policies"])

    refused = cli(
        "simulate", "--workload", str(WORKLOAD), "--prometheus", server.url, "--query", "rate(model_requests_total[",
        "--start", str(START), "--end", str(START + 3600),
    )  # fmt: skip
    assert_user_error(refused, ExitCode.UNREACHABLE, "refused the query (HTTP 400)", "parse error")
    empty = cli(
        "simulate", "--workload", str(WORKLOAD), "--prometheus", server.url, "--query", "no_such_metric",
        "--start", str(START), "--end", str(START + 3600),
    )  # fmt: skip
    assert_user_error(empty, ExitCode.FAILED, "no series")


# ----------------------------------------------------------------------------------------------- the plot


def test_the_simulate_plot_has_a_strip_per_policy_an_slo_panel_and_the_name(files: dict[str, Path]) -> None:
    pytest.importorskip("matplotlib")  # the plot extra (only when installed; the dev extra pins it)
    import yaml

    from inference_placement.api.spec import InferenceWorkloadSpec
    from inference_placement.policy.price_book import default_price_book
    from inference_placement.sim.registry import online_policies
    from inference_placement.sim.report import simulation_figure
    from inference_placement.sim.simulator import feasible_economics, simulate
    from inference_placement.sim.traces import load_trace
    from inference_placement.sim.workloads import spec_workloads

    doc = yaml.safe_load(WORKLOAD.read_text())
    spec = InferenceWorkloadSpec.model_validate(doc["spec"])
    book = default_price_book()
    workload = spec_workloads(load_trace(files["trace"], step_seconds=60.0), spec, rows=[0])[0]
    economics = feasible_economics(spec, book)
    results = [simulate(workload, policy, book, economics=economics) for policy in online_policies()[:3]]
    figure = simulation_figure(
        results,
        workload.requests.per_step(),
        60.0,
        workload=doc["metadata"]["name"],
        subtitle="what if",
        slo_attainment=spec.slo.attainment,
    )
    assert doc["metadata"]["name"] in figure._suptitle.get_text()
    strips = next(ax for ax in figure.axes if ax.get_ylabel() == "placement")
    assert [t.get_text() for t in strips.get_yticklabels()] == [r.policy for r in results]
    assert len(strips.collections) >= len(results)  # at least one bar run per policy
    assert {t.get_text() for t in strips.get_legend().get_texts()} == {"cluster", "cloudrun", "lambda"}
    slo = next(ax for ax in figure.axes if ax.get_ylabel().startswith("SLO attainment"))
    labels = [t.get_text() for t in slo.get_legend().get_texts()]
    assert len(labels) == len(results) + 1 and labels[-1].startswith("SLO ")


def test_the_demo_moves_its_progress_display_at_each_step(tmp_path: Path) -> None:
    from rich.console import Console
    from rich.progress import Progress

    from inference_placement.devtools.demo.cli import _Demo

    console = Console(record=True, width=80)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("starting", total=7)
        run = _Demo(ROOT, tmp_path, console, progress)
        run.step("3/7  CRD and the operator (inference-placement run)")
        assert progress.tasks[0].completed == 2 and progress.tasks[0].id == task
        assert progress.tasks[0].description == "CRD and the operator (inference-placement run)"
        run.step("7/7  clean-up")
        assert progress.tasks[0].completed == 6
    assert "CRD and the operator" in console.export_text()  # the step's rule stays in the output
