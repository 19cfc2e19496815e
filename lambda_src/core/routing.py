"""Label routing: which pools may serve a job, most preferred first.

GitHub gives a job to a runner when the job's `runs-on` labels are a subset of the runner's
labels, compared case-insensitively, and the runner's group admits the job's repository (and,
where the group is restricted to workflows, the workflow that defines the job). A pool states
its runner labels (one set per GPU slot size) and, with `exact_match`, the label sets it
accepts jobs for. The table is compiled once from validated config (see
`estate.config.loader.Estate.routing_table`) and read as JSON by the Lambdas; this module is
pure and stdlib-only so the webhook, the scaler, the CLI and the simulator share it.

Order among the pools that serve a job (docs/architecture.md, "Routing"): exact matchers,
then lower priority, then the least capable pool (fewest runner labels beyond the job's),
then capacity blocks, spot, on-demand, then price per runner-hour and name. A pool that cannot
take the job at all (drained, or its group does not admit the job) is passed over here; one
that cannot take it *now* (capped) is the planner's call (`core/overflow.py`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# Paid-for capacity first, then the cheap interruptible kind, then its on-demand failover.
CAPACITY_PREFERENCE: Mapping[str, int] = {"capacity-block": 0, "spot": 1, "on-demand": 2}
TABLE_VERSION = 1


def normalise(labels: Iterable[str]) -> frozenset[str]:
    return frozenset(label.strip().lower() for label in labels if label.strip())


# ---- who may use a pool ------------------------------------------------------------------


@dataclass(frozen=True)
class JobOrigin:
    """What GitHub's runner-group policy looks at, as far as we know it for a job.

    `workflow` is `OWNER/REPO/PATH@REF` of the workflow file that *defines* the job (for a job
    of a reusable workflow, the called file, not the caller). A `workflow_job` payload does not
    carry it (only `workflow_name`, the display name, and the run's `head_branch`/`head_sha`),
    so the webhook leaves it None and a group's workflow restriction is then not applied here:
    GitHub still applies it. See docs/architecture.md, "Routing"."""

    repository: str  # OWNER/NAME, as `repository.full_name` gives it
    public: bool = False  # `repository.private` is false (or visibility "public")
    workflow: str | None = None
    # The workflow files of the job's run, `OWNER/REPO/PATH@REF` (the run's own file and every
    # reusable one it calls), once the scaler has asked GitHub for the run; None until then.
    # The job is defined in one of them, which one the API does not say.
    run_workflows: tuple[str, ...] | None = None


def _split_workflow(ref: str) -> tuple[str, str, str] | None:
    """`OWNER/REPO/PATH@REF` -> ("owner/repo", "PATH", "REF"); None if it is not one."""
    target, at, version = ref.strip().rpartition("@")
    parts = target.split("/", 2)
    if not at or len(parts) != 3 or not all(parts) or not version:
        return None
    return f"{parts[0]}/{parts[1]}".lower(), parts[2], version


def _ref_forms(ref: str) -> set[str]:
    """The full refs a pin may stand for: `refs/heads/main` is itself, a short `main` may be
    that branch or a tag of that name (GitHub advises full refs for this reason), a full
    SHA is itself in any case."""
    if ref.startswith("refs/"):
        return {ref}
    if len(ref) == 40 and all(c in "0123456789abcdefABCDEF" for c in ref):
        return {ref.lower()}
    return {ref, f"refs/heads/{ref}", f"refs/tags/{ref}"}


def same_file(entry: str, workflow: str) -> bool:
    """Whether a `selected_workflows` entry and a workflow name the same file (owner and
    repository case-insensitively, the path exactly), whatever refs they pin."""
    want, have = _split_workflow(entry), _split_workflow(workflow)
    return want is not None and have is not None and want[:2] == have[:2]


def run_workflow_files(repository: str, run: Mapping[str, Any]) -> tuple[str, ...]:
    """`OWNER/REPO/PATH@REF` of every workflow file of a run (GitHub's workflow-run object):
    its own `path` at its head branch (or commit), and each of its `referenced_workflows`,
    whose `path` already names repository and ref."""
    files = []
    path = str(run.get("path") or "").split("@", 1)[0]
    ref = run.get("head_branch") or run.get("head_sha") or ""
    if path and ref:
        files.append(f"{repository}/{path}@{ref}")
    for called in run.get("referenced_workflows") or ():
        if isinstance(called, Mapping) and _split_workflow(str(called.get("path", ""))) is not None:
            files.append(str(called["path"]))
    return tuple(files)


def workflow_matches(entry: str, workflow: str) -> bool:
    """Whether a runner group's `selected_workflows` entry names this workflow: owner and
    repository case-insensitively, the path exactly (git paths are case-sensitive), the ref in
    any spelling of the same pin."""
    want, have = _split_workflow(entry), _split_workflow(workflow)
    if want is None or have is None or want[:2] != have[:2]:
        return False
    return bool(_ref_forms(want[2]) & _ref_forms(have[2]))


@dataclass(frozen=True)
class Admission:
    """A pool's runner group, as GitHub applies it: the repositories it admits (None: every
    repository of the org, e.g. the unmanaged `Default` group), the workflows it is restricted
    to (empty: any), and whether public repositories may use it (GitHub's default: no)."""

    group: str
    repositories: frozenset[str] | None = None  # OWNER/NAME, lower case
    workflows: tuple[str, ...] = ()
    public: bool = False

    def refusal(self, origin: JobOrigin) -> str | None:
        """Why the group does not admit a job from `origin`; None when it does (or may)."""
        repo = origin.repository.strip().lower()
        if origin.public and not self.public:
            return f"runner group {self.group} does not admit public repository {repo or '(none)'}"
        if self.repositories is not None and repo not in self.repositories:
            return f"runner group {self.group} does not admit repository {repo or '(none)'}"
        if self.workflows and origin.workflow is not None and not any(workflow_matches(w, origin.workflow) for w in self.workflows):
            return f"runner group {self.group} does not admit workflow {origin.workflow}"
        if (
            self.workflows
            and origin.run_workflows is not None
            and not any(same_file(w, f) for w in self.workflows for f in origin.run_workflows)
        ):
            # Refused only when no selected workflow names any file of the run: the ref a
            # pull-request run resolves to is GitHub's to judge, and a wrong refusal strands a job.
            return f"runner group {self.group} admits none of the workflows of its run ({', '.join(origin.run_workflows) or 'none'})"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "repositories": None if self.repositories is None else sorted(self.repositories),
            "workflows": list(self.workflows),
            "public": self.public,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Admission:
        repos = data.get("repositories")
        return cls(
            group=str(data["group"]),
            repositories=None if repos is None else frozenset(str(r).lower() for r in repos),
            workflows=tuple(str(w) for w in data.get("workflows", ())),
            public=bool(data.get("public", False)),
        )


# ---- one pool ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolRoute:
    pool: str
    exact_match: bool
    priority: int
    capacity_type: str
    label_matchers: tuple[frozenset[str], ...]
    runner_label_sets: tuple[frozenset[str], ...]
    max_runners: int | None = None  # runners_maximum_count after hard limits; 0: drained
    hourly_usd: float | None = None  # the cheapest runner-hour it offers; None: no price known
    admission: Admission | None = None  # None: not compiled (no stack): labels decide alone

    @property
    def preference(self) -> tuple[int, int, int, str]:
        """The part of the order that does not depend on the job: exact, priority, capacity kind, name."""
        return (0 if self.exact_match else 1, self.priority, CAPACITY_PREFERENCE[self.capacity_type], self.pool)

    def rank(self, job_labels: frozenset[str]) -> tuple[int, int, int, int, float, str]:
        """Sort key among the pools that serve a job (smaller first)."""
        price = math.inf if self.hourly_usd is None else self.hourly_usd
        exact, priority, capacity, name = self.preference
        return (exact, priority, self.extra_labels(job_labels), capacity, price, name)

    def extra_labels(self, job_labels: frozenset[str]) -> int:
        """How much more the pool's runner offers than the job asks: a plain job belongs on
        the least capable runner that takes it, not on a GPU slot."""
        fitting = [s for s in self.runner_label_sets if job_labels <= s] or list(self.runner_label_sets)
        return min(len(s - job_labels) for s in fitting)

    @property
    def drained(self) -> bool:
        return self.max_runners == 0

    def _candidate_sets(self) -> tuple[frozenset[str], ...]:
        return self.label_matchers if self.exact_match else self.runner_label_sets

    def serves(self, job_labels: frozenset[str]) -> bool:
        """Whether the labels alone route the job here (GitHub's subset rule or the matchers)."""
        return bool(job_labels) and any(job_labels <= s for s in self._candidate_sets())

    def refusal(self, origin: JobOrigin | None) -> str | None:
        """Why the pool cannot take a job it serves by labels; None when it can."""
        if self.drained:
            return "drained (runners_maximum_count: 0)"
        if origin is not None and self.admission is not None:
            return self.admission.refusal(origin)
        return None

    def explain(self, job_labels: frozenset[str], origin: JobOrigin | None = None) -> str:
        """Why this pool does or does not take the job, in one line."""
        against = "label matcher" if self.exact_match else "runner label set"
        if not job_labels:
            return "no: the job has no labels"
        best = min(self._candidate_sets(), key=lambda s: (len(job_labels - s), sorted(s)))
        missing = job_labels - best
        if missing:
            return f"no: closest {against} [{', '.join(sorted(best))}] lacks {', '.join(sorted(missing))}"
        refused = self.refusal(origin)
        if refused is not None:
            return f"no: {refused}"
        extra = self.extra_labels(job_labels)
        price = "price unknown" if self.hourly_usd is None else f"${self.hourly_usd:.2f}/runner-hour"
        return (
            f"yes: job labels are a subset of {against} [{', '.join(sorted(best))}];"
            f" {'exact' if self.exact_match else 'loose'} matcher, priority {self.priority},"
            f" {extra} runner label{'s' if extra != 1 else ''} beyond the job's, {self.capacity_type}, {price}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "exact_match": self.exact_match,
            "priority": self.priority,
            "capacity_type": self.capacity_type,
            "label_matchers": [sorted(s) for s in self.label_matchers],
            "runner_label_sets": [sorted(s) for s in self.runner_label_sets],
            "max_runners": self.max_runners,
            "hourly_usd": self.hourly_usd,
            "admission": None if self.admission is None else self.admission.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PoolRoute:
        admission, price, cap = data.get("admission"), data.get("hourly_usd"), data.get("max_runners")
        return cls(
            pool=str(data["pool"]),
            exact_match=bool(data["exact_match"]),
            priority=int(data["priority"]),
            capacity_type=str(data["capacity_type"]),
            label_matchers=tuple(normalise(s) for s in data["label_matchers"]),
            runner_label_sets=tuple(normalise(s) for s in data["runner_label_sets"]),
            max_runners=None if cap is None else int(cap),
            hourly_usd=None if price is None else float(price),
            admission=None if admission is None else Admission.from_dict(admission),
        )


# ---- the table ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Match:
    """A pool whose labels serve the job; `refusal` says why it still cannot take it."""

    pool: str
    refusal: str | None


@dataclass(frozen=True)
class RoutingTable:
    routes: tuple[PoolRoute, ...]

    def __post_init__(self) -> None:
        # A canonical order, so tables compare equal whatever order the pools were loaded in.
        object.__setattr__(self, "routes", tuple(sorted(self.routes, key=lambda r: r.pool)))

    def matches(self, job_labels: Iterable[str], origin: JobOrigin | None = None) -> list[Match]:
        """Every pool whose labels serve the job, most preferred first, each with why it
        cannot take the job (drained, not admitted) or None."""
        wanted = normalise(job_labels)
        serving = sorted((r for r in self.routes if r.serves(wanted)), key=lambda r: r.rank(wanted))
        return [Match(r.pool, r.refusal(origin)) for r in serving]

    def route(self, job_labels: Iterable[str], origin: JobOrigin | None = None) -> list[str]:
        """Pools that can take a job with these labels (from `origin`, when given), most
        preferred first. Without an origin, admission is not applied (the CLI's label question)."""
        return [m.pool for m in self.matches(job_labels, origin) if m.refusal is None]

    def explain(self, job_labels: Iterable[str], origin: JobOrigin | None = None) -> list[tuple[str, str]]:
        """One line per pool: the pools that serve the job in route order, then the others."""
        wanted = normalise(job_labels)
        ordered = [m.pool for m in self.matches(wanted)]
        rest = [r.pool for r in self.routes if r.pool not in ordered]
        return [(name, self.get(name).explain(wanted, origin)) for name in [*ordered, *rest]]

    def get(self, pool: str) -> PoolRoute:
        for r in self.routes:
            if r.pool == pool:
                return r
        raise KeyError(pool)

    def to_dict(self) -> dict[str, Any]:
        return {"version": TABLE_VERSION, "routes": [r.to_dict() for r in self.routes]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RoutingTable:
        if data.get("version") != TABLE_VERSION:
            raise ValueError(f"routing table version {data.get('version')!r} is not supported (want {TABLE_VERSION})")
        return cls(tuple(PoolRoute.from_dict(r) for r in data["routes"]))
