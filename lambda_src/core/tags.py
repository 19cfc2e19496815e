"""The tags that mark an instance as ours: the IAM conditions and the scaler both key on them."""

from __future__ import annotations

from collections.abc import Iterable

MANAGED = "runner-estate:managed"
ENVIRONMENT = "runner-estate:environment"
POOL = "runner-estate:pool"
LABELS = "runner-estate:labels"
# On Image Builder's build and test instances and the images it makes: which family. Build
# instances carry no MANAGED tag, so no controller ever counts, adopts or ends one.
IMAGE_FAMILY = "runner-estate:image-family"
# On a stopped warm pool's instances (lambda_src/core/warm_pools.py), set at launch: the scaler
# never counts one as a host until it starts it for a job, and IAM lets it start only these.
WARM = "runner-estate:warm"
# What the scaler stores as a warm instance's runner config at its launch: the host reads (and
# deletes) it as it would a config, prepares, and powers off; only the scaler can write it.
WARM_CONFIG = "runner-estate:warm-boot"

_TAG_VALUE_MAX = 256


def estate_tags(environment: str) -> dict[str, str]:
    """Tags on every resource of one environment's estate."""
    return {MANAGED: "true", ENVIRONMENT: environment}


def runner_tags(environment: str, pool: str, labels: Iterable[str]) -> dict[str, str]:
    """Tags on a runner instance and its volumes; labels joined as GitHub lists them."""
    joined = ",".join(labels)
    if len(joined) > _TAG_VALUE_MAX:
        raise ValueError(f"labels of pool {pool!r} are {len(joined)} characters joined; an EC2 tag holds {_TAG_VALUE_MAX}")
    return {**estate_tags(environment), POOL: pool, LABELS: joined, "Name": f"{environment}-{pool}"}
