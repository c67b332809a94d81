"""One Prefect deployment per configured duty, scheduled from [schedules] in [timezone].

Two ways to run them, one description of what each deployment is (`plan_deployments`):
- `maint deploy --pool NAME`: registered on a work pool; a worker runs each flow run by importing
  the installed package (module-path entrypoints: no code storage, no pull steps). The worker
  finds the configuration in its own `$MAINT_CONFIG`, so no path of the deploying machine is
  baked into a deployment. `apply_deployment` compares and changes only what differs: running it
  twice changes nothing.
- `maint serve`: the same deployments served by this process (`build_deployments`).

Schedules carry a stable slug per duty; a maint schedule whose cron left the configuration is
deleted (`sync_schedules`), under both. A schedule someone added by hand (another slug) is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from maint import __version__
from maint.config import MaintConfig
from maint.duties import DUTIES, Duty, missing_section_problem
from maint.errors import ConfigError
from maint.flows import load_flow

SCHEDULE_SLUG_PREFIX = "maint-"

# The duties that change things or take hours: one run at a time per deployment. A run that finds
# one already running is cancelled (CANCEL_NEW), not queued: the running one is doing the work,
# and a queue of restores behind a stuck one would only pile up load; the stuck one pages through
# the dead man's switch. Runs started outside Prefect's deployments are held off by the duty's
# own lock (README, "Overlapping runs").
ONE_AT_A_TIME = ("backup", "vacuum", "restore-test", "dr-drill", "backup-retention")
COLLISION_STRATEGY = "CANCEL_NEW"


def schedule_slug(duty: str) -> str:
    """Stable, so redeploying updates the schedule instead of adding a second one."""
    return f"{SCHEDULE_SLUG_PREFIX}{duty}"


def flow_entrypoint(duty: Duty) -> str:
    """Module path, not file path: the worker imports the installed package."""
    return f"maint.flows.{duty.flow_module}.{duty.flow_module}"


def config_description(worker_config: str | None) -> str:
    where = f"MAINT_CONFIG={worker_config}, set on this deployment" if worker_config else \
        "$MAINT_CONFIG in the worker's environment (else ./maint.toml in its working directory)"
    return f"Configuration: {where}."


@dataclass(frozen=True)
class DeploymentPlan:
    """What one duty's deployment should be, whichever way it is registered."""

    duty: Duty
    cron: str | None
    timezone: str
    description: str
    tags: list[str]
    version: str
    concurrency_limit: int | None
    parameter_schema: dict[str, Any]
    job_variables: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)  # defaults of scheduled and manual runs

    @property
    def name(self) -> str:
        return self.duty.name

    @property
    def entrypoint(self) -> str:
        return flow_entrypoint(self.duty)

    @property
    def full_name(self) -> str:
        """`flow/deployment`, as Prefect looks a deployment up."""
        return f"{self.duty.name}/{self.name}"


def plan_deployments(config: MaintConfig, *, worker_config: str | None = None,
                     job_variables: dict[str, Any] | None = None) -> list[DeploymentPlan]:
    from prefect.utilities.callables import parameter_schema

    plans = []
    for duty in DUTIES.values():
        if missing_section_problem(duty, config):
            continue  # not configured here: nothing to deploy
        schema = parameter_schema(load_flow(duty)).model_dump(exclude_unset=True)
        parameters = dict(config.deploy.parameters.get(duty.name, {}))
        unknown = sorted(set(parameters) - set(schema["properties"]))
        if unknown:
            raise ConfigError([f"deploy.parameters.{duty.name}.{name}: {duty.name} takes no such parameter "
                               f"(it takes: {', '.join(schema['properties'])})" for name in unknown])
        variables = {**(job_variables or {}), **config.deploy.job_variables.get(duty.name, {})}
        if worker_config:
            variables["env"] = {**variables.get("env", {}), "MAINT_CONFIG": worker_config}
        plans.append(DeploymentPlan(
            duty=duty,
            cron=config.schedules.get(duty.name),
            timezone=config.timezone,
            description=f"{duty.summary}. {config_description(worker_config)} maint {__version__}.",
            tags=["maint", *duty.tags],
            version=__version__,
            concurrency_limit=1 if duty.name in ONE_AT_A_TIME else None,
            parameter_schema=schema,
            job_variables=variables,
            parameters=parameters,
        ))
    return plans


