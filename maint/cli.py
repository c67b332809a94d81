"""`maint`: check the configuration, run a duty, serve the schedules, or try it all in a demo.

Exit codes follow the Nagios plugin convention: 0 ok, 1 warning, 2 critical, 3 could not run
(bad configuration, bad arguments, internal error).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys

from maint.duties import DUTIES, missing_section_problem
from maint.errors import ConfigError
from maint.redaction import redact
from maint.tasks.environment import config_path, load_config

EXIT_UNKNOWN = 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # bad arguments are "could not run", not argparse's 2
        self.print_usage(sys.stderr)
        self.exit(EXIT_UNKNOWN, f"{self.prog}: error: {message}\n")


def _prefect_defaults() -> None:
    # This product runs on closed networks: Prefect's server should not try to phone home.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="maint", description="Production runbooks as Prefect flows.")
    parser.add_argument("--config", metavar="PATH",
                        help="configuration file (default: $MAINT_CONFIG, else ./maint.toml)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    config = commands.add_parser("config", help="work with the configuration file")
    config_commands = config.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND",
                                            parser_class=_Parser)
    check = config_commands.add_parser("check", help="validate the configuration; print every problem at once")
    check.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS, help="configuration file")

    run = commands.add_parser("run", help="run one duty now and print its report",
                              description="Run one duty now. Exit 0 ok, 1 warning, 2 critical, 3 could not run.")
    run.add_argument("duty", metavar="DUTY", choices=list(DUTIES), help="one of: " + ", ".join(DUTIES))
    run.add_argument("--json", action="store_true", help="print the report as JSON")
    run.add_argument("--store", metavar="NAME", help="only this [[backup_stores]] entry (backup-verification)")
    run.add_argument("--dry-run", action="store_true", default=None,
                     help="report the plan and change nothing (vacuum)")
    run.add_argument("--apply", action="store_true", default=None,
                     help="really delete the backups the plan names (backup-retention; default: dry run)")
    run.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS, help="configuration file")

    deploy = commands.add_parser(
        "deploy", help="register every configured duty's deployment on a Prefect work pool (needs PREFECT_API_URL)",
        description="Register one deployment per configured duty on an existing process or kubernetes work "
                    "pool, with the [schedules] crons, and the dead man's switch automations. Idempotent: "
                    "running it again changes only what the configuration changed.")
    deploy.add_argument("--pool", metavar="NAME", required=True, help="the work pool (it must exist)")
    deploy.add_argument("--image", metavar="REF", help="container image for flow runs (kubernetes pools)")
    deploy.add_argument("--worker-config", metavar="PATH",
                        help="set MAINT_CONFIG=PATH for the flow runs (default: the worker's own $MAINT_CONFIG)")
    deploy.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS, help="configuration file")

    serve = commands.add_parser("serve", help="serve every duty's deployment on its schedule (needs PREFECT_API_URL)")
    serve.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS, help="configuration file")

    demo = commands.add_parser("demo", help="start a throwaway PostgreSQL and run the duties against it")
    demo.add_argument("--workdir", metavar="DIR", default="maint-demo",
                      help="where the demo writes its configuration and backups (default: ./maint-demo)")
    demo.add_argument("--ui", action="store_true",
                      help="run against a real local Prefect server, then serve the deployments and keep its UI "
                           "up until Ctrl-C")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "config":
            return _config_check(args)
        if args.command == "run":
            return _run(args)
        if args.command == "deploy":
            return _deploy(args)
        if args.command == "serve":
            return _serve(args)
        if args.command == "demo":
            from maint.demo import run_demo

            _prefect_defaults()
            return run_demo(args.workdir, run_command=main, ui=args.ui)
    except ConfigError as exc:
        print(f"maint: {exc}", file=sys.stderr)
        return EXIT_UNKNOWN
    except KeyboardInterrupt:
        print("maint: interrupted", file=sys.stderr)
        return EXIT_UNKNOWN
    raise AssertionError(f"unhandled command {args.command}")


def _config_check(args) -> int:
    path = config_path(args.config)
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"{path}: {len(exc.problems)} problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_UNKNOWN
    scheduled = ", ".join(f"{d} ({c})" for d, c in config.schedules.items()) or "none"
    watched = "".join([f", {len(config.cloud_sql)} Cloud SQL instance(s)" if config.cloud_sql else "",
                       f", Velero in namespace {config.velero.namespace}" if config.velero else ""])
    print(f"{path}: OK: {len(config.databases)} database(s), {len(config.backup_stores)} backup store(s){watched}; "
          f"schedules in {config.timezone}: {scheduled}")
    return 0


def _run(args) -> int:
    from maint.report import Report

    duty = DUTIES[args.duty]  # argparse allowed only these
    path = config_path(args.config)
    config = load_config(path)  # before any I/O: a bad file never reaches the flow
    problem = missing_section_problem(duty, config)
    if problem:
        raise ConfigError([f"{path}: {problem}"])
    _prefect_defaults()
    from maint.flows import load_flow

    flow = load_flow(duty)
    parameters = {"config_path": str(path.resolve())}
    accepted = inspect.signature(flow.fn).parameters
    for option in ("store", "dry_run", "apply"):
        value = getattr(args, option)
        if value is None:
            continue
        if option not in accepted:
            print(f"maint: --{option.replace('_', '-')} does not apply to {duty.name}", file=sys.stderr)
            return EXIT_UNKNOWN
        parameters[option] = value
    if "store" in parameters and parameters["store"] not in {s.name for s in config.backup_stores}:
        known = ", ".join(s.name for s in config.backup_stores) or "none"
        raise ConfigError([f"--store: no [[backup_stores]] entry named {parameters['store']!r} (known: {known})"])
    from maint.flows._duty import report_of, run_now

    state = run_now(flow, **parameters)
    result = state.result(raise_on_failure=False)
    data = report_of(result)
    if data is None:
        print(f"maint {duty.name}: could not run: {redact(str(result))}", file=sys.stderr)
        return EXIT_UNKNOWN
    report = Report.from_dict(data)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.to_text())
    return report.status.exit_code


def _prefect_api_or_explain(command: str) -> bool:
    _prefect_defaults()
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return True
    print(f"maint {command}: PREFECT_API_URL is not set. Schedules need a real Prefect server, not the "
          "temporary one `maint run` starts. Start one (`prefect server start`) and set "
          "PREFECT_API_URL=http://127.0.0.1:4200/api, or point it at Prefect Cloud.", file=sys.stderr)
    return False


def _plans(command: str, path, config, **kwargs):
    from maint.deployments import plan_deployments

    plans = plan_deployments(config, **kwargs)
    if not plans:
        print(f"maint {command}: nothing to deploy: {path} configures none of the duties", file=sys.stderr)
    return plans


def _schedule_words(plan) -> str:
    return f"{plan.cron} ({plan.timezone})" if plan.cron else "manual runs only"


def _apply_switch(client, applied, config) -> None:
    from datetime import datetime, timezone

    from maint.deployments.automations import apply_automations

    for name, outcome in apply_automations(client, applied, config, datetime.now(timezone.utc)):
        print(f"automation {name!r}: {outcome}")
    if config.dead_mans_switch.enabled and not (config.notify.slack_webhook_url_env or
                                                config.notify.pagerduty_routing_key_env):
        print("maint: warning: [notify] has neither Slack nor PagerDuty: the dead man's switch has no one to tell",
              file=sys.stderr)


def _deploy(args) -> int:
    path = config_path(args.config)
    # Before any API call: a bad file changes nothing. The databases' secrets are the workers' business;
    # the [notify] ones are read below, into the notification blocks.
    config = load_config(path, check_env=False)
    if not _prefect_api_or_explain("deploy"):
        return EXIT_UNKNOWN
    from prefect.client.orchestration import get_client

    from maint.deployments import DeployError, apply_deployment, check_work_pool

    job_variables = {"image": args.image} if args.image else {}
    plans = _plans("deploy", path, config, worker_config=args.worker_config, job_variables=job_variables)
    if not plans:
        return EXIT_UNKNOWN
    with get_client(sync_client=True) as client:
        try:
            pool_type = check_work_pool(client, args.pool, args.image)
        except DeployError as exc:
            print(f"maint deploy: {exc}", file=sys.stderr)
            return EXIT_UNKNOWN
        applied = []
        for plan in plans:
            deployment_id, changes = apply_deployment(client, plan, args.pool)
            applied.append((plan, deployment_id))
            print(f"deployment {plan.full_name} on {args.pool} ({pool_type}): "
                  f"{', '.join(changes) or 'unchanged'}; {_schedule_words(plan)}")
        _apply_switch(client, applied, config)
    return 0


def _serve(args) -> int:
    path = config_path(args.config)
    config = load_config(path)
    if not _prefect_api_or_explain("serve"):
        return EXIT_UNKNOWN
    from prefect import serve
    from prefect.client.orchestration import get_client

    from maint.deployments import build_deployments, remove_stale_schedules

    plans = _plans("serve", path, config)
    if not plans:
        return EXIT_UNKNOWN
    # Served runs are child processes of this one: they read the configuration it was given.
    os.environ["MAINT_CONFIG"] = str(path.resolve())
    deployments = build_deployments(plans)
    with get_client(sync_client=True) as client:
        for name, changes in remove_stale_schedules(client, plans).items():
            print(f"deployment {name}: {', '.join(changes)}")
        applied = [(plan, deployment.apply()) for plan, deployment in zip(plans, deployments)]
        _apply_switch(client, applied, config)
    for plan in plans:
        print(f"serving {plan.name}: {_schedule_words(plan)}")
    serve(*deployments)
    return 0


if __name__ == "__main__":
    sys.exit(main())
