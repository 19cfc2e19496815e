"""`python -m estate serve`: the control plane running locally on loopback, for demos and
end-to-end checks. The real webhook handler and planners; AWS in moto_server, capacity blocks
in our EC2 boundary fake (moto has none); GitHub as our fake. Scale-up (and the block manager's
`cb_scale_up` for capacity-block pools) runs as messages arrive; reconcile, scale-down and the
block manager every minute."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

from estate.local.plane import LocalPlane

PUMP_INTERVAL_S = 0.1
CYCLE_S = 60.0


def default_session_path() -> Path:
    """Where `serve` says how to reach it, for `status --serve` and `report --serve`:
    $RUNNER_ESTATE_SERVE, else ~/.cache/runner-estate/serve.json ($XDG_CACHE_HOME respected)."""
    if os.environ.get("RUNNER_ESTATE_SERVE"):
        return Path(os.environ["RUNNER_ESTATE_SERVE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "runner-estate" / "serve.json"


def write_session(local: LocalPlane, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(local.session(), indent=1, sort_keys=True), encoding="utf-8")


def serve(configs: list[str], port: int, stop: threading.Event | None = None, session: Path | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    local = LocalPlane(configs).start()
    session_path = session or default_session_path()
    try:
        url = local.serve_webhook(port)
        write_session(local, session_path)
        # The contract other tools read: these lines, once it listens.
        print(f"webhook: {url}", flush=True)
        print(f"secret: {local.webhook_secret}", flush=True)
        print(f"github: {local.github.url}", flush=True)
        for line in local.with_blocks():
            print(f"block: {line} (simulated: estate/local/fake_block_ec2.py)", flush=True)
        print(f"session: {session_path}", flush=True)
        stop = stop or threading.Event()
        next_cycle = time.monotonic() + CYCLE_S
        while not stop.wait(PUMP_INTERVAL_S):
            local.pump(local.scale_up)
            if time.monotonic() >= next_cycle:
                local.cycle()
                next_cycle += CYCLE_S
    except KeyboardInterrupt:
        pass
    finally:
        session_path.unlink(missing_ok=True)  # it would point at a plane that is gone
        local.stop()
