"""Security-default rules over one resource's type and properties (camelCase, as Pulumi hands
them to policies and to mocks), and over the whole stack where a rule needs two resources (a
launch template and the security groups it uses). Pure and stdlib-only: the Pulumi policy pack
(policy/__main__.py), `estate preview` and config validation (estate/config/pool.py, for
managed policies) run the same functions.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

Props = Mapping[str, Any]

LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
INSTANCE = "aws:ec2/instance:Instance"
VOLUME = "aws:ebs/volume:Volume"
SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
SECURITY_GROUP_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
LAMBDA_FUNCTION = "aws:lambda/function:Function"
RUNNER_GROUP = "github:index/actionsRunnerGroup:ActionsRunnerGroup"
ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
POLICY_TYPES = (ROLE_POLICY, "aws:iam/policy:Policy", ROLE, "aws:iam/userPolicy:UserPolicy", "aws:iam/groupPolicy:GroupPolicy")
ROLE_POLICY_ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
# Every way to attach a managed policy: one ARN each, a list, or the (deprecated) role argument.
ONE_ATTACHMENT = (
    ROLE_POLICY_ATTACHMENT,
    "aws:iam/policyAttachment:PolicyAttachment",
    "aws:iam/userPolicyAttachment:UserPolicyAttachment",
    "aws:iam/groupPolicyAttachment:GroupPolicyAttachment",
)
ATTACHMENT_LISTS = {ROLE: "managedPolicyArns", "aws:iam/rolePolicyAttachmentsExclusive:RolePolicyAttachmentsExclusive": "policyArns"}
ANYWHERE = {"0.0.0.0/0", "::/0"}
IMAGE_COMPONENT = "aws:imagebuilder/component:Component"
IMAGE_RECIPE = "aws:imagebuilder/imageRecipe:ImageRecipe"
IMAGE_INFRASTRUCTURE = "aws:imagebuilder/infrastructureConfiguration:InfrastructureConfiguration"
IMAGE_DISTRIBUTION = "aws:imagebuilder/distributionConfiguration:DistributionConfiguration"

# Shapes of credentials that must never sit in user-data or a function's environment.
SECRET_PATTERNS = (
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"),
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}"),
    re.compile(r"\bA(KIA|SIA)[0-9A-Z]{16}\b"),
    re.compile(r"aws_secret_access_key\s*[=:]", re.IGNORECASE),
    re.compile(r"\bxox[abpr]-[A-Za-z0-9-]{10,}"),
)


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    mandatory: bool
    check: Callable[[str, Props], Iterator[str]]  # (resource type, props) -> violation messages


# The tag the program puts on a launch template whose pool opted out of IMDSv2 explicitly
# (`estate.allow_imdsv1: true`): the mandatory rule lets it pass, the advisory one reports it.
IMDSV1_OPT_OUT_TAG = "runner-estate:imdsv1-opt-out"


def _imdsv1_opted_out(props: Props) -> bool:
    return str((props.get("tags") or {}).get(IMDSV1_OPT_OUT_TAG, "")).lower() == "true"


def _imds_tokens(kind: str, props: Props) -> str | None:
    """httpTokens of an instance or launch template that does not require them; else None."""
    if kind in (LAUNCH_TEMPLATE, INSTANCE):
        tokens = (props.get("metadataOptions") or {}).get("httpTokens")
        if tokens != "required":
            return str(tokens)
    return None


def _imdsv2(kind: str, props: Props) -> Iterator[str]:
    tokens = _imds_tokens(kind, props)
    if tokens is not None and not _imdsv1_opted_out(props):
        yield f"metadataOptions.httpTokens is {tokens!r}; IMDSv2 needs 'required'"


def _imdsv1_opt_out_reported(kind: str, props: Props) -> Iterator[str]:
    tokens = _imds_tokens(kind, props)
    if tokens is not None and _imdsv1_opted_out(props):
        yield (
            f"metadataOptions.httpTokens is {tokens!r} by the pool's explicit opt-out (estate.allow_imdsv1): the instance "
            "metadata service also answers requests without a session token (IMDSv1)"
        )


def _encrypted(kind: str, props: Props) -> Iterator[str]:
    if kind == LAUNCH_TEMPLATE:
        for i, disk in enumerate(props.get("blockDeviceMappings") or []):
            if str((disk.get("ebs") or {}).get("encrypted")).lower() != "true":
                yield f"blockDeviceMappings[{i}] ({disk.get('deviceName')}) is not encrypted"
    if kind == INSTANCE and not (props.get("rootBlockDevice") or {}).get("encrypted"):
        yield "rootBlockDevice is not encrypted"
    if kind == VOLUME and not props.get("encrypted"):
        yield "volume is not encrypted"


def _image_volumes_encrypted(kind: str, props: Props) -> Iterator[str]:
    """An image's volumes are its snapshots: every EBS mapping of a recipe is encrypted."""
    if kind != IMAGE_RECIPE:
        return
    for i, disk in enumerate(props.get("blockDeviceMappings") or []):
        ebs = disk.get("ebs") if isinstance(disk, Mapping) else None
        if ebs is not None and str(ebs.get("encrypted")).lower() != "true":
            yield f"blockDeviceMappings[{i}] ({disk.get('deviceName')}) is not encrypted: the image's snapshot would not be"
    if not props.get("blockDeviceMappings"):
        yield "no blockDeviceMappings: the image keeps its parent's volumes, encrypted or not"


