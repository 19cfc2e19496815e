"""The build steps of an image family, as EC2 Image Builder component documents (AWSTOE's YAML:
phases `build`, `validate` on the build instance, `test` on an instance launched from the new
image). Pure: the same family and stack give the same documents, so a component is replaced
(and the image rebuilt) exactly when what it installs changes.

What each step installs, and from where:
- `os`: Ubuntu's updates from its archive, python3 and iptables (the host programs and the
  metadata firewall need them); apt's and snap's timed refreshes off, so nothing competes with
  a job at boot (the image is rebuilt weekly instead); a reboot into the updated kernel.
- `docker`: Docker Engine, pinned, from Docker's apt repository, its key checked against the
  fingerprint Docker publishes (docs.docker.com/engine/install/ubuntu).
- `nvidia` (GPU families): the driver branch from Ubuntu's archive, open kernel modules built
  and signed by Canonical for the AWS kernel (ubuntu.com/server/docs, "NVIDIA drivers
  installation"), Fabric Manager for NVSwitch nodes, and the NVIDIA Container Toolkit, pinned,
  from NVIDIA's repository (docs.nvidia.com/datacenter/cloud-native/container-toolkit,
  "Installing the NVIDIA Container Toolkit"); persistence mode set at every boot.
- `host-programs-N`, `host-programs`: our host code (estate/derive/host_user_data.image_bundle)
  in parts (a document holds 16,000 characters), joined, checked against its digest and
  unpacked at /opt/runner-estate.
- `runner`: the GitHub runner release, pinned by version and SHA-256, installed and recorded by
  our own host program (lambda_src/host/bake.py) exactly as a host would install it.
- `container-images`: `docker pull` of the stack's and the family's pools' images.
- `finish`: apt's caches and logs emptied, so the snapshot a host loads holds less.

No document carries a credential (tests/test_images.py scans them): every download is public,
and Image Builder removes SSH host keys and authorized keys from Linux images before it takes
the snapshot.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

import yaml

from estate.config.stack_config import StackConfig
from estate.derive.host_user_data import UNPACK, image_bundle
from estate.derive.images import BUNDLE_STAMP, HOST_PROGRAMS_DIR, RUNNER_DIR, ImageFamily

DOCUMENT_LIMIT = 16000  # botocore imagebuilder CreateComponentRequest.data: InlineComponentData, max 16000
PART_SIZE = 12000  # characters of the host bundle per component, leaving room for the document around it
PARTS_DIR = "/var/lib/runner-estate-bundle"
# Docker's release key (docs.docker.com/engine/install/ubuntu, "Install using the apt repository").
DOCKER_KEY_FINGERPRINT = "9DC858229FC7DD38854AE2D88D81803C0EBFCD88"
DOCKER_APT = "https://download.docker.com/linux/ubuntu"
APT = "DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600"


@dataclass(frozen=True)
class ComponentDocument:
    step: str  # the component's short name within the family: os, docker, nvidia, host-programs-1, ...
    description: str
    text: str  # the YAML document


def _document(name: str, description: str, build: list[dict[str, Any]], validate: list[str], test: list[str]) -> str:
    phases: list[dict[str, Any]] = [{"name": "build", "steps": build}]
    if validate:
        phases.append({"name": "validate", "steps": [_bash("Check", validate)]})
    if test:
        phases.append({"name": "test", "steps": [_bash("Test", test)]})
    document = {"name": name, "description": description, "schemaVersion": 1.0, "phases": phases}
    return yaml.safe_dump(document, sort_keys=False, width=1 << 20, default_flow_style=False)


def _bash(step: str, commands: list[str]) -> dict[str, Any]:
    return {"name": step, "action": "ExecuteBash", "inputs": {"commands": ["set -euo pipefail", *commands]}}


def _os() -> tuple[list[dict[str, Any]], list[str], list[str]]:
    build = [
        _bash(
            "Update",
            [
                "cloud-init status --wait >/dev/null || true",  # the build instance's own first boot may still hold apt
                f"{APT} update",
                f"{APT} -y dist-upgrade",
                f"{APT} -y install --no-install-recommends python3 iptables ca-certificates curl gnupg",
                # No timed refresh at a host's boot: apt's and snap's updates come with the next image.
                "systemctl disable --now apt-daily.timer apt-daily-upgrade.timer unattended-upgrades.service || true",
                "snap refresh --hold || true",
            ],
        ),
        {"name": "IntoTheUpdatedKernel", "action": "Reboot", "inputs": {"delaySeconds": 0}},
    ]
    return build, ["python3 --version", "iptables --version", "ip6tables --version"], ["python3 --version"]


def _docker(stack: StackConfig) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    version = stack.images.docker_version
    package = f"5:{version}-1~ubuntu.$VERSION_ID~$VERSION_CODENAME"
    keyring = "/etc/apt/keyrings/docker.asc"
    build = [
        _bash(
            "InstallDocker",
            [
                "install -m 0755 -d /etc/apt/keyrings",
                f"curl -fsSL https://download.docker.com/linux/ubuntu/gpg -o {keyring}",
                f"chmod a+r {keyring}",
                # The key is the one Docker signs with, or nothing of theirs is trusted.
                f"gpg --show-keys --with-colons {keyring} | grep -q '^fpr:::::::::{DOCKER_KEY_FINGERPRINT}:$'",
                ". /etc/os-release",
                f'echo "deb [arch=$(dpkg --print-architecture) signed-by={keyring}] {DOCKER_APT} $VERSION_CODENAME stable"'
                " >/etc/apt/sources.list.d/docker.list",
                f"{APT} update",
                f'{APT} -y install "docker-ce={package}" "docker-ce-cli={package}" containerd.io docker-buildx-plugin',
                "apt-mark hold docker-ce docker-ce-cli",
                "systemctl enable docker.service containerd.service",
            ],
        )
    ]
    check = [f"[ \"$(docker version --format '{{{{.Client.Version}}}}')\" = {version} ]", "systemctl is-enabled docker.service"]
    return build, check, [*check, "docker info >/dev/null"]


def _nvidia(stack: StackConfig) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    settings = stack.images.nvidia
    branch, toolkit = settings.driver_branch, settings.container_toolkit_version
    packages = [
        f"linux-modules-nvidia-{branch}-server-open-aws",
        f"nvidia-headless-no-dkms-{branch}-server-open",
        f"nvidia-utils-{branch}-server",
    ]
    if settings.fabric_manager:
        packages += [f"nvidia-fabricmanager-{branch}", f"libnvidia-nscq-{branch}"]
    toolkit_packages = ["nvidia-container-toolkit", "nvidia-container-toolkit-base", "libnvidia-container-tools", "libnvidia-container1"]
    keyring = "/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg"
    commands = []
    if settings.driver_version is not None:  # one release of the branch, held by an APT pin
        pin = f"Package: *nvidia*{branch}*\\nPin: version {settings.driver_version}*\\nPin-Priority: 1001\\n"
        commands.append(f"printf {shlex.quote(pin)} >/etc/apt/preferences.d/runner-estate-nvidia")
    commands += [
        f"{APT} -y install --no-install-recommends {' '.join(packages)}",
        f"curl -fsSL https://nvidia.github.io/libnvidia-container/gpgkey | gpg --batch --yes --dearmor -o {keyring}",
        f"curl -fsSL https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list"
        f" | sed 's#deb https://#deb [signed-by={keyring}] https://#' >/etc/apt/sources.list.d/nvidia-container-toolkit.list",
        f"{APT} update",
        f"{APT} -y install {' '.join(f'{p}={toolkit}' for p in toolkit_packages)}",
        f"apt-mark hold {' '.join(toolkit_packages)}",
        "nvidia-ctk runtime configure --runtime=docker",
        # Persistence mode at every boot, before any job: the driver stays loaded between jobs.
        "printf '%s\\n' '[Unit]' 'Description=runner-estate: NVIDIA persistence mode' 'After=nvidia-persistenced.service'"
        " '[Service]' 'Type=oneshot' 'ExecStart=/usr/bin/nvidia-smi -pm 1' '[Install]' 'WantedBy=multi-user.target'"
        " >/etc/systemd/system/runner-estate-gpu-persistence.service",
        "systemctl enable runner-estate-gpu-persistence.service",
        *(["systemctl enable nvidia-fabricmanager.service"] if settings.fabric_manager else []),
    ]
    check = [
        f'modinfo -F version nvidia | grep -q "^{settings.driver_version or branch}\\."',
        f"[ \"$(dpkg-query -W -f '${{Version}}' nvidia-container-toolkit)\" = {toolkit} ]",
        "systemctl is-enabled runner-estate-gpu-persistence.service",
    ]
    return [_bash("InstallDriverAndToolkit", commands)], check, [*check, "command -v nvidia-smi", "nvidia-ctk --version"]


def _bundle_parts() -> tuple[list[str], str]:
    text, digest = image_bundle()
    return [text[i : i + PART_SIZE] for i in range(0, len(text), PART_SIZE)], digest


def _host_programs(parts: int, digest: str) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    joined = f"cat {' '.join(f'{PARTS_DIR}/part-{i:02d}' for i in range(1, parts + 1))} | tr -d ' \\n'"
    build = [
        _bash(
            "Unpack",
            [
                f'[ "$({joined} | sha256sum | cut -d" " -f1)" = {digest} ]',
                f"rm -rf {HOST_PROGRAMS_DIR} && install -m 0755 -d {HOST_PROGRAMS_DIR}",
                f"{joined} | {UNPACK} | tar -xJ --no-same-owner -C {HOST_PROGRAMS_DIR}",
                f"chown -R root:root {HOST_PROGRAMS_DIR} && chmod -R go-w {HOST_PROGRAMS_DIR}",
                f"echo {digest} >{BUNDLE_STAMP} && chmod 0644 {BUNDLE_STAMP}",
                f"rm -rf {PARTS_DIR}",
            ],
        )
    ]
    check = [f"cd {HOST_PROGRAMS_DIR} && python3 -m lambda_src.host.bootstrap --help >/dev/null", f"grep -qx {digest} {BUNDLE_STAMP}"]
    return build, check, check


def _runner(family: ImageFamily, stack: StackConfig) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    common = ["--runner-version", stack.runner_version, "--runner-arch", family.runner_arch, "--runner-dir", RUNNER_DIR]
    bake = shlex.join(["python3", "-m", "lambda_src.host.bake", *common, "--runner-sha256", family.runner_sha256])
    check = [f"cd {HOST_PROGRAMS_DIR} && {shlex.join(['python3', '-m', 'lambda_src.host.bake', *common, '--check'])}"]
    return [_bash("InstallRunner", [f"cd {HOST_PROGRAMS_DIR} && {bake}"])], check, check


def _container_images(family: ImageFamily) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    pulls = [
        f"for try in 1 2 3; do docker pull --quiet {shlex.quote(i)} && break; [ $try -lt 3 ] && sleep 10; done"
        for i in family.container_images
    ]
    check = [f"docker image inspect --format '{{{{.Id}}}}' {shlex.quote(i)} >/dev/null" for i in family.container_images]
    return [_bash("Pull", ["systemctl start docker.service", *pulls, *check])], check, check


def _finish() -> tuple[list[dict[str, Any]], list[str], list[str]]:
    build = [_bash("Tidy", [f"{APT} clean", "rm -rf /var/lib/apt/lists/*", "journalctl --vacuum-time=1s >/dev/null 2>&1 || true"])]
    return build, [], []


def component_documents(family: ImageFamily, stack: StackConfig) -> list[ComponentDocument]:
    """The family's build steps in the order its recipe runs them."""
    prefix = f"runner-estate-{stack.environment}-{family.name}"
    parts, digest = _bundle_parts()
    steps: list[tuple[str, str, tuple[list[dict[str, Any]], list[str], list[str]]]] = [
        ("os", "Ubuntu updates, python3 and iptables; timed refreshes off", _os()),
        ("docker", f"Docker Engine {stack.images.docker_version}", _docker(stack)),
    ]
    if family.gpu:
        driver = stack.images.nvidia.driver_version or f"branch {stack.images.nvidia.driver_branch}"
        toolkit = stack.images.nvidia.container_toolkit_version
        steps.append(("nvidia", f"NVIDIA driver {driver} and Container Toolkit {toolkit}; persistence mode", _nvidia(stack)))
    for i, part in enumerate(parts, start=1):
        # base85 (with `.` for `_`) holds no quote, backslash or space: safe in single quotes.
        write = _bash("WritePart", [f"install -m 0700 -d {PARTS_DIR}", f"printf '%s' '{part}' >{PARTS_DIR}/part-{i:02d}"])
        steps.append((f"host-programs-{i}", f"runner-estate host programs, part {i} of {len(parts)}", ([write], [], [])))
    steps += [
        ("host-programs", f"runner-estate host programs {digest[:12]} at {HOST_PROGRAMS_DIR}", _host_programs(len(parts), digest)),
        ("runner", f"GitHub Actions runner {stack.runner_version} ({family.runner_arch}), checked and recorded", _runner(family, stack)),
    ]
    if family.container_images:
        steps.append(("container-images", f"{len(family.container_images)} container images pulled", _container_images(family)))
    steps.append(("finish", "apt caches and logs emptied", _finish()))
    documents = []
    for step, description, (build, validate, test) in steps:
        text = _document(f"{prefix}-{step}", description, build, validate, test)
        if len(text) > DOCUMENT_LIMIT:
            raise ValueError(f"the {family.name} image's {step} component is {len(text)} characters; Image Builder takes {DOCUMENT_LIMIT}")
        documents.append(ComponentDocument(step, description, text))
    return documents
