"""A fake of the GitHub Actions runner for tests: it reads its JIT config from the
environment as `run.sh` does, comes online at our fake GitHub, takes one job whose labels it
carries, and exits — or exits at once when its registration is deleted. A job labelled
`crash` makes it die mid-job. Run as a program: `python tests/fake_runner.py`."""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import urllib.error
import urllib.request

JIT_ENV = "ACTIONS_RUNNER_INPUT_JITCONFIG"


def _call(base: str, method: str, path: str) -> dict[str, object] | None:
    request = urllib.request.Request(base + path, method=method, data=b"" if method == "POST" else None)  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
            raw = answer.read()
            return dict(json.loads(raw)) if raw else {}
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def main() -> int:
    files = json.loads(base64.b64decode(os.environ[JIT_ENV]))  # as run.sh --jitconfig unpacks it
    runner = json.loads(base64.b64decode(files[".runner"]))
    base, rid = os.environ["FAKE_GITHUB_URL"], runner["agentId"]
    job_seconds = float(os.environ.get("FAKE_JOB_SECONDS", "0.2"))
    if _call(base, "POST", f"/_fake/runners/{rid}/online") is None:
        return 0
    while True:
        found = _call(base, "GET", f"/_fake/runners/{rid}/assignment")
        if found is None:
            return 0  # deregistered while waiting: the real runner exits too
        if found.get("job") is not None:
            break
        time.sleep(0.05)
    labels = found.get("labels")
    if isinstance(labels, list) and "crash" in labels:
        return 1
    time.sleep(job_seconds)
    _call(base, "POST", f"/_fake/runners/{rid}/done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
