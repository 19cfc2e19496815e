"""Runs in an image build (an Image Builder component, estate/derive/image_components.py), never
on a runner host: put the pinned runner release where the host programs look for it, checked
against its SHA-256 and recorded in its manifest (runner_files.install_runner), so a host
booted from the image downloads nothing and checks the install before each job as it checks
every install. `--check` verifies an install as the image's test phase does. Stdlib only.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from lambda_src.host.common import _matching, download
from lambda_src.host.runner_files import RunnerTamperedError, install_runner, verify_runner

log = logging.getLogger("runner_estate.bake")


def bake(directory: Path, version: str, arch: str, sha256: str) -> None:
    install_runner(directory, version, arch, sha256, download)
    manifest = verify_runner(directory)
    log.info("runner %s for %s at %s: %d entries recorded", version, arch, directory, len(manifest["entries"]))


def check(directory: Path, version: str, arch: str) -> None:
    manifest = verify_runner(directory)
    if (manifest.get("version"), manifest.get("arch")) != (version, arch):
        raise RunnerTamperedError(
            f"{directory} holds runner {manifest.get('version')} for {manifest.get('arch')}, not {version} for {arch}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runner-version", type=_matching(r"\d+\.\d+\.\d+"), required=True)
    parser.add_argument("--runner-arch", choices=["x64", "arm64"], required=True)
    parser.add_argument("--runner-sha256", type=_matching(r"[0-9A-Fa-f]{64}"))
    parser.add_argument("--runner-dir", default="/opt/actions-runner")
    parser.add_argument("--check", action="store_true", help="only verify the install against its manifest")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    directory = Path(args.runner_dir)
    try:
        if args.check:
            check(directory, args.runner_version, args.runner_arch)
        elif args.runner_sha256 is None:
            parser.error("--runner-sha256 is required: an image pins its runner by checksum")
        else:
            bake(directory, args.runner_version, args.runner_arch, args.runner_sha256)
    except (RunnerTamperedError, RuntimeError, OSError) as exc:
        log.error("%s", exc)
        return 1
    log.info("runner %s for %s at %s is as recorded", args.runner_version, args.runner_arch, directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
