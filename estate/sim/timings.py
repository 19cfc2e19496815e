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
# Two kinds of path. The estate's hosts boot the estate's own baked image (estate/derive/images.py;
# `estate.image.source: baked`, the default), or their pool file's AMI with `source: ami`.
# terraform-aws-github-runner and a static pool boot the pool file's AMI and install the runner
# at boot, as their configs say (`ami_path`); Buildkite boots its own image.

# The estate's image path, built up from its parts:
# Launch call -> the OS reachable (SSH), when cloud-init's final stage runs user-data: 25.8 s
# (brevdev/ec2-coldboot-research docs/cold-baseline-results.md @0f8ef4f, m7i.large; design brief
# "Time to start"). RunsOn's measured 16-22 s to a job's first step on a baked CPU image (same
# brief) says this floor is a conservative one.
EC2_LAUNCH_TO_OS_S = 25.8
# Start of a stopped instance -> the OS reachable: ~21 s (brevdev/ec2-coldboot-research, 2026-01,
# design brief "Time to start").
EC2_START_STOPPED_TO_OS_S = 21.0
# user-data start -> runner start on the estate's baked image: median 0.77 s (bench/boot_bench.py:
# the real user-data and bootstrap on loopback, EC2 and GitHub excluded; issue 20.3).
HOST_BOOTSTRAP_S = 0.77
# Runner start -> taking the job: the runner's listener starts and opens its session with its
# JIT config, already registered before the host asked for it. Ours, not measured.
RUNNER_CONNECT_S = 3.0
# A GPU host on the baked image: the driver is in the image (no 80-150 s build at boot) and the
# root volume is initialised at the launch template's rate (no minutes of lazy loads: design
# brief); what is left is loading the kernel module and persistence mode. Ours, not measured.
GPU_DRIVER_LOAD_S = 5.0

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
    # The estate's baked image (runner, host programs, Docker; for GPUs the driver and toolkit),
    # a fresh launch: EC2 to the OS, our bootstrap, the runner's connection.
    "cpu-estate-image": EC2_LAUNCH_TO_OS_S + HOST_BOOTSTRAP_S + RUNNER_CONNECT_S,
    "gpu-estate-image": EC2_LAUNCH_TO_OS_S + HOST_BOOTSTRAP_S + RUNNER_CONNECT_S + GPU_DRIVER_LOAD_S,
    # A stopped warm instance of that image started for a job: its disks were initialised when
    # it booted once, so only EC2's start, our bootstrap and the runner's connection are left.
    "cpu-stopped-start": EC2_START_STOPPED_TO_OS_S + HOST_BOOTSTRAP_S + RUNNER_CONNECT_S,
    "gpu-stopped-start": EC2_START_STOPPED_TO_OS_S + HOST_BOOTSTRAP_S + RUNNER_CONNECT_S + GPU_DRIVER_LOAD_S,
}
# Elastic CI Stack instances: "typical boot-to-agent-registration takes 3-5 minutes"
# (buildkite/buildkite-agent-scaler scaler/scaler.go:294 @49c4145); the middle of that.
BUILDKITE_BOOT_S = 240.0
# The boots `--sensitivity boot` puts in place of all of the above but the stopped starts, for
# every host.
BOOT_SWEEP_S = (75.0, 150.0, 240.0, 300.0)


def image_path(pool: Pool) -> str:
    """Which boot the estate's hosts of `pool` pay: the estate's baked image of the pool's family
    (`estate.image.source: baked`, the default), else the pool file's AMI (`ami_path`). The
    simulator assumes the stack's default, `images.build: true` (estate/derive/images.py)."""
    if pool.image_family is not None:
        return "gpu-estate-image" if pool.gpus_per_node else "cpu-estate-image"
    return ami_path(pool)


