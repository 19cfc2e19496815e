"""Where moto departs from AWS and can be made faithful: SSM parameter tiers, RunInstances counts.

moto 5.2.5 stores a parameter value of any length in any tier, and keeps `Intelligent-Tiering`
as the parameter's tier. SSM does neither: a Standard parameter holds at most 4,096
characters and an Advanced one 8,192 (AWS Systems Manager User Guide, "Managing parameter
tiers"); a longer value is refused with

    ValidationException: Standard tier parameters support a maximum parameter value of 4096
    characters. To create a larger parameter value, upgrade the parameter to use the
    advanced-parameter tier. ...

(the text SSM answers, as quoted in terraform-aws-github-runner issue #3815 and
terraform-provider-aws issue #18521). A request without a tier gets the account's default tier
(Standard until someone changes it); `Intelligent-Tiering` makes the parameter Standard when the
value fits and Advanced when it does not, and the parameter then reports the tier it got.

`make_ssm_strict()` wraps moto's SSM backend so the local plane (`estate serve`) and the tests
get those answers over the wire, from whatever client asks. Not modelled (still kinder than
SSM): the 10,000 Standard and 100,000 Advanced parameters per account and region, parameter
policies, and the API throughput limits.

moto 5.2.5's RunInstances launches MinCount instances and ignores MaxCount. EC2 launches as many
as it has capacity for up to MaxCount, and none (InsufficientInstanceCapacity) when that is
fewer than MinCount (EC2 API Reference, RunInstances: MaxCount, MinCount); moto has capacity
for all, so `make_run_instances_count_faithful()` makes it launch MaxCount. A launch asking
"at least one, up to n" (a warm pool's, a capacity block's) then gets n, as from EC2 with room.
"""

from __future__ import annotations

from typing import Any

STANDARD_MAX_CHARS = 4096
ADVANCED_MAX_CHARS = 8192
STANDARD_TOO_LONG = (
    "Standard tier parameters support a maximum parameter value of 4096 characters. To create a larger parameter value, "
    "upgrade the parameter to use the advanced-parameter tier. For more information, see "
    "https://docs.aws.amazon.com/systems-manager/latest/userguide/parameter-store-advanced-parameters.html"
)
ADVANCED_TOO_LONG = "Advanced tier parameters support a maximum parameter value of 8192 characters."


def stored_tier(value: str, requested: str | None, previous: str | None, default: str = "Standard") -> str:
    """The tier SSM stores a value in, or ValueError with SSM's message when it refuses it.
    Without a tier in the request an existing parameter keeps its own, a new one gets the
    account's default."""
    tier = requested or previous or default
    if tier == "Intelligent-Tiering":
        tier = "Standard" if len(value) <= STANDARD_MAX_CHARS and previous != "Advanced" else "Advanced"
    if tier == "Standard" and len(value) > STANDARD_MAX_CHARS:
        raise ValueError(STANDARD_TOO_LONG)
    if len(value) > ADVANCED_MAX_CHARS:
        raise ValueError(ADVANCED_TOO_LONG)
    return tier


def make_ssm_strict() -> None:
    """Make moto's SSM refuse and store values by tier as SSM does (once per process)."""
    from moto.ssm.exceptions import ValidationException
    from moto.ssm.models import SimpleSystemManagerBackend

    put_parameter = SimpleSystemManagerBackend.put_parameter
    if getattr(put_parameter, "strict_tiers", False):
        return

    def strict_put_parameter(self: Any, name: str, description: str, value: str, *args: Any, **kwargs: Any) -> Any:
        versions = dict.get(self._parameters, name) or []  # a plain get: moto's dict makes missing keys
        previous = versions[-1].tier if versions else None
        if value:  # an empty value is moto's own ValidationException
            try:
                kwargs["tier"] = stored_tier(value, kwargs.get("tier"), previous, self.default_parameter_tier)
            except ValueError as exc:
                raise ValidationException(str(exc)) from None
        return put_parameter(self, name, description, value, *args, **kwargs)

    strict_put_parameter.strict_tiers = True  # type: ignore[attr-defined]
    strict_put_parameter.unpatched = put_parameter  # type: ignore[attr-defined]
    SimpleSystemManagerBackend.put_parameter = strict_put_parameter  # type: ignore[method-assign]


def unpatched_put_parameter() -> Any:
    """moto's own SSM PutParameter, without SSM's tier limits (to show what it lets through)."""
    from moto.ssm.models import SimpleSystemManagerBackend

    put_parameter = SimpleSystemManagerBackend.put_parameter
    return getattr(put_parameter, "unpatched", put_parameter)


def make_run_instances_count_faithful() -> None:
    """Make moto's RunInstances launch MaxCount instances, as EC2 does with capacity to spare
    (once per process)."""
    from moto.ec2.responses.instances import InstanceResponse

    run_instances = InstanceResponse.run_instances
    if getattr(run_instances, "up_to_max_count", False):
        return

    def up_to_max_count(self: Any) -> Any:
        most = self._get_param("MaxCount")
        if most is not None:
            asked = self._get_param

            def param(name: str, *args: Any, **kwargs: Any) -> Any:
                return most if name == "MinCount" else asked(name, *args, **kwargs)

            self._get_param = param  # this request's own handler object
        return run_instances(self)

    up_to_max_count.up_to_max_count = True  # type: ignore[attr-defined]
    InstanceResponse.run_instances = up_to_max_count  # type: ignore[method-assign]
