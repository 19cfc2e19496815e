"""Shared paths and builders. Fixtures from ../shared are read in place, never copied."""

from __future__ import annotations

import os
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parent.parent
SHARED_FIXTURES = PROJECT_DIR.parent / "shared" / "fixtures"
FLASHINFER_CONFIGS = SHARED_FIXTURES / "terraform-aws-github-runner" / "flashinfer"
EXAMPLE_CONFIGS = PROJECT_DIR / "runner_configs"

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
