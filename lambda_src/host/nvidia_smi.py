"""Run `nvidia-smi -q -x` on this machine: the one GPU probe that does I/O (parsing is lambda_src/core/gpus.py)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

NVIDIA_SMI_XML = ["nvidia-smi", "-q", "-x"]


class NoGpuDriverError(RuntimeError):
    """nvidia-smi is missing or cannot talk to a driver."""


def read_nvidia_smi(run: Callable[[list[str]], str] | None = None) -> str:
    """`nvidia-smi -q -x` of this machine; a clear error where there is no driver."""
    try:
        return (run or _run)(NVIDIA_SMI_XML)
    except FileNotFoundError:
        raise NoGpuDriverError("nvidia-smi not found: this machine has no NVIDIA driver installed (or it is not on PATH)") from None
    except subprocess.CalledProcessError as exc:
        detail = (exc.output or "").strip().splitlines()
        reason = detail[0] if detail else f"exit status {exc.returncode}"
        raise NoGpuDriverError(f"nvidia-smi failed: {reason} (is the NVIDIA driver loaded?)") from None


def _run(argv: list[str]) -> str:
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=True, timeout=60).stdout  # noqa: S603
