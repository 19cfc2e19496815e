"""`estate <command>` (or `python -m estate <command>`): validate, route, schema, preview, guard,
simulate, gpus, agent, agent-token, serve.

Exit codes (the README's table; tests/test_exit_codes.py runs each): 0 success, 1 anything else
(a failure while running), 2 bad configuration (a pool, queue, stack or price file), 3 no pool
serves the labels, 4 a mandatory policy violation in `preview`, 5 a guarded resource would be
replaced or deleted (`guard`), 6 the agent's credentials cannot be used or would be within its
jobs' reach (`agent`), 64 a usage error (unknown command or option, a bad or missing argument),
found before anything runs. Errors are one line on stderr; results go to stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from estate import __version__
from estate.config.diagnostics import ConfigError
from estate.config.prices import DEFAULT_REGION as DEFAULT_PRICE_REGION
from estate.config.stack_config import DEFAULT_RUNNER_VERSION
from estate.project import PACKAGE_PROJECT, ProjectNotFoundError, find_project

EXIT_CONFIG = 2
EXIT_UNROUTED = 3
EXIT_POLICY = 4
EXIT_GUARDED = 5
EXIT_CREDENTIALS = 6
EXIT_USAGE = 64  # sysexits.h EX_USAGE: told apart from bad configuration (2)
DEFAULT_CONFIGS = "runner_configs"
PROJECT_DIR = PACKAGE_PROJECT  # the checkout of this package; commands use `_project(args)`


class UsageError(Exception):
    """Arguments that cannot be run, found after parsing (a combination, an empty value)."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors and their own exit code."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def _project(args: argparse.Namespace) -> Path:
    """The project the command works on (estate/project.py): `--project`, the current directory
    or one above it, or this package's checkout."""
    try:
        return find_project(args.project)
    except ProjectNotFoundError as exc:
        raise UsageError(str(exc)) from None


def _configs(args: argparse.Namespace) -> str:
    """`--configs` as given, else the project's runner_configs/."""
    if args.configs is not None:
        return str(args.configs)
    from estate.project import shown

    return shown(_project(args) / DEFAULT_CONFIGS)


def _cmd_validate(args: argparse.Namespace) -> int:
    from estate.config.loader import load_estate

    if not args.paths and args.stack is None:
        raise UsageError("give pool files or directories, or --stack NAME (its runner_configs)")
    if args.stack is None:
        estate = load_estate(args.paths)
        warnings = [str(w) for w in estate.warnings]
    else:
        # The stack's checks too, exactly as `preview` and the program make them.
        from estate.derive.stack_plan import plan_stack
        from estate.preview import read_stack_file, stack_file, validate_stack_config
        from estate.project import stack_configs

        project = _project(args)
        path = stack_file(project, args.stack)
        config, secret_keys = read_stack_file(path)
        stack = validate_stack_config(config, path, secret_keys)
        estate = load_estate(args.paths or [stack_configs(project, stack.runner_configs)])
        warnings = [str(w) for w in plan_stack(stack, estate, project, args.stack).warnings]
    if not args.quiet:
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
    for pool in estate.pools:
        layout = f" slots {pool.slot_layout.spec()}" if pool.slot_layout else ""
        print(f"{pool.name}: {pool.runner.runner_architecture} {pool.capacity_type}{layout} labels [{', '.join(pool.base_labels)}]")
    for queue in estate.queues:
        q = queue.settings
        print(f"{queue.name}: buildkite queue {q.queue} ({q.capacity}, {q.min_size}-{q.max_size} x {', '.join(q.instance_types)})")
    queues = f", {len(estate.queues)} buildkite queues" if estate.queues else ""
    stack_note = f", stack {args.stack}" if args.stack is not None else ""
    print(f"ok: {len(estate.pools)} pools{queues}{stack_note}, {len(warnings)} warnings")
    return 0


def _split_labels(raw: Sequence[str]) -> list[str]:
    return [label.strip() for arg in raw for label in arg.split(",") if label.strip()]


