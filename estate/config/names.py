"""Every physical name the program creates for an environment, its pools and its Buildkite
queues, checked against each service's limit before anything is registered.

A long environment or pool name would otherwise pass `preview` (the mocks accept any name)
and fail halfway through `pulumi up`. `physical_names` lists what the components build — the
names they set (`name=`, `name_prefix=`, `path=`) and the ones Pulumi derives from a resource
name — and `check_names` refuses the first one over its limit with one line: what, how long,
the limit and its source, and the stack or pool file it came from. tests/test_names.py keeps
this list in step with what the program registers and each limit with botocore's models.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from estate.config.buildkite_model import BuildkiteQueue
from estate.config.diagnostics import ConfigError, ConfigWarning
from estate.config.loader import Estate
from estate.config.pool import Pool
from estate.config.stack_config import NAMESPACE, StackConfig, app_key_parameter

# Pulumi names a resource without an explicit name `<resource name>-<7 random characters>`; a
# `name_prefix` gets the provider's 26-character unique suffix (terraform-plugin-sdk
# UniqueIDSuffixLength). Listed names stand for their longest form with these placeholders.
AUTONAME_SUFFIX = "-" + "x" * 7
PREFIX_SUFFIX = "x" * 26
INSTANCE_ID = "i-" + "0" * 17  # EC2 instance ids are i- and 17 hex digits
SCALER = "scaler"  # component names as __main__.py registers them
ALARMS = "alarms"
CB_FUNCTIONS = ("cb_scale_up", "cb_manager")
FUNCTIONS = ("webhook", "scale_up", "reconcile", "scale_down", "redeliver", "sweep")
SCALER_ALARMS = (
    "webhook-failing",
    "webhook-unauthorised",
    "reconcile-failing",
    "repos-unreadable",
    "spot-role-missing",
    "redelivery-blind",
)
# components/estate_alarms.py: per pool (launching per job, or capacity blocks), and with a budget.
POOL_ALARMS = ("jobs-waiting", "launch-failures", "at-cap")
BLOCK_POOL_ALARMS = ("jobs-waiting", "launch-failures", "block-ending-busy", "faulty-gpu")
BUDGET_ALARMS = ("spend-rate",)
IMAGES = "images"  # the ImagePipeline component's name in __main__.py
# Each image family's build steps (estate/derive/image_components.py); the host programs come in
# parts, `host-programs-N`, as many as their size needs: a sample name stands for them.
IMAGE_STEPS = ("os", "docker", "host-programs", "runner", "finish")
IMAGE_PART_SAMPLE = "host-programs-99"


@dataclass(frozen=True)
class Limit:
    what: str
    max: int
    source: str
    botocore: tuple[str, str] | None = None  # (service, shape) whose botocore model states `max`


LIMITS: dict[str, Limit] = {
    "sqs": Limit("SQS queue name", 80, "Amazon SQS quotas: a queue name has up to 80 characters"),
    "lambda": Limit("Lambda function name", 64, "Lambda CreateFunction: a function name has 1-64 characters (140 counts a full ARN)"),
    "iam_role": Limit("IAM role name", 64, "botocore iam CreateRole.RoleName", ("iam", "roleNameType")),
    "iam_path": Limit("IAM path", 512, "botocore iam CreateRole.Path", ("iam", "pathType")),
    "iam_policy": Limit("IAM inline policy name", 128, "botocore iam PutRolePolicy.PolicyName", ("iam", "policyNameType")),
    "iam_profile": Limit(
        "IAM instance profile name",
        128,
        "botocore iam CreateInstanceProfile.InstanceProfileName",
        ("iam", "instanceProfileNameType"),
    ),
    "log_group": Limit("CloudWatch log group name", 512, "botocore logs CreateLogGroup.logGroupName", ("logs", "LogGroupName")),
    "metric_filter": Limit("log metric filter name", 512, "botocore logs PutMetricFilter.filterName", ("logs", "FilterName")),
    "event_rule": Limit("EventBridge rule name", 64, "botocore events PutRule.Name", ("events", "RuleName")),
    "lambda_permission": Limit(
        "Lambda permission statement id", 100, "botocore lambda AddPermission.StatementId", ("lambda", "StatementId")
    ),
    "launch_template": Limit(
        "launch template name",
        128,
        "botocore ec2 CreateLaunchTemplate.LaunchTemplateName (shape LaunchTemplateName)",
        ("ec2", "LaunchTemplateName"),
    ),
    "dynamodb": Limit("DynamoDB table name", 255, "DynamoDB naming rules: 3-255 characters (botocore's 1024 counts a table ARN)"),
    "alarm": Limit("CloudWatch alarm name", 255, "botocore cloudwatch PutMetricAlarm.AlarmName", ("cloudwatch", "AlarmName")),
    "sns": Limit("SNS topic name", 256, "SNS CreateTopic: a topic name has 1-256 characters"),
    "kms_alias": Limit("KMS alias name", 256, "botocore kms CreateAlias.AliasName", ("kms", "AliasNameType")),
    "ssm": Limit(
        "SSM parameter ARN",
        1011,
        "SSM parameter name requirements: the name, with its full ARN, has at most 1011 characters and 15 levels",
    ),
    "cloudformation": Limit("CloudFormation stack name", 128, "CloudFormation: a stack name has at most 128 characters"),
    "dashboard": Limit(
        "CloudWatch dashboard name", 255, "CloudWatch PutDashboard: a dashboard name has up to 255 characters (A-Z, a-z, 0-9, - and _)"
    ),
    "budget": Limit("AWS Budgets budget name", 100, "botocore budgets CreateBudget.BudgetName", ("budgets", "BudgetName")),
    "imagebuilder": Limit(
        "Image Builder resource name",
        128,
        "Image Builder names (botocore imagebuilder shape ResourceName): 1+126+1 characters by its pattern, 128 at most",
    ),
}
# Not an AWS name: GitHub refuses runner names over 64 characters (actions/runner#1710). Warned
# about, not refused: the runner name's form (lambda_src/core/fleet_state.py) is not ours to change here.
RUNNER_NAME = Limit("GitHub runner name", 64, "GitHub: runner names have at most 64 characters (actions/runner#1710)")
SSM_MAX_LEVELS = 15


@dataclass(frozen=True)
class PhysicalName:
    kind: str  # a key of LIMITS
    name: str
    what: str  # which resource, for the message
    pool: Pool | None = None  # the pool (or queue) whose name is in it, if any
    queue: BuildkiteQueue | None = None
    key: str | None = None  # the stack key it comes from, when not the environment
    sample: bool = False  # one of many names of this form (per instance): its length counts, not its uniqueness


def prefix(environment: str) -> str:
    return f"runner-estate-{environment}"


def ledger_table(environment: str) -> str:
    return f"{prefix(environment)}-ledger"


def dead_letter_queues(environment: str, pool: Pool) -> list[str]:
    """A pool's dead-letter queues: its job queue's, and a capacity-block pool's events queue's."""
    found = [f"{prefix(environment)}-{pool.name}-dlq"]
    if pool.capacity_type == "capacity-block":
        found.append(f"{prefix(environment)}-{pool.name}-events-dlq")
    return found


def _auto(resource: str) -> str:
    return resource + AUTONAME_SUFFIX


def functions_of(capacity_types: Iterable[str]) -> list[str]:
    """The estate's Lambda functions (as `fn` names), given its pools' capacity types: a spot
    pool brings the spot-events function, a capacity-block pool the block functions."""
    kinds = set(capacity_types)
    return [*FUNCTIONS, *(("spot",) if "spot" in kinds else ()), *(CB_FUNCTIONS if "capacity-block" in kinds else ())]


def spot_events_dead_letter_queue(environment: str) -> str:
    """The spot-events queue's dead-letter queue (an estate with a spot pool has one)."""
    return f"{prefix(environment)}-spot-events-dlq"


