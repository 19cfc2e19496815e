"""tests/iam_eval.py against the examples of AWS's IAM User Guide: the evaluation logic (explicit
deny, default deny), the Action/Resource wildcards, policy variables, condition operators and
the set operators on multivalued keys. Each case names the guide's page it comes from."""

from __future__ import annotations

from typing import Any

import pytest

from tests.iam_eval import Decision, Request, UnsupportedError, action_matches, allowed, arn_matches, decide

ACCOUNT = "123456789012"


def doc(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def allow(action: str | list[str], resource: str | list[str] = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


# ---- reference_policies_evaluation-logic ---------------------------------------------------


def test_a_request_no_statement_allows_is_implicitly_denied() -> None:
    assert decide(Request("s3:GetObject", "arn:aws:s3:::b/k")) is Decision.IMPLICIT_DENY
    assert decide(Request("s3:GetObject", "arn:aws:s3:::b/k"), [doc(allow("s3:PutObject"))]) is Decision.IMPLICIT_DENY


def test_an_explicit_deny_in_any_policy_beats_every_allow() -> None:
    policies = [doc(allow("s3:*")), doc({"Effect": "Deny", "Action": "s3:DeleteObject", "Resource": "arn:aws:s3:::b/*"})]
    assert decide(Request("s3:DeleteObject", "arn:aws:s3:::b/k"), policies) is Decision.EXPLICIT_DENY
    assert decide(Request("s3:GetObject", "arn:aws:s3:::b/k"), policies) is Decision.ALLOW
    assert decide(Request("s3:DeleteObject", "arn:aws:s3:::other/k"), policies) is Decision.ALLOW


def test_within_one_account_a_resource_policy_alone_may_allow_and_may_deny() -> None:
    role = f"arn:aws:iam::{ACCOUNT}:role/app"
    queue = f"arn:aws:sqs:us-east-1:{ACCOUNT}:q"
    grant = doc(allow("sqs:SendMessage", queue, Principal={"AWS": role}))
    deny = doc({"Effect": "Deny", "Principal": "*", "Action": "sqs:*", "Resource": queue})
    send = Request("sqs:SendMessage", queue, principal=role)
    assert allowed(send, [], grant)
    assert not allowed(Request("sqs:SendMessage", queue, principal=f"arn:aws:iam::{ACCOUNT}:role/other"), [], grant)
    assert decide(send, [doc(allow("sqs:SendMessage", queue))], deny) is Decision.EXPLICIT_DENY


def test_a_service_principal_matches_only_that_service() -> None:
    """The queue policy EventBridge targets need (EventBridge User Guide, "Amazon SQS permissions")."""
    queue = f"arn:aws:sqs:us-east-1:{ACCOUNT}:events"
    rule = f"arn:aws:events:us-east-1:{ACCOUNT}:rule/r"
    policy = doc(
        allow("sqs:SendMessage", queue, Principal={"Service": "events.amazonaws.com"}, Condition={"ArnEquals": {"aws:SourceArn": rule}})
    )
    events = "events.amazonaws.com"
    assert allowed(Request("sqs:SendMessage", queue, {"aws:SourceArn": rule}, service=events), [], policy)
    assert not allowed(Request("sqs:SendMessage", queue, {"aws:SourceArn": rule + "2"}, service=events), [], policy)
    role = f"arn:aws:iam::{ACCOUNT}:role/x"
    assert not allowed(Request("sqs:SendMessage", queue, {"aws:SourceArn": rule}, principal=role), [], policy)


# ---- reference_policies_elements_action / _resource ----------------------------------------


@pytest.mark.parametrize(
    ("pattern", "action", "matches"),
    [
        ("s3:GetObject", "s3:getobject", True),  # prefix and action name are case-insensitive
        ("S3:GETOBJECT", "s3:GetObject", True),
        ("iam:*AccessKey*", "iam:CreateAccessKey", True),  # the guide's `*AccessKey*` example
        ("iam:*AccessKey*", "iam:ListAccessKeys", True),
        ("iam:*AccessKey*", "iam:CreateUser", False),
        ("ec2:Describe?", "ec2:DescribeX", True),
        ("ec2:Describe?", "ec2:DescribeXY", False),
        ("sqs:SendMessage", "sqs:SendMessageBatch", False),  # no implicit prefix match
    ],
)
def test_action_matching(pattern: str, action: str, matches: bool) -> None:
    assert action_matches(pattern, action) is matches


@pytest.mark.parametrize(
    ("pattern", "arn", "matches"),
    [
        (f"arn:aws:iam::{ACCOUNT}:user/Bob", f"arn:aws:iam::{ACCOUNT}:user/Bob", True),
        (f"arn:aws:iam::{ACCOUNT}:user/Bob", f"arn:aws:iam::{ACCOUNT}:user/bob", False),  # the user name is case-sensitive
        (f"arn:aws:iam::{ACCOUNT}:user/accounting/*", f"arn:aws:iam::{ACCOUNT}:user/accounting/alice", True),
        (f"arn:aws:iam::{ACCOUNT}:user/accounting/*", f"arn:aws:iam::{ACCOUNT}:user/marketing/alice", False),
        ("arn:aws:s3:::amzn-s3-demo-bucket/*", "arn:aws:s3:::amzn-s3-demo-bucket/a/b/c.txt", True),  # `*` runs past `/`
        ("arn:aws:s3:::bucket/file?.txt", "arn:aws:s3:::bucket/file1.txt", True),  # `?`: exactly one character
        ("arn:aws:s3:::bucket/file?.txt", "arn:aws:s3:::bucket/file10.txt", False),
        ("arn:aws:ssm:*", f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/x", True),  # a segment's last `*` runs past colons
        (f"arn:aws:ssm:*:{ACCOUNT}:parameter/*", "arn:aws:ssm:eu-west-1:999999999999:parameter/x", False),
        ("arn:aws:sqs:us-east-1:*:queue-?", f"arn:aws:sqs:us-east-1:{ACCOUNT}:queue-1", True),
        ("arn:aws:sqs:us-east-1:1*:q", "arn:aws:sqs:us-east-1:12:x:q", False),  # `*` inside a segment stays in it
        ("*", "anything at all", True),
    ],
)
def test_resource_matching(pattern: str, arn: str, matches: bool) -> None:
    assert arn_matches(pattern, arn) is matches


def test_not_action_and_not_resource_allow_everything_but_their_list() -> None:
    policy = doc({"Effect": "Allow", "NotAction": "iam:*", "NotResource": "arn:aws:s3:::secret/*"})
    assert allowed(Request("s3:GetObject", "arn:aws:s3:::public/k"), [policy])
    assert not allowed(Request("iam:CreateUser", "arn:aws:s3:::public/k"), [policy])
    assert not allowed(Request("s3:GetObject", "arn:aws:s3:::secret/k"), [policy])


# ---- reference_policies_variables ----------------------------------------------------------


def home_folder_policy(username: str = "${aws:username}") -> dict[str, Any]:
    """The guide's example: each user reads and writes only their own folder of one bucket."""
    return doc(
        allow("s3:ListBucket", "arn:aws:s3:::mybucket", Condition={"StringLike": {"s3:prefix": [f"{username}/*"]}}),
        allow(["s3:GetObject", "s3:PutObject"], f"arn:aws:s3:::mybucket/{username}/*"),
    )


def test_a_policy_variable_is_replaced_from_the_request() -> None:
    david = {"aws:username": "David"}
    assert allowed(Request("s3:GetObject", "arn:aws:s3:::mybucket/David/notes.txt", david), [home_folder_policy()])
    assert not allowed(Request("s3:GetObject", "arn:aws:s3:::mybucket/Bob/notes.txt", david), [home_folder_policy()])
    assert allowed(Request("s3:ListBucket", "arn:aws:s3:::mybucket", {**david, "s3:prefix": "David/photos"}), [home_folder_policy()])
    assert not allowed(Request("s3:ListBucket", "arn:aws:s3:::mybucket", {**david, "s3:prefix": "Bob/"}), [home_folder_policy()])


def test_a_variable_that_cannot_be_resolved_matches_nothing() -> None:
    """A role session carries no aws:username: the statement grants nothing, even on `*`-like names."""
    assert not allowed(Request("s3:GetObject", "arn:aws:s3:::mybucket//x"), [home_folder_policy()])
    assert not allowed(Request("s3:GetObject", "arn:aws:s3:::mybucket/${aws:username}/x"), [home_folder_policy()])


def test_a_variables_value_is_literal_and_a_default_fills_a_missing_key() -> None:
    star = {"aws:username": "*"}  # a value is never a wildcard
    assert not allowed(Request("s3:GetObject", "arn:aws:s3:::mybucket/David/x", star), [home_folder_policy()])
    fallback = home_folder_policy("${aws:username, 'shared'}")
    assert allowed(Request("s3:GetObject", "arn:aws:s3:::mybucket/shared/x"), [fallback])
    literal = doc(allow("s3:GetObject", "arn:aws:s3:::mybucket/${*}${?}${$}"))
    assert allowed(Request("s3:GetObject", "arn:aws:s3:::mybucket/*?$"), [literal])
    assert not allowed(Request("s3:GetObject", "arn:aws:s3:::mybucket/ab$"), [literal])


def test_instance_credentials_reach_only_what_is_tagged_with_their_instance() -> None:
    """Our JIT parameter statement: the resource tag must equal `${ec2:SourceInstanceARN}`."""
    mine, other = (f"arn:aws:ec2:us-east-1:{ACCOUNT}:instance/i-0{n}" for n in ("aaa", "bbb"))
    policy = doc(allow("ssm:GetParameter", "*", Condition={"StringEquals": {"ssm:resourceTag/owner": "${ec2:SourceInstanceARN}"}}))
    assert allowed(Request("ssm:GetParameter", "p", {"ec2:SourceInstanceARN": mine, "ssm:resourceTag/owner": mine}), [policy])
    assert not allowed(Request("ssm:GetParameter", "p", {"ec2:SourceInstanceARN": mine, "ssm:resourceTag/owner": other}), [policy])
    assert not allowed(Request("ssm:GetParameter", "p", {"ec2:SourceInstanceARN": mine}), [policy])  # untagged
    assert not allowed(Request("ssm:GetParameter", "p", {"ssm:resourceTag/owner": mine}), [policy])  # not an instance


# ---- reference_policies_elements_condition(_operators) -------------------------------------


def condition(operator: str, key: str, values: Any) -> list[dict[str, Any]]:
    return [doc(allow("s3:GetObject", Condition={operator: {key: values}}))]


def get(context: dict[str, Any] | None = None) -> Request:
    return Request("s3:GetObject", "arn:aws:s3:::b/k", context or {})


def test_string_equals_is_case_sensitive_on_values_and_not_on_key_names() -> None:
    """The guide: StringEquals on aws:username "john" admits john, not John; IgnoreCase admits both."""
    assert allowed(get({"aws:username": "john"}), condition("StringEquals", "aws:username", "john"))
    assert not allowed(get({"aws:username": "John"}), condition("StringEquals", "aws:username", "john"))
    assert allowed(get({"aws:username": "John"}), condition("StringEqualsIgnoreCase", "aws:username", "john"))
    assert allowed(get({"AWS:UserName": "john"}), condition("StringEquals", "aws:username", "john"))  # key names ignore case


def test_a_missing_key_fails_a_condition_unless_negated_if_exists_or_null() -> None:
    """The guide's "Important" note on absent keys, ...IfExists, and the Null check."""
    assert not allowed(get(), condition("StringEquals", "aws:PrincipalTag/team", "ci"))
    assert not allowed(get(), condition("StringLike", "aws:PrincipalTag/team", "*"))
    assert allowed(get(), condition("StringNotEquals", "aws:PrincipalTag/team", "ci"))
    assert allowed(get(), condition("StringEqualsIfExists", "aws:PrincipalTag/team", "ci"))
    assert not allowed(get({"aws:PrincipalTag/team": "ops"}), condition("StringEqualsIfExists", "aws:PrincipalTag/team", "ci"))
    assert allowed(get(), condition("Null", "aws:PrincipalTag/team", "true"))
    assert not allowed(get({"aws:PrincipalTag/team": "ci"}), condition("Null", "aws:PrincipalTag/team", "true"))
    assert allowed(get({"aws:PrincipalTag/team": "ci"}), condition("Null", "aws:PrincipalTag/team", "false"))


def test_values_or_keys_and_operators_and() -> None:
    """conditions-setoperators: values of one key OR (NOR when negated), keys AND, operators AND."""
    either = condition("StringEquals", "aws:RequestedRegion", ["us-east-1", "eu-west-1"])
    assert allowed(get({"aws:RequestedRegion": "eu-west-1"}), either)
    assert not allowed(get({"aws:RequestedRegion": "ap-south-1"}), either)
    neither = condition("StringNotEquals", "aws:RequestedRegion", ["us-east-1", "eu-west-1"])
    assert not allowed(get({"aws:RequestedRegion": "eu-west-1"}), neither)
    assert allowed(get({"aws:RequestedRegion": "ap-south-1"}), neither)
    both = [doc(allow("s3:GetObject", Condition={"StringEquals": {"aws:PrincipalTag/team": "ci", "aws:RequestedRegion": "us-east-1"},
                                                   "Bool": {"aws:SecureTransport": "true"}}))]  # fmt: skip
    full = {"aws:PrincipalTag/team": "ci", "aws:RequestedRegion": "us-east-1", "aws:SecureTransport": "true"}
    assert allowed(Request("s3:GetObject", "x", full), both)
    for key, wrong in (("aws:PrincipalTag/team", "ops"), ("aws:RequestedRegion", "eu-west-1"), ("aws:SecureTransport", "false")):
        assert not allowed(Request("s3:GetObject", "x", {**full, key: wrong}), both), key


def test_arn_operators_match_each_part_and_take_wildcards() -> None:
    topic = f"arn:aws:sns:us-east-1:{ACCOUNT}:topic"
    assert allowed(get({"aws:SourceArn": topic}), condition("ArnEquals", "aws:SourceArn", topic))
    assert allowed(get({"aws:SourceArn": topic}), condition("ArnLike", "aws:SourceArn", "arn:aws:sns:*:*:top*"))
    assert not allowed(get({"aws:SourceArn": topic}), condition("ArnLike", "aws:SourceArn", "arn:aws:sns:*:*:other"))
    assert allowed(get({"aws:SourceArn": topic}), condition("ArnNotEquals", "aws:SourceArn", "arn:aws:sns:us-east-1:1:topic"))
    assert not allowed(get({"aws:SourceArn": topic.upper()}), condition("ArnEquals", "aws:SourceArn", topic))


# ---- reference_policies_condition_examples-multi-valued-context-keys ------------------------


@pytest.mark.parametrize(
    ("tag_keys", "denied"),
    [(("key1:legal",), False), (("key1:hr", "key1:personnel"), False), (("key2:audit",), True), (None, True)],
)
def test_the_guides_for_all_values_deny_table(tag_keys: tuple[str, ...] | None, denied: bool) -> None:
    """ "ForAllValues:StringNotLike": {"aws:TagKeys": "key1*"} in a Deny, and the guide's four
    rows; the last one is the documented trap: no tag keys at all also matches."""
    deny = doc({"Effect": "Deny", "Action": ["iam:Tag*", "iam:UnTag*"], "Resource": ["*"],
                "Condition": {"ForAllValues:StringNotLike": {"aws:TagKeys": "key1*"}}})  # fmt: skip
    request = Request("iam:TagUser", f"arn:aws:iam::{ACCOUNT}:user/u", {} if tag_keys is None else {"aws:TagKeys": tag_keys})
    assert (decide(request, [doc(allow("iam:TagUser")), deny]) is Decision.EXPLICIT_DENY) is denied


@pytest.mark.parametrize(
    ("tag_keys", "matches"),
    [(None, False), ((), False), (("Owner",), True), (("DataClass", "Other"), True), (("Other",), False)],
)
def test_for_any_value_needs_the_key_and_one_match(tag_keys: tuple[str, ...] | None, matches: bool) -> None:
    policy = condition("ForAnyValue:StringEquals", "aws:TagKeys", ["DataClass", "Owner"])
    assert allowed(get() if tag_keys is None else get({"aws:TagKeys": tag_keys}), policy) is matches


def test_for_all_values_holds_when_every_value_matches_or_there_are_none() -> None:
    policy = condition("ForAllValues:StringLike", "aws:TagKeys", ["Created*"])
    assert allowed(get({"aws:TagKeys": ("CreatedBy", "CreatedAt")}), policy)
    assert not allowed(get({"aws:TagKeys": ("CreatedBy", "Owner")}), policy)
    assert allowed(get({"aws:TagKeys": ()}), policy)


# ---- what it refuses to guess --------------------------------------------------------------


@pytest.mark.parametrize(
    "policy",
    [
        condition("NumericLessThan", "s3:max-keys", "10"),
        condition("StringEquals", "aws:TagKeys", "a"),  # a multivalued key needs a set operator
        [doc({"Effect": "Allow", "Action": "s3:GetObject"})],  # neither Resource nor NotResource
    ],
    ids=["numeric", "multivalued-without-set-operator", "no-resource"],
)
def test_unmodelled_features_raise(policy: list[dict[str, Any]]) -> None:
    with pytest.raises(UnsupportedError):
        decide(Request("s3:GetObject", "arn:aws:s3:::b/k", {"s3:max-keys": "5", "aws:TagKeys": ("a", "b")}), policy)


def test_an_account_principal_is_refused_rather_than_guessed() -> None:
    policy = doc(allow("sqs:SendMessage", "*", Principal={"AWS": f"arn:aws:iam::{ACCOUNT}:root"}))
    with pytest.raises(UnsupportedError):
        decide(Request("sqs:SendMessage", "q", principal=f"arn:aws:iam::{ACCOUNT}:role/r"), [], policy)