# --- maint deploy: a work pool ------------------------------------------------------------------

def _concurrency_options(plan: DeploymentPlan):
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy, ConcurrencyOptions

    if plan.concurrency_limit is None:
        return None
    return ConcurrencyOptions(collision_strategy=ConcurrencyLimitStrategy(COLLISION_STRATEGY))


def _drift(existing, plan: DeploymentPlan, pool: str) -> list[str]:
    """The fields of an existing deployment that differ from the plan."""
    limit = existing.global_concurrency_limit.limit if existing.global_concurrency_limit else None
    strategy = existing.concurrency_options.collision_strategy.value if existing.concurrency_options else None
    wanted = {
        "version": (existing.version, plan.version),
        "description": (existing.description, plan.description),
        "tags": (sorted(existing.tags), sorted(plan.tags)),
        "entrypoint": (existing.entrypoint, plan.entrypoint),
        "work pool": (existing.work_pool_name, pool),
        "job variables": (existing.job_variables or {}, plan.job_variables),
        "parameters": (existing.parameters or {}, plan.parameters),
        "parameter schema": (existing.parameter_openapi_schema, plan.parameter_schema),
        "enforced parameter schema": (existing.enforce_parameter_schema, True),
        "pull steps": (existing.pull_steps or [], []),
        "path": (existing.path, None),
        "concurrency limit": (limit, plan.concurrency_limit),
        "collision strategy": (strategy, COLLISION_STRATEGY if plan.concurrency_limit else None),
    }
    return [name for name, (have, want) in wanted.items() if have != want]


def apply_deployment(client, plan: DeploymentPlan, pool: str) -> tuple[UUID, list[str]]:
    """Create or update one deployment on `pool` (a SyncPrefectClient); returns its id and what
    changed, in words (empty: nothing)."""
    from prefect.client.schemas.actions import DeploymentUpdate
    from prefect.exceptions import ObjectNotFound

    try:
        existing = client.read_deployment_by_name(plan.full_name)
    except ObjectNotFound:
        existing = None
    common = dict(version=plan.version, description=plan.description, tags=plan.tags, parameters=plan.parameters,
                  work_pool_name=pool, entrypoint=plan.entrypoint, path=None, pull_steps=[],
                  job_variables=plan.job_variables, parameter_openapi_schema=plan.parameter_schema,
                  enforce_parameter_schema=True, concurrency_limit=plan.concurrency_limit,
                  concurrency_options=_concurrency_options(plan))
    if existing is None:
        deployment_id = client.create_deployment(
            flow_id=client.create_flow_from_name(plan.duty.name), name=plan.name,
            schedules=[_schedule_create(plan)] if plan.cron else [], **common)
        return deployment_id, ["created"]
    changes = _drift(existing, plan, pool)
    if changes:
        client.update_deployment(existing.id, DeploymentUpdate(**common))
    changes += sync_schedules(client, existing.id, existing.schedules, plan)
    return existing.id, changes


def _cron_schedule(plan: DeploymentPlan):
    from prefect.client.schemas.schedules import CronSchedule

    return CronSchedule(cron=plan.cron, timezone=plan.timezone)


def _schedule_create(plan: DeploymentPlan):
    from prefect.client.schemas.actions import DeploymentScheduleCreate

    return DeploymentScheduleCreate(schedule=_cron_schedule(plan), active=True, slug=schedule_slug(plan.name))