def _stack_names(stack: StackConfig, estate: Estate) -> Iterator[PhysicalName]:
    env, p = stack.environment, prefix(stack.environment)
    has_blocks = any(pool.capacity_type == "capacity-block" for pool in estate.pools)
    has_spot = any(pool.capacity_type == "spot" for pool in estate.pools)
    functions = functions_of(pool.capacity_type for pool in estate.pools)
    yield PhysicalName("dynamodb", f"{p}-ledger", "the ledger table")
    for fn in functions:
        fn_name = f"{p}-{fn.replace('_', '-')}"
        yield PhysicalName("lambda", fn_name, f"function {fn}")
        yield PhysicalName("log_group", f"/aws/lambda/{fn_name}", f"log group of function {fn}")
        yield PhysicalName("alarm", f"{p}-{fn.replace('_', '-')}-errors", f"errors alarm of function {fn}")
        yield PhysicalName("iam_role", _auto(f"{SCALER}-{fn}-role"), f"role of function {fn}")
        yield PhysicalName("iam_policy", _auto(f"{SCALER}-{fn}-policy"), f"policy of function {fn}")
    for label in ("reconcile", "scale-down", "redeliver", "sweep", *(("cb-manager",) if has_blocks else ())):
        yield PhysicalName("event_rule", _auto(f"{SCALER}-{label}-schedule"), f"{label} schedule")
        yield PhysicalName("lambda_permission", _auto(f"{SCALER}-{label}-invoke"), f"{label} schedule's permission")
    for label in SCALER_ALARMS:
        yield PhysicalName("alarm", f"{p}-{label}", f"alarm {label}")
    if has_spot:  # components/spot_interruptions.py
        yield PhysicalName("sqs", f"{p}-spot-events", "the spot interruption events queue")
        yield PhysicalName("sqs", spot_events_dead_letter_queue(env), "the spot interruption events dead-letter queue")
        yield PhysicalName("alarm", f"{p}-spot-events-dlq", "the spot interruption events dead-letter alarm")
        yield PhysicalName("event_rule", _auto(f"{SCALER}-spot-events-rule"), "the spot interruption events rule")
    for fn in ("scale-up", "reconcile"):
        yield PhysicalName("metric_filter", f"{p}-{fn}-spot-role-missing", f"spot-role metric filter of {fn}")
    yield PhysicalName("dashboard", p, "the dashboard")
    if stack.budget is not None:
        yield PhysicalName("budget", p, "the stack's budget")
        for label in BUDGET_ALARMS:
            yield PhysicalName("alarm", f"{p}-{label}", f"alarm {label}")
    if stack.alarms.topic_arn is None:
        yield PhysicalName("sns", f"{p}-alarms", "the alarm topic")
        if stack.alarms.kms_key is None:
            yield PhysicalName("kms_alias", f"alias/{p}-alarms", "the alarm topic's key alias")
    jit = f"/runner-estate/{env}/jit/"
    yield PhysicalName("ssm", f"{jit}{INSTANCE_ID}", "a host's runner config parameter", sample=True)
    secrets = stack.secrets
    yield PhysicalName("ssm", secrets.github_app_private_key, "the App key parameter", key=f"{NAMESPACE}:secrets.github_app_private_key")
    for app in stack.github.extra_apps:
        yield PhysicalName(
            "ssm",
            app_key_parameter(stack, app.app_id),
            f"App {app.app_id}'s key parameter",
            key=f"{NAMESPACE}:secrets.github_app_private_key",
        )
    yield PhysicalName("ssm", secrets.webhook_secret, "the webhook secret parameter", key=f"{NAMESPACE}:secrets.webhook_secret")
    yield PhysicalName("iam_path", f"/runner-estate/{env}/", "the runner roles' path")
    if estate.queues:
        yield PhysicalName("ssm", f"/runner-estate/{env}/buildkite/agent-token", "the Buildkite agent token parameter")
    yield from _image_names(stack, estate)