def _image_builds_imdsv2(kind: str, props: Props) -> Iterator[str]:
    if kind == IMAGE_INFRASTRUCTURE:
        tokens = (props.get("instanceMetadataOptions") or {}).get("httpTokens")
        if tokens != "required":
            yield f"instanceMetadataOptions.httpTokens is {tokens!r}: build instances hold the build role; IMDSv2 needs 'required'"


def _image_builds_no_key_pair(kind: str, props: Props) -> Iterator[str]:
    if kind == IMAGE_INFRASTRUCTURE:
        if props.get("keyPair"):
            yield f"keyPair {props.get('keyPair')!r}: an SSH key would open the build instances (and its public half may stay in the image)"
        if props.get("terminateInstanceOnFailure") is False:
            yield "terminateInstanceOnFailure is false: a failed build's instance would stay up with the build role"


def _images_private(kind: str, props: Props) -> Iterator[str]:
    if kind != IMAGE_DISTRIBUTION:
        return
    for i, dist in enumerate(props.get("distributions") or []):
        ami = (dist.get("amiDistributionConfiguration") or {}) if isinstance(dist, Mapping) else {}
        groups = (ami.get("launchPermission") or {}).get("userGroups") or []
        if "all" in groups:
            yield f"distributions[{i}] shares the image with every AWS account (launchPermission.userGroups all)"


def _no_secret_in_images(kind: str, props: Props) -> Iterator[str]:
    places: list[tuple[str, str]] = []
    if kind == IMAGE_COMPONENT:
        places.append(("data", str(props.get("data") or "")))
    if kind == IMAGE_RECIPE and props.get("userDataBase64"):
        places.append(("userDataBase64", _decoded(str(props["userDataBase64"]))))
    for where, text in places:
        for pattern in SECRET_PATTERNS:
            if pattern.search(text):
                yield f"{where} holds something shaped like a credential ({pattern.pattern}): it would be baked into every image"


def _documents(kind: str, props: Props) -> Iterator[str]:
    """The policy documents a resource carries, as JSON text: its own, and a role's inline ones."""
    if kind not in POLICY_TYPES:
        return
    for key in ("policy", "assumeRolePolicy"):
        if isinstance(props.get(key), str):
            yield props[key]
    if kind == ROLE:
        for inline in props.get("inlinePolicies") or []:
            if isinstance(inline, Mapping) and isinstance(inline.get("policy"), str):
                yield inline["policy"]


def _statements(kind: str, props: Props) -> Iterator[dict[str, Any]]:
    for text in _documents(kind, props):
        try:
            document = json.loads(text)
        except ValueError:
            continue
        statements = document.get("Statement", []) if isinstance(document, dict) else []
        yield from (s for s in (statements if isinstance(statements, list) else [statements]) if isinstance(s, dict))


