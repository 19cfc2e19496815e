"""Where moto is kinder than AWS and can be made as strict: SSM parameter tiers.

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
