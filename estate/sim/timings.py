"""Every time and billing constant `estate simulate` uses, each with its source, in one place.

Upstream code is cited as `owner/repo path:line @commit` (the snapshot read for issue 23);
published measurements by their page; our own estimates say so. `--sensitivity boot`
(estate/sim/simulate.py) reruns the comparison with every host's boot replaced, because the
boot figures are the least certain here and move every policy's cost.
"""

from __future__ import annotations

from estate.config.pool import Pool

# ---- EC2 ----------------------------------------------------------------------------------
# Per-second billing for Linux instances, with a minimum of 60 seconds per instance start
# (aws.amazon.com/about-aws/whats-new/2017/10/announcing-amazon-ec2-per-second-billing/).
EC2_MIN_BILLED_S = 60.0
# RunInstances call (4.8 s) plus pending -> running (17.8 s): when an Auto Scaling group counts
# the instance InService (brevdev/ec2-coldboot-research docs/cold-baseline-results.md @0f8ef4f,
# m7i.large). The same page puts launch -> SSH at 25.8 s: the floor under every boot below.
EC2_PENDING_S = 22.6

# ---- boot: launch call -> runner registered and idle, per image path ----------------------
# Estate and terraform-aws-github-runner hosts both boot the pool file's AMI and install the
# runner at boot, so one image path boots alike under both; Buildkite boots its own image.
BOOT_S = {
    # A stock image, runner downloaded and registered at boot: github-aws-runners/
    # terraform-aws-github-runner issue #1766 (2022) timed the first job of a run starting
    # 2:25 after queueing on the module's default AMI with its 30 s webhook delay: ~115 s.
    "cpu-stock": 115.0,
    # The runner baked into the image: the same issue's pre-built AMI, 1:26 - 30 s = 56 s;
    # issue #4637 (2025) reports 45-60 s after optimising a custom AMI.
    "cpu-baked": 55.0,
    # A GPU image with the driver in it (AWS's Deep Learning AMIs, FlashInfer's GPU pools): the
    # stock boot plus ~35 s for a root volume many times larger, read lazily from its snapshot.
    # Ours, not measured: the least certain figure here (see --sensitivity boot).
    "gpu-driver-in-image": 150.0,
    # A stock image on a GPU instance: the driver is built at boot, 80-150 s more (the design
    # brief's published figures), midpoint added to the stock boot.
    "gpu-driver-at-boot": 230.0,
}
# Elastic CI Stack instances: "typical boot-to-agent-registration takes 3-5 minutes"
# (buildkite/buildkite-agent-scaler scaler/scaler.go:294 @49c4145); the middle of that.
BUILDKITE_BOOT_S = 240.0
# The boots `--sensitivity boot` puts in place of all of the above, for every host.
BOOT_SWEEP_S = (75.0, 150.0, 240.0, 300.0)


def image_path(pool: Pool) -> str:
    """Which boot a pool's hosts pay, from its instance types and AMI filter: GPU instances
    with an image named for its driver (Deep Learning, NVIDIA, GPU) have it baked in; a
    runner image (`github-runner-*`, as upstream's packer templates name them) has the runner."""
    names = " ".join(v.lower() for key, values in pool.runner.ami_selection.filter.items() if key == "name" for v in values)
    if pool.gpus_per_node:
        return "gpu-driver-in-image" if any(word in names for word in ("deep learning", "nvidia", "gpu")) else "gpu-driver-at-boot"
    return "cpu-baked" if "runner" in names else "cpu-stock"


# ---- control plane -----------------------------------------------------------------------
# webhook -> SQS -> scale-up's launch call, for the estate and terraform-aws-github-runner alike
# (both queue the webhook in SQS for a scale-up Lambda): the webhook function (~0.1 s on
# loopback, bench/control_plane_bench.py), SQS -> Lambda event source mapping (p99 0.1 s
# standard, 0.65 s FIFO: bitesizedserverless.com "Serverless Messaging: Latency Compared",
# eu-west-1, 2022) and the scale-up's GitHub and SSM calls before CreateFleet (~1 s, ours).
# GitHub's own delivery delay is not measured and not included.
CONTROL_PLANE_LATENCY_S = 2.0

# ---- after the last job: billed until EC2 leaves `running` --------------------------------
# Billing stops when the instance enters shutting-down (docs.aws.amazon.com/AWSEC2/latest/
# UserGuide/TroubleshootingInstancesShuttingDown.html). A TerminateInstances call gets there at
# once; a `shutdown -h now` from inside only when the guest has powered off.
# Ours: the host program exits, then the host runs `shutdown -h now` (estate/derive/
# host_user_data.py); an estimate of a minimal Ubuntu host's poweroff, not measured.
ESTATE_SHUTDOWN_TAIL_S = 10.0
# terraform-aws-github-runner's ephemeral runner: the start script's exit trap sleeps 10 s for
# the logs, then calls TerminateInstances (modules/runners/templates/start-runner.sh:101-109 @4475534).
PHILIPS_EPHEMERAL_TAIL_S = 10.0
# Elastic CI Stack: the agent's ExecStopPost sleeps 10 s, then terminates the instance through
# the Auto Scaling API (elastic-ci-stack-for-aws packer/linux/stack/conf/buildkite-agent/
# scripts/terminate-instance:83-84 @b4948d8).
BUILDKITE_TERMINATE_TAIL_S = 10.0


def billed_seconds(alive_s: float, market: str) -> float:
    """What EC2 bills for an instance alive `alive_s`: capacity blocks are bought whole."""
    return alive_s if market == "capacity-block" else max(EC2_MIN_BILLED_S, alive_s)