def sync_schedules(client, deployment_id: UUID, schedules: list, plan: DeploymentPlan) -> list[str]:
    """Make the deployment's maint schedule the plan's: add, update or delete it by its slug.
    Schedules with other slugs (added by hand) are left alone. Returns what changed, in words."""
    slug = schedule_slug(plan.name)
    changes = []
    ours = [s for s in schedules if s.slug == slug]
    stale = [s for s in schedules if s.slug and s.slug.startswith(SCHEDULE_SLUG_PREFIX) and s.slug != slug]
    if not plan.cron:
        stale += ours
        ours = []
    for schedule in stale:
        client.delete_deployment_schedule(deployment_id, schedule.id)
        changes.append(f"schedule {schedule.slug} removed")
    if plan.cron and not ours:
        client.create_deployment_schedules(deployment_id, [_schedule_create(plan)])
        changes.append(f"schedule {plan.cron!r} ({plan.timezone}) added")
    for schedule in ours:
        # Paused (for maintenance, say) it stays paused: a redeploy changes what the file says.
        current = schedule.schedule
        if (getattr(current, "cron", None), getattr(current, "timezone", None)) != (plan.cron, plan.timezone):
            client.update_deployment_schedule(deployment_id, schedule.id, schedule=_cron_schedule(plan))
            changes.append(f"schedule now {plan.cron!r} ({plan.timezone})")
        if not schedule.active:
            changes.append("schedule paused (left so)")
    return changes


def check_work_pool(client, pool: str, image: str | None) -> str:
    """The pool's type, after checking maint can deploy to it; raises DeployError saying why not."""
    from prefect.exceptions import ObjectNotFound

    try:
        work_pool = client.read_work_pool(pool)
    except ObjectNotFound:
        raise DeployError(f"--pool: no work pool named {pool!r} on the Prefect server: create it first, "
                          f"e.g. `prefect work-pool create {pool} --type process`") from None
    if work_pool.type not in ("process", "kubernetes"):
        raise DeployError(f"--pool: work pool {pool!r} is of type {work_pool.type!r}; maint deploys to "
                          "process and kubernetes pools")
    if image and work_pool.type == "process":
        raise DeployError(f"--image: work pool {pool!r} runs flows as local processes, which take no image")
    pool_image = ((work_pool.base_job_template or {}).get("variables", {}).get("properties", {})
                  .get("image", {}).get("default"))
    if work_pool.type == "kubernetes" and not (image or pool_image):
        # Prefect's own image would start, and fail for want of maint.
        raise DeployError(f"--image: work pool {pool!r} runs flows in containers and sets no image: give the "
                          "image with maint installed (deploy/image/Dockerfile), --image REF")
    return work_pool.type


class DeployError(Exception):
    """`maint deploy` cannot go ahead: the message names the option or object."""


# --- maint serve: this process ------------------------------------------------------------------

def build_deployments(plans: list[DeploymentPlan]) -> list:
    """The same deployments as RunnerDeployments, for `prefect.serve` (no work pool)."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    deployments = []
    for plan in plans:
        limit = ConcurrencyLimitConfig(limit=plan.concurrency_limit,
                                       collision_strategy=ConcurrencyLimitStrategy(COLLISION_STRATEGY)) \
            if plan.concurrency_limit else None
        deployments.append(load_flow(plan.duty).to_deployment(
            name=plan.name,
            description=plan.description,
            schedules=[Cron(plan.cron, timezone=plan.timezone, slug=schedule_slug(plan.name))] if plan.cron else [],
            parameters=plan.parameters,
            tags=plan.tags,
            version=plan.version,
            concurrency_limit=limit,
            entrypoint_type=EntrypointType.MODULE_PATH,
        ))
    return deployments


def remove_stale_schedules(client, plans: list[DeploymentPlan]) -> dict[str, list[str]]:
    """Before serving: `prefect.serve` keeps a schedule whose cron was removed; delete it here."""
    from prefect.exceptions import ObjectNotFound

    removed = {}
    for plan in plans:
        if plan.cron:
            continue  # serve replaces it with the configured one
        try:
            existing = client.read_deployment_by_name(plan.full_name)
        except ObjectNotFound:
            continue
        changes = sync_schedules(client, existing.id, existing.schedules, plan)
        if changes:
            removed[plan.name] = changes
    return removed