def ami_path(pool: Pool) -> str:
    """Which boot a host of the pool file's AMI pays, from its instance types and AMI filter: GPU
    instances with an image named for its driver (Deep Learning, NVIDIA, GPU) have it baked in; a
    runner image (`github-runner-*`, as upstream's packer templates name them) has the runner.
    What terraform-aws-github-runner and a static pool boot, whatever `estate:` says."""
    names = " ".join(v.lower() for key, values in pool.runner.ami_selection.filter.items() if key == "name" for v in values)
    if pool.gpus_per_node:
        return "gpu-driver-in-image" if any(word in names for word in ("deep learning", "nvidia", "gpu")) else "gpu-driver-at-boot"
    return "cpu-baked" if "runner" in names else "cpu-stock"


def stopped_start_path(pool: Pool) -> str:
    return "gpu-stopped-start" if pool.gpus_per_node else "cpu-stopped-start"


# ---- stopped warm pools (issue 20.2) ------------------------------------------------------
# EBS loads a baked image's root at the launch template's Provisioned Rate for Volume
# Initialization: the estate sets the fastest, 300 MiB/s (estate/derive/images.py
# initialization_rate; botocore's valid range 100-300), so a root made from an image snapshot of
# S GiB is initialised in S * 1024 / 300 s. That is EBS's work on the volume, reported on the
# volume (EC2 API InitializationStatusDetails), not reads by the instance: it goes on while the
# instance is stopped. A warm instance boots once (runner checked, the image's container images
# there), then powers itself off; it is billed for that boot only.
VOLUME_INITIALIZATION_MIB_S = 300.0
# Billing stops when the instance enters `stopping` (no charge while stopping or stopped, bar
# hibernation: docs.aws.amazon.com/AWSEC2/latest/UserGuide/ec2-instance-lifecycle.html); each
# start is billed again with EC2_MIN_BILLED_S at least (the per-second billing page above).
# While stopped, it pays its EBS: gp3 at $0.08 per GB-month in us-east-1
# (aws.amazon.com/ebs/pricing/), prorated by the second over AWS's 730-hour month. (No policy is
# charged for the EBS of running hosts: the ideal's hosts have the same disks.)
GP3_USD_PER_GB_MONTH = 0.08
HOURS_PER_MONTH = 730.0


def boot_once_s(pool: Pool) -> float:
    """A warm instance's one boot, billed: the estate image's boot. Its root's initialisation
    (image GiB * 1024 / VOLUME_INITIALIZATION_MIB_S s) goes on in EBS after it has stopped."""
    return BOOT_S[image_path(pool)]


def ebs_usd(gib_seconds: float) -> float:
    return gib_seconds / 3600 / HOURS_PER_MONTH * GP3_USD_PER_GB_MONTH


# ---- the estate's image builds (issue 20.1) -----------------------------------------------
# EC2 Image Builder costs nothing itself; the build and test instances and the image's snapshot
# are paid as EC2 and EBS (aws.amazon.com/image-builder/pricing/). One build per family on the
# stack's schedule, weekly by default (estate/config/stack_config.py ImageSettings.schedule,
# Sundays 04:00 UTC), on the family's first build instance type, on-demand.
IMAGE_BUILD_PERIOD_S = 7 * 24 * 3600.0
# Sim time 0 is 1970-01-01 00:00 UTC, a Thursday: the first Sunday 04:00 is 3 days 4 hours on.
IMAGE_FIRST_BUILD_S = (3 * 24 + 4) * 3600.0
# Build plus test instance time per build, minutes: apt upgrades, Docker, the runner and its
# check, the host programs; for `nvidia` the driver, container toolkit and a reboot, and the
# container images pulled. Ours, not measured (Image Builder's own workflow steps add minutes).
IMAGE_BUILD_MINUTES = {"cpu": 30.0, "nvidia": 60.0}
# Each family's newest image is kept as an EBS snapshot the size of its root volume at most:
# standard snapshots at $0.05 per GB-month (aws.amazon.com/ebs/pricing/).
SNAPSHOT_USD_PER_GB_MONTH = 0.05


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