def _image_names(stack: StackConfig, estate: Estate) -> Iterator[PhysicalName]:
    """The image pipeline's names: per family its pools boot (estate/derive/images.py), its
    parameter and Image Builder resources; per architecture a build infrastructure; one role."""
    if not stack.images.build:
        return
    families = sorted({f for f in (p.image_family for p in estate.pools) if f is not None})
    if not families:
        return
    yield PhysicalName("iam_role", _auto(f"{IMAGES}-build-role"), "the image builds' role")
    yield PhysicalName("iam_policy", _auto(f"{IMAGES}-build-policy"), "the image builds' policy")
    yield PhysicalName("iam_profile", _auto(f"{IMAGES}-build-profile"), "the image builds' instance profile")
    for arch in sorted({f.partition("-")[2] for f in families}):
        yield PhysicalName("imagebuilder", _auto(f"{IMAGES}-{arch}-infrastructure"), f"the {arch} image builds' infrastructure")
    for family in families:
        pools = [p for p in estate.pools if p.image_family == family]
        yield PhysicalName("ssm", f"/runner-estate/{stack.environment}/images/{family}", f"the {family} image's parameter")
        steps = [*IMAGE_STEPS, *(["nvidia"] if family.startswith("nvidia-") else [])]
        if stack.images.container_images or any(p.spec.estate.image.container_images for p in pools):
            steps.append("container-images")
        for step in steps:
            yield PhysicalName("imagebuilder", _auto(f"{IMAGES}-{family}-{step}"), f"the {family} image's {step} component")
        yield PhysicalName("imagebuilder", _auto(f"{IMAGES}-{family}-{IMAGE_PART_SAMPLE}"), f"a {family} host-programs part", sample=True)
        for kind in ("recipe", "distribution", "pipeline"):
            yield PhysicalName("imagebuilder", _auto(f"{IMAGES}-{family}-{kind}"), f"the {family} image's {kind}")