def _cmd_route(args: argparse.Namespace) -> int:
    from estate.config.loader import load_estate
    from lambda_src.core.routing import JobOrigin

    labels = _split_labels(args.labels)
    if not labels:
        raise UsageError("give at least one label, e.g. self-hosted,linux,x64")
    estate = load_estate([_configs(args)])
    origin = None
    if args.repo is not None:
        # Who may use a pool depends on the stack's runner groups: read them as the deploy does.
        from estate.derive.runner_groups import pool_admission
        from estate.preview import read_stack_file, stack_file, validate_stack_config

        path = stack_file(_project(args), args.stack)
        config, secret_keys = read_stack_file(path)
        stack = validate_stack_config(config, path, secret_keys)
        repo = args.repo if "/" in args.repo else f"{stack.github.org}/{args.repo}"
        origin = JobOrigin(repo, public=args.public, workflow=args.workflow)
        table = estate.routing_table(pool_admission(stack, estate))
    elif args.workflow is not None or args.public:
        raise UsageError("--workflow and --public describe a job's repository: give --repo too")
    else:
        table = estate.routing_table()
    if args.explain:
        for pool, why in table.explain(labels, origin):
            print(f"{pool}: {why}", file=sys.stderr)
    pools = table.route(labels, origin)
    if not pools:
        served = origin is not None and table.route(labels)
        who = f"no pool admits a job from {origin.repository}" if served and origin else "no pool serves a job"
        print(f"error: {who} with labels [{', '.join(labels)}] (see --explain)", file=sys.stderr)
        return EXIT_UNROUTED
    print("\n".join(pools))
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    from estate.config.loader import file_schema

    print(json.dumps(file_schema(), indent=2))
    return 0


def _cmd_preview(args: argparse.Namespace) -> int:
    from estate.preview import render_tree, run_program
    from policy.rules import check, check_stack

    preview = run_program(_project(args), args.stack)
    if not args.quiet:
        if preview.config_warnings:
            count = len(preview.config_warnings)
            print(f"note: {count} config warnings; `estate validate --stack {args.stack}` lists them", file=sys.stderr)
        for notice in preview.notices:  # what the program says beyond them, e.g. what a block purchase costs
            print(f"warning: {notice}", file=sys.stderr)
    if args.json:
        print(json.dumps([r.to_json() for r in preview.records], indent=1, sort_keys=True))
    else:
        print(render_tree(preview.records, args.stack))
    # The policy pack's rules, on what the program would register.
    violations = [v for r in preview.records for v in check(r.type, r.name, r.inputs)]
    violations += check_stack([r.stack_resource() for r in preview.records])
    for violation in violations:
        if violation.mandatory or not args.quiet:
            print(f"policy: {violation}", file=sys.stderr)
    return EXIT_POLICY if any(v.mandatory for v in violations) else 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from estate.doctor.main import run

    return run(PROJECT_DIR, args.stack, args.json, args.app_key_file)


def _cmd_guard(args: argparse.Namespace) -> int:
    from estate.guard import guard_findings, load_preview

    findings = guard_findings(load_preview(Path(args.preview)))
    for finding in findings:
        print(f"guarded: {finding}", file=sys.stderr)
    if findings:
        print("error: this change would replace or delete resources that must outlive a deploy (see above)", file=sys.stderr)
        return EXIT_GUARDED
    print("ok: no guarded resource is replaced or deleted")
    return 0


def _share(text: str) -> float:
    """An argparse type: a number from 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a share from 0 to 1")
    return value


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 1")
    return int(text)


def _above_zero(text: str) -> float:
    """An argparse type: a number above 0."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0.0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number above 0")
    return value


