"""Shared paths and builders. Fixtures from ../shared are read in place, never copied."""

from __future__ import annotations

import os
import textwrap
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

PROJECT_DIR = Path(__file__).resolve().parent.parent
SHARED_FIXTURES = PROJECT_DIR.parent / "shared" / "fixtures"
FLASHINFER_CONFIGS = SHARED_FIXTURES / "terraform-aws-github-runner" / "flashinfer"
EXAMPLE_CONFIGS = PROJECT_DIR / "runner_configs"

if TYPE_CHECKING:
    from estate.local.plane import Clock, LocalPlane

# Every clock in the tests is fixed. The control-plane suites run at each of these instants (UTC):
# the example estate's pool_config fires on weekdays 14-23 UTC, so its answer depends on the hour.
INSTANTS = {
    "weekday-working-hours": datetime(2026, 6, 2, 15, 30, tzinfo=UTC),  # a Tuesday
    "weekday-night": datetime(2026, 6, 3, 3, 0, 30, tzinfo=UTC),
    "weekend": datetime(2026, 6, 6, 16, 0, tzinfo=UTC),  # a Saturday
    "dst-change": datetime(2026, 3, 8, 6, 59, 30, tzinfo=UTC),  # 01:59:30 EST, half a minute before US clocks spring forward
}
WORKING_HOURS = INSTANTS["weekday-working-hours"]


def fixed_clock(monkeypatch: pytest.MonkeyPatch, start: datetime) -> Clock:
    """A virtual clock at `start` that moto follows too (it stamps an instance's LaunchTime, a
    volume's CreateTime and a parameter's LastModifiedDate with its own clock, which the scaler
    and the sweeper read), so no test reads the wall clock through a double."""
    import moto.ec2.models.elastic_block_store
    import moto.ec2.models.instances
    import moto.ssm.models

    from estate.local.plane import Clock

    clock = Clock(start.timestamp())
    for module in (moto.ec2.models.instances, moto.ec2.models.elastic_block_store, moto.ssm.models):
        monkeypatch.setattr(module, "utcnow", lambda: datetime.fromtimestamp(clock(), UTC).replace(tzinfo=None))
    return clock


@contextmanager
def served_example_plane(moto_url: str, monkeypatch: pytest.MonkeyPatch, at: datetime, **options: Any) -> Iterator[LocalPlane]:
    """The example estate's control plane on loopback with its webhook listening, its clock fixed
    at `at`; `options` go to LocalPlane (e.g. extra_apps)."""
    from estate.local.plane import LocalPlane

    plane = LocalPlane([str(EXAMPLE_CONFIGS)], clock=fixed_clock(monkeypatch, at), endpoint=moto_url, **options).start()
    try:
        plane.serve_webhook()
        yield plane
    finally:
        plane.stop()


needs_shared = pytest.mark.skipif(not FLASHINFER_CONFIGS.is_dir(), reason="../shared/fixtures is not beside this checkout")

MINIMAL_POOL = """\
matcherConfig:
  exactMatch: true
  labelMatchers:
    - [self-hosted, linux, x64, cpu]
runner_config:
  runner_os: linux
  runner_architecture: x64
  runner_extra_labels: [cpu]
  instance_types: [m7i.2xlarge]
  runners_maximum_count: 4
"""

H100_POOL = """\
matcherConfig:
  exactMatch: true
  labelMatchers:
    - [self-hosted, linux, x64, gpu, h100, 1gpu]
    - [self-hosted, linux, x64, gpu, h100, 4gpu]
runner_config:
  runner_os: linux
  runner_architecture: x64
  runner_extra_labels: [gpu, h100, sm90]
  instance_types: [p5.48xlarge]
  runners_maximum_count: 2
estate:
  gpu_slots: 1x4+4x1
  capacity_block:
    reservation_ids: [cr-0123456789abcdef0]
"""


@pytest.fixture(scope="session", autouse=True)
def _requests_follow_the_service_models() -> Iterator[None]:
    """Every request the tests' code sends through our stdlib JSON client or a boto3 client is
    checked against botocore's model of the service first (estate/local/aws_models.py), whatever
    answers it: moto, our fakes, or nothing at all."""
    from botocore.client import BaseClient

    from estate.local import aws_models
    from lambda_src.aws.sigv4_client import AwsJsonClient

    json_call, boto_call = AwsJsonClient.call, BaseClient._make_api_call

    def checked_json_call(self: AwsJsonClient, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        aws_models.checked(self.service, action, payload)
        return json_call(self, action, payload)

    def checked_boto_call(self: Any, operation_name: str, api_params: dict[str, Any]) -> Any:
        aws_models.checked(self.meta.service_model.service_name, operation_name, api_params)
        return boto_call(self, operation_name, api_params)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AwsJsonClient, "call", checked_json_call)
        patch.setattr(BaseClient, "_make_api_call", checked_boto_call)
        yield


@pytest.fixture(autouse=True)
def _no_request_broke_a_service_model() -> Iterator[None]:
    """A refused request fails its test even where the code under test catches and logs the
    error (a slot report, a reconcile pass): the violation is recorded as well as raised."""
    from estate.local import aws_models

    aws_models.VIOLATIONS.clear()
    yield
    found, aws_models.VIOLATIONS[:] = list(aws_models.VIOLATIONS), []
    assert not found, "requests the service would refuse:\n" + "\n".join(found)


def write_pool(directory: Path, name: str, text: str) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def _moto_server() -> Iterator[str]:
    import warnings

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from moto.server import ThreadedMotoServer

    from estate.local.moto_fidelity import make_run_instances_count_faithful, make_ssm_strict

    make_ssm_strict()  # SSM's tier limits, which moto does not enforce
    make_run_instances_count_faithful()  # up to MaxCount, as EC2 launches
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server._server.server_address[:2]  # type: ignore[union-attr]
    yield f"http://{host!s}:{port}"
    server.stop()


@pytest.fixture
def moto_url(_moto_server: str) -> str:
    """A moto_server on loopback, emptied before each test."""
    urllib.request.urlopen(urllib.request.Request(f"{_moto_server}/moto-api/reset", method="POST"), timeout=5).close()  # noqa: S310 - loopback
    return _moto_server
