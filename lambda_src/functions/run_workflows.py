"""Name the workflow files of queued jobs whose pools' runner groups admit selected workflows
only: a `workflow_job` webhook does not say which file defines the job, the run does. Shared
by the scaler and the capacity-block manager, so neither launches (or buys a block) for a job
GitHub will never give their runners."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace

from lambda_src.aws.ledger import Ledger
from lambda_src.core.fleet_state import Job
from lambda_src.core.routing import RoutingTable, run_workflow_files
from lambda_src.github.client import GithubClient, GithubError

log = logging.getLogger("runner_estate.run_workflows")

MAX_RUN_LOOKUPS = 20  # GitHub calls one invocation may spend on runs; the rest wait for the next cycle


def restricted(routing: RoutingTable, pool: str) -> bool:
    """Whether the pool's runner group admits selected workflows only."""
    admission = next((r.admission for r in routing.routes if r.pool == pool), None)
    return admission is not None and bool(admission.workflows)


def name_run_workflows(jobs: Iterable[Job], routing: RoutingTable, github: GithubClient, ledger: Ledger) -> list[Job]:
    """The jobs, each of a restricted pool given its run's workflow files (asked of GitHub once
    per run, remembered in the ledger). A run GitHub does not show leaves the job as it was:
    GitHub itself still applies the group's restriction."""
    runs: dict[tuple[str, int], tuple[str, ...] | None] = {}
    named = []
    for job in jobs:
        if job.run_workflows is None and job.run_id is not None and job.repo and restricted(routing, job.pool):
            key = (job.repo, job.run_id)
            if key not in runs and len(runs) < MAX_RUN_LOOKUPS:
                try:
                    run = github.workflow_run(job.repo, job.run_id)
                except GithubError as exc:
                    log.warning("run %s of %s: %s; its jobs' workflows stay unknown this cycle", job.run_id, job.repo, exc)
                    run = None
                runs[key] = None if run is None else run_workflow_files(job.repo, run)
            files = runs.get(key)
            if files is not None:
                ledger.job_run_workflows(job.id, files)
                job = replace(job, run_workflows=files)
        named.append(job)
    return named
