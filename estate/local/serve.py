"""`python -m estate serve`: the control plane running locally on loopback, for demos and
end-to-end checks. The real webhook handler and planners; AWS in moto_server, capacity blocks
in our EC2 boundary fake (moto has none); GitHub as our fake. Scale-up (and the block manager's
`cb_scale_up` for capacity-block pools) runs as messages arrive; reconcile, scale-down and the
block manager every minute."""

from __future__ import annotations

import logging
import threading
import time

from estate.local.plane import LocalPlane

PUMP_INTERVAL_S = 0.1
CYCLE_S = 60.0


def serve(configs: list[str], port: int, stop: threading.Event | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    local = LocalPlane(configs).start()
    try:
        url = local.serve_webhook(port)
        # The contract other tools read: these lines, once it listens.
        print(f"webhook: {url}", flush=True)
        print(f"secret: {local.webhook_secret}", flush=True)
        print(f"github: {local.github.url}", flush=True)
        for line in local.with_blocks():
            print(f"block: {line} (simulated: estate/local/fake_block_ec2.py)", flush=True)
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
        local.stop()