def _rate(text: str) -> float:
    """An argparse type: a finite number, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number, 0 or more")
    return value


def _simulate_arguments(args: argparse.Namespace) -> Path | None:
    """Refuse, before a simulation runs for minutes, what it could not honour; the plot's path."""
    if args.trace is not None:
        given = [
            flag
            for flag, value in (("--days", args.days), ("--workload", args.workload), ("--failed-runs", args.failed_runs))
            if value is not None
        ]
        if given:
            raise UsageError(f"{', '.join(given)} shape the generated workload; a --trace file has its own jobs")
        if not Path(args.trace).is_file():
            raise UsageError(f"--trace {args.trace}: no such file")
    if args.prices is not None and not Path(args.prices).is_file():
        raise UsageError(f"--prices {args.prices}: no such file")
    if args.plot is None:
        return None
    plot = Path(args.plot)
    folder = plot.parent if str(plot.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"--plot {args.plot}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"--plot {args.plot}: folder {folder} is not writable")
    try:
        import matplotlib  # noqa: F401 - only whether it is installed
    except ImportError:
        raise RuntimeError("--plot needs matplotlib: pip install 'runner-estate[plot]'") from None
    return plot


def _cmd_simulate(args: argparse.Namespace) -> int:
    from estate.config.loader import load_estate
    from estate.config.prices import PriceError, PriceTable
    from estate.sim.policies import POLICIES
    from estate.sim.simulate import generated_history, plot, seeded_command, simulate, table
    from estate.sim.workload import WORKLOADS, pr_trace, read_trace

    plot_path = _simulate_arguments(args)
    # None tells "not given" from the default (a --trace refuses them); the defaults go in here.
    args.workload = args.workload or "flashinfer"
    args.days = 1.0 if args.days is None else args.days
    args.failed_runs = 0.3 if args.failed_runs is None else args.failed_runs
    workload, days, failed_runs = args.workload, args.days, args.failed_runs
    try:
        prices = PriceTable.from_file(Path(args.prices), region=args.region) if args.prices else PriceTable(region=args.region)
    except PriceError as exc:
        raise ConfigError(args.prices, None, None, str(exc).removeprefix(f"{args.prices}: ")) from None
    # A type EC2 does not know is left out, as a fleet request would (validate refuses it), and said.
    estate = load_estate([_configs(args)], drop_unknown_types=True)
    for pool in estate.pools:
        for warning in pool.dropped_type_warnings:
            print(f"warning: {warning}", file=sys.stderr)
    # The simulator launches each pool's and queue's first instance type in its market (spot is
    # priced from on-demand, so a spot pool's failover is covered): each has a price before anything runs.
    needed = {(p.runner.instance_types[0], p.capacity_type) for p in estate.pools}
    needed |= {(q.settings.instance_types[0], "on-demand") for q in estate.queues}
    for itype, market in sorted(needed):
        try:
            prices.hourly(itype, market)
        except PriceError as exc:
            raise ConfigError(args.prices or "estate/config/prices.py", None, itype, str(exc)) from None
    types = sorted({itype for itype, _ in needed})
    unused = sorted(set(prices.overrides) - set(types))
    if unused:
        print(f"note: --prices: the simulation launches no {', '.join(unused)} (it runs each pool's first instance type)", file=sys.stderr)
    names = list(POLICIES) if args.policy == "all" else [args.policy]
    if args.seeds > 1 or args.sensitivity:
        seeded_command(args, estate, prices, names)
        return 0
    trace = read_trace(Path(args.trace)) if args.trace else pr_trace(WORKLOADS[workload], args.seed, days, failed_run_share=failed_runs)
    history = None if args.trace else generated_history(estate, WORKLOADS[workload], args.seed, failed_runs)
    report, sims = simulate(estate, trace, names, prices, args.seed, args.spot_interruptions, args.capacity_errors, launch_history=history)
    if args.json:
        print(json.dumps(report, indent=1, sort_keys=True))
    else:
        source = args.trace or f"embedded {workload} PR workload, {days:g} day(s), {failed_runs:.0%} of runs fail, seed {args.seed}"
        print(f"trace: {len(trace)} jobs ({source}); prices: {report['prices']}")
        print(table(report))
    if plot_path is not None:
        plot(sims, report, plot_path)
    return 0


def _cmd_prices(args: argparse.Namespace) -> int:
    from estate.config.prices import MARKETS, PriceError, PriceTable, local_prices_path

    path = Path(args.out) if args.out else local_prices_path()
    if args.refresh:
        import boto3

        from estate.prices_refresh import RefreshError, refresh

        try:
            section = refresh(boto3.Session(), args.region, path, days=args.days)
        except RefreshError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_CREDENTIALS
        counts = ", ".join(f"{len(section[m])} {m}" for m in MARKETS)
        print(f"ok: {path}: {args.region} prices fetched {section['fetched']}: {counts}")
    table = PriceTable(region=args.region, local_file=path)
    print(f"prices: {table.source}")
    for name in args.types:
        cells = []
        for market in MARKETS:
            try:
                cells.append(f"{market} {table.hourly(name, market):.4f}")
            except PriceError as exc:
                cells.append(f"{market} - ({exc})" if market == "on-demand" else f"{market} -")
        print(f"{name}: " + ", ".join(cells))
    return 0


def _cmd_gpus(args: argparse.Namespace) -> int:
    try:
        return _gpus(args)
    except Exception as exc:
        if args.json:  # a JSON reader gets JSON either way; the one line still goes to stderr
            print(json.dumps({"error": str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}))
        raise


def _gpus(args: argparse.Namespace) -> int:
    from lambda_src.core.gpu_slots import LayoutError, parse_layout, whole_node
    from lambda_src.core.gpus import faulty_gpus, parse_nvidia_smi_xml, xid_faults
    from lambda_src.core.node_slots import plan_node, render
    from lambda_src.host.nvidia_smi import read_nvidia_smi

    try:
        layout = parse_layout(args.layout) if args.layout else None
    except LayoutError as exc:
        raise UsageError(f"--layout {args.layout}: {exc}") from None
    kernel_log = Path(args.kernel_log).read_text(encoding="utf-8", errors="replace").splitlines() if args.kernel_log else []
    text = Path(args.nvidia_smi_xml).read_text(encoding="utf-8") if args.nvidia_smi_xml else read_nvidia_smi()
    gpus = parse_nvidia_smi_xml(text)
    if not gpus:
        raise RuntimeError("nvidia-smi lists no GPU on this machine")
    # The node's own decision (lambda_src/core): which GPUs are faulty, which slots they take out.
    plan = plan_node(gpus, layout or whole_node(len(gpus)), faulty_gpus(gpus, xid_faults(kernel_log)))
    print(json.dumps(plan.to_json(), indent=1) if args.json else render(plan))
    return 0


def _cmd_agent(args: argparse.Namespace) -> int:
    from estate.agent.daemon import CredentialsError, build_agent, install_signal_handlers, run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        agent = build_agent(args)
        install_signal_handlers(agent)
        return run(agent)
    except CredentialsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CREDENTIALS


def _cmd_agent_token(args: argparse.Namespace) -> int:
    from estate.agent.daemon import CredentialsError, app_key_client, mint_token_file
    from lambda_src.github.client import GithubError

    try:
        github = app_key_client(args.api_url, args.org, args.app_id, Path(args.app_key_file), args.installation_id, attempts=2)
        expires = mint_token_file(github, Path(args.out))
    except (CredentialsError, GithubError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CREDENTIALS
    print(f"ok: {args.out} holds a runner-administration token until {expires}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        import flask  # noqa: F401 - moto_server runs on it
        import moto  # noqa: F401 - AWS on loopback
    except ImportError as exc:  # they come with the `serve` extra, not the runtime set
        raise RuntimeError(f"serve needs {exc.name or 'moto'}: pip install 'runner-estate[serve]'") from None
    from estate.local.serve import serve

    serve([_configs(args)], args.port, session=Path(args.session) if args.session else None)
    return 0


def _serve_session(value: str | None) -> Path | None:
    if value is None:
        return None
    if value == "":
        from estate.local.serve import default_session_path

        return default_session_path()
    return Path(value)


def _cmd_status(args: argparse.Namespace) -> int:
    from estate.ops.gather import CredentialsError
    from estate.ops.main import status, target_of

    try:
        target = target_of(PROJECT_DIR, args.stack, _serve_session(args.serve), Path(args.app_key_file) if args.app_key_file else None)
        return status(target, args.json)
    except CredentialsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CREDENTIALS


def _cmd_report(args: argparse.Namespace) -> int:
    from estate.ops.gather import CredentialsError
    from estate.ops.main import report, target_of

    try:
        target = target_of(PROJECT_DIR, args.stack, _serve_session(args.serve))
        return report(target, args.since, args.json, Path(args.plot) if args.plot else None)
    except CredentialsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CREDENTIALS


def _duration(text: str) -> str:
    from estate.ops.report_view import parse_duration

    try:
        parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="estate", description="runner-estate: config, routing and offline preview")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--project", metavar="DIR", help="the project (its Pulumi.yaml): default the current directory or above, else this checkout"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check runner config files and list warnings")
    p.add_argument("paths", nargs="*", help="pool YAML files or directories of them (default with --stack: its runner_configs)")
    p.add_argument("--stack", help="also check the stack Pulumi.<NAME>.yaml with them, as preview does; its warnings too")
    p.add_argument("--quiet", action="store_true", help="no warning lines (the count stays in the last line)")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("route", help="which pools serve a job with these runs-on labels, most preferred first")
    p.add_argument("--configs", help=f"directory of pool files (default the project's {DEFAULT_CONFIGS})")
    p.add_argument("--explain", action="store_true", help="say for every pool why it does or does not match, in route order (stderr)")
    p.add_argument("--repo", help="the job's repository (NAME or OWNER/NAME): apply the stack's runner groups as GitHub does")
    p.add_argument("--public", action="store_true", help="with --repo: the repository is public")
    p.add_argument("--workflow", help="with --repo: OWNER/REPO/PATH@REF of the workflow that defines the job")
    p.add_argument("--stack", default="prod", help="with --repo: the stack whose runner groups apply (default prod)")
    p.add_argument("labels", nargs="+", metavar="LABEL[,LABEL...]")
    p.set_defaults(func=_cmd_route)

    p = sub.add_parser("schema", help="print the JSON Schema of a runner_configs file: a pool or a Buildkite queue")
    p.set_defaults(func=_cmd_schema)

    p = sub.add_parser("preview", help="run the Pulumi program offline under mocks")
    p.add_argument("--stack", default="prod", help="stack name: reads Pulumi.<stack>.yaml (default prod)")
    p.add_argument("--json", action="store_true", help="print every registered resource as one JSON array")
    p.add_argument("--quiet", action="store_true", help="no notes or warnings on stderr (errors and mandatory policy violations stay)")
    p.set_defaults(func=_cmd_preview)
    p = sub.add_parser("doctor", help="read-only preflight of the stack's AWS account and GitHub App, one line per check")
    p.add_argument("--stack", default="prod", help="stack name: reads Pulumi.<stack>.yaml (default prod)")
    p.add_argument("--json", action="store_true", help="one JSON array of {check, status, detail, fix}")
    p.add_argument("--app-key-file", help="the App's private key (.pem); default: the copy a deploy stored in SSM")
    p.set_defaults(func=_cmd_doctor)
    p = sub.add_parser(
        "guard", help="fail when a `pulumi preview --json` would replace or delete the webhook endpoint, ledger or a reservation"
    )
    p.add_argument("preview", help="file holding the output of `pulumi preview --json`")
    p.set_defaults(func=_cmd_guard)
    p = sub.add_parser("simulate", help="the real planners and other policies on a job trace: waits and cost side by side")
    p.add_argument("--trace", help="JSON Lines trace (default: the embedded FlashInfer-like pull-request workload)")
    p.add_argument("--configs", help=f"pool files directory (default the project's {DEFAULT_CONFIGS})")
    p.add_argument("--policy", default="all", choices=["estate", "philips", "philips-ephemeral", "buildkite", "static", "ideal", "all"])
    p.add_argument("--json", action="store_true", help="one JSON object: {policies: {name: {jobs_served, wait_s, cost_usd, ...}}}")
    p.add_argument("--plot", help="write a PNG of queue depth and running instances per policy, with the table")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated trace and of the simulated EC2 (default 0)")
    # --days, --workload and --failed-runs shape the generated trace: None tells "not given" from the default.
    p.add_argument("--days", type=_above_zero, help="length of the generated trace in days, more than 0 (default 1)")
    p.add_argument(
        "--workload",
        choices=["flashinfer", "sharded", "many-short"],
        help="generated trace: FlashInfer's PR Test run (default), a suite sharded into short GPU jobs, or many short CPU and GPU jobs",
    )
    p.add_argument("--failed-runs", type=_share, help="share of generated runs that fail and are cancelled (default 0.3)")
    p.add_argument(
        "--prices",
        help='JSON price overrides: {"<type>": {"on-demand": x, "spot": y, "capacity-block": z}}, or a file `prices --refresh` wrote',
    )
    p.add_argument("--region", default=DEFAULT_PRICE_REGION, help=f"price instances as in this region (default {DEFAULT_PRICE_REGION})")
    p.add_argument("--spot-interruptions", type=_rate, default=0.0, help="spot interruptions per instance-hour, 0 or more (default 0)")
    p.add_argument("--capacity-errors", type=_share, default=0.0, help="share of spot launches refused for capacity (default 0)")
    p.add_argument("--seeds", type=_positive, default=1, help="run seeds --seed .. --seed+N-1; report mean and range (default 1)")
    p.add_argument("--sensitivity", choices=["boot"], help="boot: rerun with every host's boot at 75/150/240/300 s")
    p.set_defaults(func=_cmd_simulate)
    p = sub.add_parser("prices", help="where instance prices come from, prices of TYPEs; --refresh fetches this account's from AWS")
    p.add_argument("types", nargs="*", metavar="TYPE", help="instance types to price (USD per instance-hour)")
    p.add_argument("--region", default=DEFAULT_PRICE_REGION, help=f"region (default {DEFAULT_PRICE_REGION})")
    p.add_argument(
        "--refresh",
        action="store_true",
        help="fetch the Price List, spot price history and capacity-block offerings for the region (needs AWS credentials)",
    )
    p.add_argument("--days", type=float, default=30.0, help="with --refresh: days of spot price history to average (default 30)")
    p.add_argument("--out", help="local price file (default $RUNNER_ESTATE_PRICES or ~/.cache/runner-estate/ec2-prices.json)")
    p.set_defaults(func=_cmd_prices)
    p = sub.add_parser("gpus", help="this machine's NVIDIA GPUs and how a slot layout splits them into runners")
    p.add_argument("--nvidia-smi-xml", help="read `nvidia-smi -q -x` output from this file instead of running nvidia-smi")
    p.add_argument("--layout", help="slot layout, COUNTxGPUS terms joined by '+' (default: one slot with every GPU)")
    p.add_argument("--kernel-log", help="kernel log (dmesg) to read fault XIDs from, as the node's slot manager does")
    p.add_argument("--json", action="store_true", help="one JSON object: {gpus, layout, slots, unused_gpus}; {error} on failure")
    p.set_defaults(func=_cmd_gpus)
    p = sub.add_parser("agent", help="keep ephemeral JIT runner slots on this machine (bare metal, lab GPU boxes)")
    p.add_argument("--org", required=True, help="GitHub organisation the runners register with")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--runners", type=int, default=1, help="runner slots on this host (default 1)")
    size.add_argument("--gpu-layout", help="one slot per GPU slot of this layout, e.g. 1x4+4x1 (each pinned to its GPUs)")
    p.add_argument("--labels", nargs="*", default=[], help="extra labels (architecture and GPUs are detected)")
    p.add_argument("--idle-timeout", type=float, default=300.0, help="seconds a slot may sit idle before it deregisters (default 300)")
    p.add_argument("--health-interval", type=float, default=30.0, help="seconds between reconciliations with GitHub (default 30)")
    p.add_argument("--poll-interval", type=float, default=30.0, help="seconds between polls for queued jobs while parked (default 30)")
    p.add_argument("--watch-repos", nargs="*", default=[], help="owner/repo whose queued jobs wake parked slots")
    p.add_argument("--group", default="Default", help="runner group (default Default)")
    p.add_argument("--name-prefix", default="agent-", help="runner names are <prefix><host>-s<slot> (default agent-)")
    p.add_argument("--host", help="host name in runner names (default: this machine's)")
    p.add_argument("--api-url", default="https://api.github.com")
    p.add_argument("--token-file", help="installation token JSON the control plane keeps fresh (preferred); mode 600")
    p.add_argument("--app-id", type=int, help="GitHub App id, with --app-key-file")
    p.add_argument("--app-key-file", help="the App's private key, readable by its owner only")
    p.add_argument("--installation-id", type=int)
    p.add_argument("--runner-dir", default="/opt/actions-runner", help="runner software; downloaded by version when absent")
    p.add_argument("--runner-version", default=DEFAULT_RUNNER_VERSION)
    p.add_argument("--runner-sha256", help="checksum of the runner archive (checked when downloading)")
    p.add_argument(
        "--runner-command", help="run this program instead of <runner-dir>/run.sh (it reads the JIT config from its environment)"
    )
    p.add_argument(
        "--run-as",
        help="user the runners (and so every job) run as: required; not root, not the agent's own user, unable to read its credential",
    )
    p.add_argument("--nvidia-smi-xml", help="read GPUs from this `nvidia-smi -q -x` output instead of running nvidia-smi")
    p.set_defaults(func=_cmd_agent)
    p = sub.add_parser("agent-token", help="mint a runner-administration installation token file for an agent host (where the App key is)")
    p.add_argument("--org", required=True)
    p.add_argument("--app-id", type=int, required=True)
    p.add_argument("--app-key-file", required=True, help="the App's private key, readable by its owner only")
    p.add_argument("--installation-id", type=int)
    p.add_argument("--api-url", default="https://api.github.com")
    p.add_argument("--out", required=True, help="token file to write (mode 600), then ship it to the host")
    p.set_defaults(func=_cmd_agent_token)
    p = sub.add_parser("serve", help="run the control plane locally on loopback (moto + a fake GitHub); prints webhook and secret")
    p.add_argument("--port", type=int, default=0, help="webhook port on 127.0.0.1 (default: any free port)")
    p.add_argument("--configs", help=f"pool files directory (default the project's {DEFAULT_CONFIGS})")
    p.add_argument("--session", help="where to say how to reach it, for status/report --serve (default ~/.cache/runner-estate/serve.json)")
    p.set_defaults(func=_cmd_serve)
    for name, help_text in (
        ("status", "the live estate on one screen: per pool queued/booting/idle/busy, the oldest waiting job and why, blocks, failures"),
        ("report", "what the estate cost over a window: per pool, repository and workflow; idle paid GPU-hours; capacity-block use"),
    ):
        p = sub.add_parser(name, help=help_text)
        where = p.add_mutually_exclusive_group()
        where.add_argument("--stack", help="a deployed stack: reads Pulumi.<stack>.yaml and the stack's AWS account (default prod)")
        where.add_argument(
            "--serve", nargs="?", const="", metavar="SESSION", help="a running `estate serve` (its session file; default its default)"
        )
        p.add_argument("--json", action="store_true", help="one JSON object instead of the table")
        if name == "status":
            p.add_argument("--app-key-file", help="the App's private key (.pem); default: the copy the deploy stored in SSM")
            p.set_defaults(func=_cmd_status)
        else:
            p.add_argument("--since", required=True, type=_duration, metavar="DURATION", help="the window: 90m, 24h, 7d, 2w")
            p.add_argument("--plot", metavar="PNG", help="also write cost per pool, the dearest repositories and block use as a PNG")
            p.set_defaults(func=_cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help and --version (0), or a usage error argparse has printed
        return done.code if isinstance(done.code, int) else EXIT_USAGE
    try:
        code: int = args.func(args)
        return code
    except UsageError as exc:
        print(f"error: estate {args.command}: {exc} (see estate {args.command} --help)", file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except Exception as exc:  # noqa: BLE001 - the CLI's promise is one line, not a traceback
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return 1
