"""Figures for `estate agent`. Prints; asserts nothing.

    .venv/bin/python bench/agent_bench.py [--slots N] [--runs N]

- start -> every slot registered: from `Agent.start()` (which first clears registrations an
  earlier run left) to the last slot's JIT registration, against our fake GitHub on loopback,
  with a stand-in that starts no runner program (goal < 1 s, the runner program excluded);
  every run mints its installation token (App JWT, RS256);
- a fresh process's import of the agent module (what `python -m estate agent` pays first).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from estate.agent.daemon import RUNNER_SCOPE, Agent, Slot, plain_slots  # noqa: E402 - after the path set-up
from estate.local.fake_github import FakeGithub  # noqa: E402
from lambda_src.github.client import GithubClient  # noqa: E402


class NoRunner:
    """Stands in for the runner program: the figure is the agent's own overhead."""

    def poll(self) -> int | None:
        return None

    def terminate(self) -> None:
        return None

    def wait(self, timeout: float | None = None) -> int:
        return 0


def one_start(github: FakeGithub, slots: int) -> float:
    client = GithubClient(github.url, "example-org", 4321, lambda: github.private_key_pem, token_permissions=RUNNER_SCOPE)
    agent = Agent(client, lambda slot, config: NoRunner(), plain_slots(slots, "bench", "agent-", ["self-hosted", "linux", "x64"]),
                  "agent-bench-s")  # fmt: skip
    began = time.perf_counter()
    agent.start()
    took = time.perf_counter() - began
    assert all(isinstance(s, Slot) and s.runner_id is not None for s in agent.slots)
    github.runners.clear()
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    github = FakeGithub("example-org", 4321).start()
    try:
        times = [one_start(github, args.slots) for _ in range(args.runs)]
    finally:
        github.stop()
    print(
        f"agent start -> {args.slots} slots registered (token minted, leftovers listed, {args.slots} JIT registrations): "
        f"median {statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms over {args.runs} runs"
    )
    imports = []
    for _ in range(3):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import estate.agent.daemon"], cwd=ROOT, check=True)
        imports.append(time.perf_counter() - began)
    print(f"fresh process importing estate.agent.daemon: median {statistics.median(imports) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
