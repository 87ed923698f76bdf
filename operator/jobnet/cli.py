"""The ``jobnet`` command: ``lint``, ``crds``, ``operator``, ``dev`` and the kubectl plugin commands
(``tree``, ``logs``, ``override``, ``stop``, ``events``; see :mod:`jobnet.plugin`) and ``console``
(see :mod:`jobnet.console`).

``jobnet lint`` and ``jobnet crds`` never import the Kubernetes or SSH edges: the ``operator``
and ``dev`` subcommands' arguments and code are imported only when they are the one asked for.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from jobnet.core.expansion import ExpansionError, RunGraph, RunNode, expand
from jobnet.core.hosts import host_id
from jobnet.core.validation import Catalog
from jobnet.manifests import LintResult, ManifestError, lint, root_jobnets
from jobnet.plugin import add_plugin_commands

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_UNREADABLE = 2

DEFAULT_CRD_DIR = "crds"


def describe_node(node: RunNode, label: str) -> str:
    """One line of ``jobnet lint --tree`` (without indentation), starting with ``label``."""
    parts = [label]
    if node.kind == "jobnet":
        parts.append(f"[JobNet {node.expanded_from}]")
    else:
        parts.append(" ".join([node.script or "", *node.args]))
        if node.host is not None:
            parts.append(f"on {host_id(node.host)}")
        if node.timeout_seconds is not None:
            parts.append(f"timeout {node.timeout_seconds}s")
    if node.is_finally:
        parts.append("(finally)")
    if node.after:
        parts.append("after " + ", ".join(path.rsplit("/", 1)[-1] for path in node.after))
    return "  ".join(parts)


def render_tree(graph: RunGraph) -> list[str]:
    """The run graph as an indented tree, children in execution order."""
    lines = []

    def visit(path: str, depth: int) -> None:
        node = graph.nodes[path]
        lines.append("  " * depth + describe_node(node, node.path if depth == 0 else node.name))
        for child in node.children:
            visit(child, depth + 1)

    visit(graph.root, 0)
    return lines


def _trees(result: LintResult) -> list[str]:
    """Trees of every JobRun's JobNet, or of every root JobNet when there is no JobRun."""
    catalog: Catalog = result.catalog
    jobruns = [d for d in result.documents if d.kind == "JobRun"]
    if jobruns:
        targets = []
        for document in jobruns:
            spec = document.body.get("spec")
            reference = spec.get("jobNetRef") if isinstance(spec, dict) else None
            targets.append((document.label, reference))
    else:
        targets = [(f"JobNet/{name}", name) for name in root_jobnets(catalog)]
    lines = []
    for label, root in targets:
        if not isinstance(root, str) or root not in catalog:
            continue
        try:
            graph = expand(root, catalog)
        except ExpansionError:
            continue  # its problems are already printed
        lines.append(f"{label}: {len(graph.jobs())} jobs")
        lines.extend("  " + line for line in render_tree(graph))
    return lines


def run_lint(args: argparse.Namespace) -> int:
    try:
        result = lint(args.paths)
    except ManifestError as error:
        print(f"jobnet lint: {error}", file=sys.stderr)
        return EXIT_UNREADABLE
    for line in result.lines():
        print(line)
    if args.tree:
        for line in _trees(result):
            print(line)
    counted = f"{len(result.documents)} manifests"
    if result.problems:
        count = len(result.problems)
        print(f"jobnet lint: {count} problem{'' if count == 1 else 's'} in {counted}", file=sys.stderr)
        return EXIT_PROBLEMS
    print(f"jobnet lint: {counted} OK", file=sys.stderr)
    return EXIT_OK


def run_crds(args: argparse.Namespace) -> int:
    from jobnet.crdgen import write_crds

    for path in write_crds(Path(args.output_dir)):
        print(f"wrote {path}")
    return EXIT_OK


def build_parser(with_operator: bool, prog: str = "jobnet", with_dev: bool = False) -> argparse.ArgumentParser:
    """The argument parser; the operator's (``dev``'s) own arguments only when ``with_operator`` (``with_dev``)."""
    parser = argparse.ArgumentParser(prog=prog, description="Kubernetes-native batch job networks.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    lint_parser = commands.add_parser(
        "lint",
        help="validate JobNet and JobRun manifests offline",
        description=(
            "Validate every JobNet and JobRun in the given files and directories (a directory "
            "means its *.yaml and *.yml files). Prints one line per problem. Exit status: 0 valid, "
            "1 problems found, 2 unreadable file or invalid YAML."
        ),
    )
    lint_parser.add_argument("paths", nargs="+", metavar="FILE_OR_DIR")
    lint_parser.add_argument(
        "--tree", action="store_true", help="print the expanded run tree of each JobRun (or root JobNet)"
    )
    lint_parser.set_defaults(handler=run_lint)

    crds_parser = commands.add_parser("crds", help="write the CustomResourceDefinitions generated from the API models")
    crds_parser.add_argument(
        "--output-dir", default=DEFAULT_CRD_DIR, help=f"directory to write to (default: {DEFAULT_CRD_DIR})"
    )
    crds_parser.set_defaults(handler=run_crds)

    add_plugin_commands(commands)

    from jobnet.console.command import add_console_arguments

    add_console_arguments(
        commands.add_parser(
            "console",
            help="serve the operations console (run list, monitors, events) on 127.0.0.1",
            description="A web console acting with your kubeconfig identity: the run list, the job network "
            "monitor, the job monitor, the event list and the JobNet view; see docs/console.md.",
        )
    )

    operator_parser = commands.add_parser(
        "operator", help="run the operator (Kubernetes controller and admission webhook)"
    )
    if with_operator:
        from jobnet.kube.cli import add_operator_arguments, run_operator

        add_operator_arguments(operator_parser)
        operator_parser.set_defaults(handler=run_operator)

    dev_parser = commands.add_parser(
        "dev",
        help="try it without a cluster: API emulator, operator and a local VM on this machine",
        description="Start the Kubernetes API emulator on 127.0.0.1, the operator and one local VM, write "
        "a kubeconfig, and run until Ctrl-C (then clean up everything); see docs/dev.md.",
    )
    if with_dev:
        from jobnet.devenv.command import add_dev_arguments, run_dev

        add_dev_arguments(dev_parser)
        dev_parser.set_defaults(handler=run_dev)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "jobnet") -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(
        with_operator=bool(arguments) and arguments[0] == "operator",
        prog=prog,
        with_dev=bool(arguments) and arguments[0] == "dev",
    )
    args = parser.parse_args(arguments)
    return int(args.handler(args) or EXIT_OK)


def kubectl_plugin_main(argv: Sequence[str] | None = None) -> int:
    """``kubectl jobnet ...``: the same commands as ``jobnet``."""
    return main(argv, prog="kubectl jobnet")


if __name__ == "__main__":
    sys.exit(main())