def _pool_names(stack: StackConfig, pool: Pool) -> Iterator[PhysicalName]:
    env, p, name, rc = stack.environment, prefix(stack.environment), pool.name, pool.runner

    def named(kind: str, value: str, what: str) -> PhysicalName:
        return PhysicalName(kind, value, what, pool=pool)

    yield named("sqs", f"{p}-{name}", "the pool's job queue")
    yield named("sqs", f"{p}-{name}-dlq", "the pool's dead-letter queue")
    yield named("alarm", f"{p}-{name}-dlq", "the pool's dead-letter alarm")
    for label in BLOCK_POOL_ALARMS if pool.capacity_type == "capacity-block" else POOL_ALARMS:
        yield named("alarm", f"{p}-{name}-{label}", f"the pool's {label} alarm")
    yield named("iam_role", _auto(f"{name}-role"), "the pool's instance role")
    yield named("iam_profile", _auto(f"{name}-profile"), "the pool's instance profile")
    yield named("iam_policy", _auto(f"{name}-runner-config"), "the pool's runner-config policy")
    if rc.enable_ssm_on_runners:
        yield named("iam_policy", _auto(f"{name}-session-manager"), "the pool's Session Manager policy")
    if rc.enable_cloudwatch_agent:
        yield named("iam_policy", _auto(f"{name}-cloudwatch-agent"), "the pool's CloudWatch agent policy")
        for log in pool.log_files:
            yield named("log_group", pool.log_group_name(env, log), f"the pool's log group {log.log_group_name}")
    yield named("launch_template", f"{env}-{name}-{PREFIX_SUFFIX}", "the pool's launch template")
    if pool.capacity_type == "capacity-block":
        for suffix in ("events", "events-dlq", "slot-reports"):
            yield named("sqs", f"{p}-{name}-{suffix}", f"the pool's {suffix} queue")
        yield named("alarm", f"{p}-{name}-events-dlq", "the pool's events dead-letter alarm")
        yield named("event_rule", _auto(f"{name}-blocks-rule"), "the pool's capacity-block events rule")
        yield named("event_rule", _auto(f"{name}-instances-rule"), "the pool's instance-state rule")
        yield named("iam_policy", _auto(f"{name}-slot-reports"), "the pool's slot-reports policy")
        slots = pool.slot_layout.slot_count if pool.slot_layout is not None else 1
        yield PhysicalName(
            "ssm", f"/runner-estate/{env}/jit/{INSTANCE_ID}/s{slots - 1}", "a slot's runner config parameter", pool, sample=True
        )


