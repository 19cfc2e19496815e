"""Figures for what a host does around each job (lambda_src/host/runner_files.py). Prints;
asserts nothing.

    .venv/bin/python bench/host_bench.py [--files N] [--mb N] [--runs N]

On a synthetic tree shaped like an unpacked actions/runner release (two ~100 MB node
binaries, a few hundred runtime libraries, thousands of small files), in a temporary folder:
- record: the manifest written once at install (every file hashed);
- check: the install checked against its manifest, as before every start;
- prepare: the job's fresh folder (check + hard-link tree + its own _work/_diag), per job;
- remove: the job's folder removed after the job;
- for scale, a plain copy of the install (what a copied-per-job folder would cost).
The page cache is warm after the first run, as on a host that has run a job.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lambda_src.host.runner_files import fresh_job_dir, record_runner, remove_job_dir, verify_runner  # noqa: E402 - after the path set-up


def build_tree(root: Path, files: int, megabytes: int) -> None:
    """Deterministic content; sizes split like a runner release."""
    big, libraries = 2, 300
    small = max(files - big - libraries, 0)
    budget = megabytes << 20
    sizes = [budget // 5] * big + [(budget * 2 // 5) // libraries] * libraries + [max((budget // 5) // max(small, 1), 1)] * small
    for i, size in enumerate(sizes):
        folder = root / ("externals/node" if i < big else "bin" if i < big + libraries else f"externals/npm/lib/m{i % 200}")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"f{i}"
        path.write_bytes((i.to_bytes(4, "big") * 16384)[:size].ljust(size, b"\0"))
        path.chmod(0o755 if i < big else 0o644)
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)


def timed(step: Callable[[], object], runs: int, between: Callable[[], object] = lambda: None) -> list[float]:
    times = []
    for _ in range(runs):
        between()
        began = time.perf_counter()
        step()
        times.append(time.perf_counter() - began)
    return times


def line(name: str, times: list[float]) -> str:
    return f"{name:<8} median {statistics.median(times) * 1000:7.0f} ms   max {max(times) * 1000:7.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--mb", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        install, job = Path(scratch) / "actions-runner", Path(scratch) / "actions-runner-s0"
        build_tree(install, args.files, args.mb)
        count = sum(1 for _ in install.rglob("*"))
        size = sum(p.stat().st_size for p in install.rglob("*") if p.is_file()) >> 20
        print(f"synthetic runner: {count} entries, {size} MB, {args.runs} runs each")
        print(line("record", timed(lambda: record_runner(install, "2.329.0", "x64"), args.runs)))
        print(line("check", timed(lambda: verify_runner(install), args.runs)))
        print(line("prepare", timed(lambda: fresh_job_dir(install, job, None), args.runs, lambda: remove_job_dir(job))))
        print(line("remove", timed(lambda: remove_job_dir(job), args.runs, lambda: fresh_job_dir(install, job, None))))
        copy = Path(scratch) / "copy"
        print(line("copy", timed(lambda: shutil.copytree(install, copy, symlinks=True), args.runs, lambda: remove_job_dir(copy))))


if __name__ == "__main__":
    main()
