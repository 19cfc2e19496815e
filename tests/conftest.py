"""Shared paths and builders. Fixtures from ../shared are read in place, never copied."""

from __future__ import annotations

import textwrap
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