def _queue_names(stack: StackConfig, queue: BuildkiteQueue) -> Iterator[PhysicalName]:
    stack_name = f"{prefix(stack.environment)}-bk-{queue.name}"
    yield PhysicalName("cloudformation", stack_name, "the queue's Elastic CI Stack", queue=queue)
    # The template names its instance role after the stack (RoleName: ${AWS::StackName}-Role).
    yield PhysicalName("iam_role", f"{stack_name}-Role", "the Elastic CI Stack's instance role", queue=queue)


def physical_names(stack: StackConfig, estate: Estate) -> list[PhysicalName]:
    """Every name the program creates, stack-wide names first, then per pool and per queue."""
    names = list(_stack_names(stack, estate))
    for pool in estate.pools:
        names += _pool_names(stack, pool)
    for queue in estate.queues:
        names += _queue_names(stack, queue)
    return names


def runner_names(stack: StackConfig, pool: Pool) -> str:
    """The longest runner name the pool registers (lambda_src/core/fleet_state.py's form)."""
    name = f"{pool.runner.runner_name_prefix}{stack.environment}-{pool.name}-{INSTANCE_ID}"
    if pool.slot_layout is not None:
        name += f"-s{pool.slot_layout.slot_count - 1}"
    elif (reuse := pool.spec.estate.reuse_hosts) is not None:
        name += f"-r{reuse.max_jobs - 1}"
    return name


def _length(kind: str, name: str, stack: StackConfig) -> int:
    if kind == "ssm":
        return len(f"arn:aws:ssm:{stack.region}:000000000000:parameter{name if name.startswith('/') else '/' + name}")
    return len(name)


def _origin(found: PhysicalName, stack: StackConfig, stack_file: str) -> tuple[str, str | None, str | None, str]:
    """(file, pool, key, where the name's parts come from) for the error."""
    env = f"environment {stack.environment!r} ({stack_file})"
    if found.pool is not None:
        return found.pool.file, found.pool.name, None, f"built from {env} and this pool's name: shorten either"
    if found.queue is not None:
        return found.queue.file, found.queue.name, None, f"built from {env} and this queue's name: shorten either"
    if found.key is not None:
        return stack_file, None, found.key, "given by this key: shorten it"
    return stack_file, None, f"{NAMESPACE}:environment", f"built from {env}: shorten the environment"


def check_names(stack: StackConfig, estate: Estate, stack_file: str) -> list[ConfigWarning]:
    """Refuse the first name over its service's limit, or two resources of one kind sharing a
    name; return warnings for runner names GitHub would refuse."""
    seen: dict[tuple[str, str], PhysicalName] = {}
    for found in physical_names(stack, estate):
        limit = LIMITS[found.kind]
        length = _length(found.kind, found.name, stack)
        file, pool, key, origin = _origin(found, stack, stack_file)
        shown = found.name.replace(AUTONAME_SUFFIX, "-<7 random>").replace(PREFIX_SUFFIX, "<26 unique>")
        if length > limit.max:
            message = (
                f"{limit.what} of {found.what}, {shown!r}, is {length} characters, over the limit of {limit.max}"
                f" ({limit.source}); it is {origin}"
            )
            raise ConfigError(file, pool, key, message)
        if found.kind == "ssm" and found.name.strip("/").count("/") + 1 > SSM_MAX_LEVELS:
            raise ConfigError(file, pool, key, f"SSM parameter {shown!r} has more than {SSM_MAX_LEVELS} levels ({limit.source})")
        other = seen.setdefault((found.kind, found.name), found)
        if other is not found and not found.sample:
            owner = other.pool.name if other.pool is not None else "the stack"
            raise ConfigError(file, pool, key, f"{limit.what} {shown!r} of {found.what} is also {owner}'s: rename one of them")
    warnings = []
    for p in estate.pools:
        name = runner_names(stack, p)
        if len(name) > RUNNER_NAME.max:
            message = (
                f"runner names up to {len(name)} characters ({name!r}), over {RUNNER_NAME.max} ({RUNNER_NAME.source}):"
                f" GitHub may refuse them; shorten the environment, the pool name or runner_name_prefix"
            )
            warnings.append(ConfigWarning(p.file, p.name, None, message))
    return warnings