def _listed(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _no_wildcard_actions(kind: str, props: Props) -> Iterator[str]:
    for statement in _statements(kind, props):
        for action in _listed(statement.get("Action", [])):
            if "*" in str(action):
                yield f"statement {statement.get('Sid', '(no Sid)')} allows {action!r}"
        if "NotAction" in statement:
            yield f"statement {statement.get('Sid', '(no Sid)')} uses NotAction (everything but a list)"
        if "NotResource" in statement and statement.get("Effect") == "Allow":
            yield f"statement {statement.get('Sid', '(no Sid)')} allows on NotResource (everything but a list)"


# Actions that return a secret's value. AWS's AmazonSSMManagedInstanceCore allows the first two
# on every parameter: with it, any job reads every SecureString, the GitHub App key among them.
SECRET_READS = (
    "ssm:GetParameter",
    "ssm:GetParameters",
    "ssm:GetParametersByPath",
    "ssm:GetParameterHistory",
    "secretsmanager:GetSecretValue",
)
_SECRET_ROOTS = ("parameter/", "secret:")


def _covers_every_secret(resource: str) -> bool:
    """Whether a Resource pattern reaches every parameter (or secret) of an account or region:
    `*`, or an ARN whose resource part has no path before its first wildcard (`parameter/*`)."""
    if resource == "*":
        return True
    parts = resource.split(":", 5)
    if len(parts) < 6:
        return False
    literal = re.split(r"[*?]", parts[5], maxsplit=1)[0]
    return literal != parts[5] and any(root.startswith(literal) for root in _SECRET_ROOTS)


def _no_broad_secret_reads(kind: str, props: Props) -> Iterator[str]:
    for statement in _statements(kind, props):
        if statement.get("Effect") != "Allow":
            continue
        patterns = [str(a).lower() for a in _listed(statement.get("Action", []))]
        reads = [a for a in SECRET_READS if any(fnmatchcase(a.lower(), p) for p in patterns)]
        if not reads:
            continue
        sid = statement.get("Sid", "(no Sid)")
        if "NotResource" in statement:
            yield f"statement {sid} allows {', '.join(reads)} on NotResource: every secret but a list"
        for resource in _listed(statement.get("Resource", [])):
            if _covers_every_secret(str(resource)):
                yield f"statement {sid} allows {', '.join(reads)} on {resource!r}: every secret, the GitHub App key among them"


# AWS-managed policies that hand a job what the estate exists to keep from it. Any other managed
# policy is reported (advisory here; `validate` wants an explicit opt-out): its document is not
# part of the program, so no rule can see what it grants.
REFUSED_MANAGED_POLICIES: Mapping[str, str] = {
    "AdministratorAccess": "allows every action on every resource",
    "PowerUserAccess": "allows every action outside IAM: every secret, queue, table and instance",
    "ReadOnlyAccess": "reads every SSM parameter, the GitHub App key among them",
    "AmazonSSMManagedInstanceCore": (
        "allows ssm:GetParameter(s) on every parameter: any job reads every SecureString, the GitHub App key among them"
        " (`enable_ssm_on_runners` grants Session Manager alone)"
    ),
    "AmazonEC2RoleforSSM": "AWS's deprecated, broader AmazonSSMManagedInstanceCore: reads every SSM parameter",
    "AmazonSSMFullAccess": "reads and writes every SSM parameter",
    "AmazonSSMReadOnlyAccess": "reads every SSM parameter, the GitHub App key among them",
    "SecretsManagerReadWrite": "reads every Secrets Manager secret",
    "AmazonEC2FullAccess": "tags, stops and terminates any instance and launches new ones",
    "AmazonSQSFullAccess": "sends to the estate's queues: forged jobs and capacity-block events",
    "AmazonDynamoDBFullAccess": "writes the ledger",
    "IAMFullAccess": "creates users, keys and policies: any job makes itself an administrator",
    "AWSLambda_FullAccess": "replaces the control plane's code",
}
_AWS_MANAGED = re.compile(r"^arn:aws(?:-cn|-us-gov)?:iam::aws:policy/(?:[^/]+/)*(?P<name>[^/]+)$")


def managed_policy_finding(arn: str) -> tuple[bool, str]:
    """One managed policy attached to a role: (refused, why). Refused: an AWS-managed policy
    that gives a job what the estate keeps from it. Otherwise the policy is only reported, since
    its document is not part of the program. Config validation and the pack share this."""
    found = _AWS_MANAGED.match(arn)
    if found and found["name"] in REFUSED_MANAGED_POLICIES:
        return True, f"{arn} {REFUSED_MANAGED_POLICIES[found['name']]}; a job holds its role's permissions"
    return False, f"{arn} is not a document of this program, so no rule checks what it grants; a job holds its role's permissions"


def _attached_policy_arns(kind: str, props: Props) -> list[str]:
    if kind in ONE_ATTACHMENT:
        arns = [props.get("policyArn")]
    elif kind in ATTACHMENT_LISTS:
        arns = list(props.get(ATTACHMENT_LISTS[kind]) or [])
    else:
        arns = []
    return [arn for arn in arns if isinstance(arn, str)]


def _no_broad_managed_policies(kind: str, props: Props) -> Iterator[str]:
    for arn in _attached_policy_arns(kind, props):
        refused, why = managed_policy_finding(arn)
        if refused:
            yield why


def _managed_policies_reported(kind: str, props: Props) -> Iterator[str]:
    for arn in _attached_policy_arns(kind, props):
        refused, why = managed_policy_finding(arn)
        if not refused:
            yield why


def _no_open_ingress(kind: str, props: Props) -> Iterator[str]:
    rules: list[Mapping[str, Any]] = []
    if kind == SECURITY_GROUP:
        rules = list(props.get("ingress") or [])
    elif kind == SECURITY_GROUP_RULE and props.get("type") == "ingress":
        rules = [props]
    elif kind == INGRESS_RULE:
        rules = [{"cidrBlocks": [props.get("cidrIpv4")], "ipv6CidrBlocks": [props.get("cidrIpv6")], "fromPort": props.get("fromPort")}]
    for rule in rules:
        blocks = set(rule.get("cidrBlocks") or []) | set(rule.get("ipv6CidrBlocks") or [])
        if blocks & ANYWHERE:
            yield f"ingress from {', '.join(sorted(blocks & ANYWHERE))} on port {rule.get('fromPort')}"


def _decoded_user_data(props: Props) -> str:
    return _decoded(str(props.get("userData") or ""))


def _decoded(text: str) -> str:
    try:
        return base64.b64decode(text, validate=True).decode("utf-8", errors="replace")
    except (binascii.Error, ValueError):
        return text


def _no_secret_in_boot_or_env(kind: str, props: Props) -> Iterator[str]:
    places: list[tuple[str, str]] = []
    if kind in (LAUNCH_TEMPLATE, INSTANCE):
        places.append(("userData", _decoded_user_data(props)))
    if kind == LAMBDA_FUNCTION:
        variables = ((props.get("environment") or {}).get("variables")) or {}
        places += [(f"environment.variables.{k}", str(v)) for k, v in variables.items()]
    for where, text in places:
        for pattern in SECRET_PATTERNS:
            if pattern.search(text):
                yield f"{where} holds something shaped like a credential ({pattern.pattern})"


def _runner_group_selected(kind: str, props: Props) -> Iterator[str]:
    if kind == RUNNER_GROUP and props.get("visibility") != "selected":
        yield f"visibility is {props.get('visibility')!r}: a runner group must name the repositories it serves ('selected')"


def _runner_group_not_public(kind: str, props: Props) -> Iterator[str]:
    if kind == RUNNER_GROUP and props.get("allowsPublicRepositories"):
        yield "public repositories may use this group: any fork's pull request can run code on its hosts"


RULES: tuple[Rule, ...] = (
    Rule(
        "imdsv2-required",
        "Instances and launch templates require IMDSv2 session tokens, unless a pool opted out explicitly.",
        True,
        _imdsv2,
    ),
    # Advisory: a pool may accept IMDSv1 with an explicit opt-out (estate.allow_imdsv1); the
    # preview and the pack still say so.
    Rule(
        "imdsv1-opt-out-reported",
        "Launch templates that accept IMDSv1 by an explicit opt-out are reported.",
        False,
        _imdsv1_opt_out_reported,
    ),
    Rule("encrypted-volumes", "Every EBS volume is encrypted.", True, _encrypted),
    Rule(
        "no-wildcard-iam-actions",
        "No IAM statement (inline ones included) allows a wildcard action, uses NotAction or allows on NotResource.",
        True,
        _no_wildcard_actions,
    ),
    Rule("no-broad-secret-reads", "No IAM statement reads every SSM parameter or secret.", True, _no_broad_secret_reads),
    Rule(
        "no-broad-managed-policies",
        "No role gets an AWS-managed policy that hands a job secrets, queues, the ledger or instances.",
        True,
        _no_broad_managed_policies,
    ),
    # Advisory: a pool may attach a managed policy whose document the program cannot see, with
    # an explicit opt-out (estate.allow_unchecked_managed_policies); the preview still says so.
    Rule(
        "managed-policies-reported",
        "Managed policies attached to roles are reported: no rule sees what they grant.",
        False,
        _managed_policies_reported,
    ),
    Rule("no-open-ingress", "No security group admits traffic from 0.0.0.0/0 or ::/0.", True, _no_open_ingress),
    Rule(
        "no-secrets-in-user-data-or-env", "No credential-shaped text in user-data or Lambda environments.", True, _no_secret_in_boot_or_env
    ),
    Rule("runner-groups-selected", "Runner groups are open only to the repositories they name.", True, _runner_group_selected),
    # Advisory: a stack may open a group to public repositories on purpose (every pool in it
    # must say estate.allow_public_repositories); the preview still says so.
    Rule("runner-groups-not-public", "Runner groups are closed to public repositories.", False, _runner_group_not_public),
    Rule(
        "image-volumes-encrypted", "Every volume of an image recipe (the image's snapshots) is encrypted.", True, _image_volumes_encrypted
    ),
    Rule("image-builds-imdsv2", "Image build and test instances require IMDSv2 session tokens.", True, _image_builds_imdsv2),
    Rule(
        "image-builds-no-key-pair",
        "Image build instances get no SSH key pair and are ended when a build fails.",
        True,
        _image_builds_no_key_pair,
    ),
    Rule("images-private", "Images are not shared with every AWS account.", True, _images_private),
    Rule(
        "no-secrets-in-images",
        "No credential-shaped text in image components or recipe user-data (it would be in every image).",
        True,
        _no_secret_in_images,
    ),
)


@dataclass(frozen=True)
class Violation:
    rule: str
    mandatory: bool
    resource: str
    message: str

    def __str__(self) -> str:
        level = "mandatory" if self.mandatory else "advisory"
        return f"{self.rule} ({level}): {self.resource}: {self.message}"


def check(kind: str, name: str, props: Props) -> list[Violation]:
    """Every rule against one resource."""
    return [Violation(r.name, r.mandatory, name, message) for r in RULES for message in r.check(kind, props)]


# ---- rules over the whole stack ----------------------------------------------------------


@dataclass(frozen=True)
class StackResource:
    """One resource as a stack rule sees it. `property_dependencies` names, per property, the
    URNs of the resources whose outputs it was computed from (how a launch template's security
    group ids are traced back to groups of this program)."""

    type: str
    name: str
    urn: str
    props: Props
    property_dependencies: Mapping[str, Sequence[str]] = field(default_factory=dict)
    id: str | None = None  # the physical id, where known


@dataclass(frozen=True)
class StackRule:
    name: str
    description: str
    mandatory: bool
    check: Callable[[Sequence[StackResource]], Iterator[tuple[StackResource, str]]]  # -> (resource, message)


# Where instances and launch templates name their security groups.
_GROUP_PROPERTIES = {LAUNCH_TEMPLATE: ("networkInterfaces", "vpcSecurityGroupIds", "securityGroupNames"),
                     INSTANCE: ("vpcSecurityGroupIds", "securityGroups"),
                     IMAGE_INFRASTRUCTURE: ("securityGroupIds",)}  # fmt: skip  # image build instances are hosts too


def _group_values(kind: str, props: Props) -> list[Any]:
    values: list[Any] = []
    for key in _GROUP_PROPERTIES[kind]:
        if key == "networkInterfaces":
            for interface in props.get(key) or []:
                if isinstance(interface, Mapping):
                    values += list(interface.get("securityGroups") or [])
        else:
            values += list(props.get(key) or [])
    return values


def _group_id(group: StackResource) -> str | None:
    """A group's id: given, or the tail of its ARN (`...:security-group/sg-...`)."""
    arn = group.props.get("arn")
    return group.id or (arn.rsplit("/", 1)[-1] if isinstance(arn, str) and "security-group/" in arn else None)


def _groups_used(host: StackResource, groups: Mapping[str, StackResource]) -> list[StackResource]:
    urns = [u for key in _GROUP_PROPERTIES[host.type] for u in host.property_dependencies.get(key, ())]
    ids = {v for v in _group_values(host.type, host.props) if isinstance(v, str)}
    used = {u: groups[u] for u in urns if u in groups}
    used.update({g.urn: g for g in groups.values() if _group_id(g) in ids})
    return list(used.values())


def _describe_ingress(rule: Mapping[str, Any]) -> str:
    sources = [*(rule.get("cidrBlocks") or []), *(rule.get("ipv6CidrBlocks") or []), *(rule.get("prefixListIds") or [])]
    sources += [*(rule.get("securityGroups") or []), *([rule["sourceSecurityGroupId"]] if rule.get("sourceSecurityGroupId") else [])]
    if rule.get("self"):
        sources.append("itself")
    for key in ("cidrIpv4", "cidrIpv6", "referencedSecurityGroupId", "prefixListId"):
        if rule.get(key):
            sources.append(str(rule[key]))
    low, high = rule.get("fromPort"), rule.get("toPort")
    ports = f"{low}-{high}" if high not in (None, low) else low
    return f"ingress from {', '.join(map(str, sources)) or 'an unnamed source'} on port {ports}"


def _ingress_of(group: StackResource, resources: Sequence[StackResource]) -> list[str]:
    """Every rule that lets traffic into a group: its inline rules and rule resources aimed at it."""
    found = [_describe_ingress(r) for r in group.props.get("ingress") or [] if isinstance(r, Mapping)]
    gid = _group_id(group)
    for r in resources:
        if r.type not in (SECURITY_GROUP_RULE, INGRESS_RULE) or (r.type == SECURITY_GROUP_RULE and r.props.get("type") != "ingress"):
            continue
        aimed = group.urn in r.property_dependencies.get("securityGroupId", ()) or (
            gid is not None and r.props.get("securityGroupId") == gid
        )
        if aimed:
            found.append(f"{_describe_ingress(r.props)} (rule {r.name})")
    return found


def _hosts_and_groups(resources: Sequence[StackResource]) -> tuple[list[StackResource], dict[str, StackResource]]:
    hosts = [r for r in resources if r.type in _GROUP_PROPERTIES]
    return hosts, {r.urn: r for r in resources if r.type == SECURITY_GROUP}


def _runner_groups_admit_nothing(resources: Sequence[StackResource]) -> Iterator[tuple[StackResource, str]]:
    """A runner host needs no inbound traffic (it polls GitHub; Session Manager dials out), so
    any group of this program that a launch template or instance uses must admit nothing in."""
    hosts, groups = _hosts_and_groups(resources)
    for host in hosts:
        for group in _groups_used(host, groups):
            for ingress in _ingress_of(group, resources):
                yield host, f"security group {group.name} admits {ingress}; a runner host's groups admit nothing in"


def _unchecked_groups_reported(resources: Sequence[StackResource]) -> Iterator[tuple[StackResource, str]]:
    """Groups given only by id (a pool's `runner_additional_security_group_ids`) are not in the
    program, so their rules cannot be checked here: reported, and `validate` wants an opt-out."""
    hosts, groups = _hosts_and_groups(resources)
    for host in hosts:
        values = _group_values(host.type, host.props)  # an id not known yet (preview) counts too
        ours = _groups_used(host, groups)
        unchecked = len(values) - len(ours)
        if unchecked <= 0:
            continue
        known = {_group_id(g) for g in ours}
        outside = [v for v in values if isinstance(v, str) and v not in known]
        named = ", ".join(outside) if len(outside) == unchecked else f"{unchecked} of them"
        yield host, f"uses security groups this program does not create ({named}): no rule can check that they admit nothing in"


STACK_RULES: tuple[StackRule, ...] = (
    StackRule(
        "runner-security-groups-admit-nothing",
        "Every security group of this program that runner hosts use admits no inbound traffic.",
        True,
        _runner_groups_admit_nothing,
    ),
    # Advisory: a pool may add groups by id with an explicit opt-out
    # (estate.allow_unchecked_security_groups); the preview still says so.
    StackRule(
        "unchecked-security-groups-reported",
        "Security groups that runner hosts use but this program does not create are reported.",
        False,
        _unchecked_groups_reported,
    ),
)


def check_stack(resources: Sequence[StackResource]) -> list[Violation]:
    """Every stack rule against the whole stack."""
    return [Violation(r.name, r.mandatory, resource.name, message) for r in STACK_RULES for resource, message in r.check(resources)]
