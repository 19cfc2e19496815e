"""GPU detection from `nvidia-smi -q -x`, GPU health, the node's slot plan and `estate gpus`,
on the real H100 capture in ../shared and on 8-GPU nodes built from it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from estate.cli import EXIT_USAGE, main
from lambda_src.core.gpu_slots import LayoutError, parse_layout
from lambda_src.core.gpus import faulty_gpus, parse_nvidia_smi_xml, xid_faults
from lambda_src.core.node_slots import plan_node
from lambda_src.host.nvidia_smi import NoGpuDriverError, read_nvidia_smi
from tests.conftest import SHARED_FIXTURES

H100_XML = SHARED_FIXTURES / "nvidia-smi" / "h100-x1" / "nvidia-smi-q.xml"
needs_capture = pytest.mark.skipif(not H100_XML.is_file(), reason="../shared/fixtures/nvidia-smi is not beside this checkout")
H100_UUID = "GPU-37a94c4f-bf3d-cf9f-3dee-8246d608ab49"


def eight_gpu_xml(*, product: str = "NVIDIA H100 80GB HBM3", ecc_on: int | None = None) -> str:
    """The captured H100's XML with its <gpu> repeated for eight devices on their own buses."""
    text = H100_XML.read_text(encoding="utf-8")
    start, end = text.index("<gpu id="), text.index("</gpu>") + len("</gpu>")
    gpus = []
    for i in range(8):
        gpu = text[start:end].replace("00:06.0", f"{0x10 + i:02x}:00.0").replace(H100_UUID, f"GPU-00000000-0000-0000-0000-00000000000{i}")
        gpu = gpu.replace("NVIDIA H100 80GB HBM3", product)
        if i == ecc_on:
            gpu = gpu.replace("<dram_uncorrectable>0</dram_uncorrectable>", "<dram_uncorrectable>3</dram_uncorrectable>", 1)
        gpus.append(gpu)
    return text[:start] + "\n".join(gpus) + text[end:]


@needs_capture
def test_the_captured_h100_is_read_with_its_identity_and_compute_capability() -> None:
    (gpu,) = parse_nvidia_smi_xml(H100_XML.read_text(encoding="utf-8"))
    assert (gpu.index, gpu.name, gpu.uuid, gpu.memory_mib) == (0, "NVIDIA H100 80GB HBM3", H100_UUID, 81559)
    assert (gpu.model, gpu.sm, gpu.compute_capability) == ("h100", "sm90", "9.0")
    assert gpu.pci_bus_id == "00000000:00:06.0"
    assert (gpu.uncorrectable_ecc, gpu.remap_failure) == (0, False)


@needs_capture
def test_the_compute_capability_matches_nvidia_smi_query_output() -> None:
    csv = (H100_XML.parent / "nvidia-smi-query.csv").read_text(encoding="utf-8").splitlines()[1]
    (gpu,) = parse_nvidia_smi_xml(H100_XML.read_text(encoding="utf-8"))
    assert [c.strip() for c in csv.split(",")][4] == gpu.compute_capability


@needs_capture
@pytest.mark.parametrize(
    ("layout", "devices", "labels"),
    [
        ("1x4+4x1", [[0, 1, 2, 3], [4], [5], [6], [7]], ["4gpu", "1gpu", "1gpu", "1gpu", "1gpu"]),
        ("4x2", [[0, 1], [2, 3], [4, 5], [6, 7]], ["2gpu"] * 4),
        ("8x1", [[i] for i in range(8)], ["1gpu"] * 8),
        ("1x8", [list(range(8))], ["8gpu"]),
    ],
)
def test_an_eight_gpu_node_splits_per_layout_with_each_slot_pinned_to_its_devices(
    layout: str, devices: list[list[int]], labels: list[str]
) -> None:
    plan = plan_node(parse_nvidia_smi_xml(eight_gpu_xml()), parse_layout(layout))
    assert [list(s.device_indices) for s in plan.slots] == devices
    assert [s.labels for s in plan.slots] == [("h100", "sm90", size) for size in labels]
    first = plan.slots[0]
    uuids = ",".join(first.device_uuids)
    assert first.environment == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": uuids, "NVIDIA_VISIBLE_DEVICES": uuids}
    all_uuids = [u for s in plan.slots for u in s.device_uuids]
    assert len(all_uuids) == len(set(all_uuids)) == 8  # no GPU in two slots


@needs_capture
def test_b200_nodes_are_labelled_b200_and_sm100() -> None:
    plan = plan_node(parse_nvidia_smi_xml(eight_gpu_xml(product="NVIDIA B200")), parse_layout("4x2"))
    assert plan.slots[0].labels == ("b200", "sm100", "2gpu")
    assert plan.gpus[0].compute_capability == "10.0"


@needs_capture
def test_a_layout_larger_than_the_node_is_refused_with_both_counts() -> None:
    with pytest.raises(LayoutError, match=r"needs 8 GPUs; this node has 1"):
        plan_node(parse_nvidia_smi_xml(H100_XML.read_text(encoding="utf-8")), parse_layout("1x4+4x1"))


@needs_capture
def test_uncorrectable_ecc_takes_the_slot_holding_that_gpu_out_of_rotation() -> None:
    gpus = parse_nvidia_smi_xml(eight_gpu_xml(ecc_on=5))
    plan = plan_node(gpus, parse_layout("1x4+4x1"), faulty_gpus(gpus, {}))
    assert list(plan.faulty) == [2]  # GPU 5 is the second 1-GPU slot
    assert "3 uncorrectable ECC errors" in plan.faulty[2]


@needs_capture
def test_fault_xids_in_the_kernel_log_take_their_gpu_out_and_application_xids_do_not() -> None:
    gpus = parse_nvidia_smi_xml(eight_gpu_xml())
    log = [
        "[ 812.1] NVRM: Xid (PCI:0000:11:00): 79, pid=0, GPU has fallen off the bus.",
        "[ 815.3] NVRM: Xid (PCI:0000:12:00): 13, pid=4242, name=python, Graphics Exception",
    ]
    xids = xid_faults(log)
    assert xids == {"11:00": [79]}
    faults = faulty_gpus(gpus, xids)
    assert faults == {gpus[1].uuid: "XID 79"}
    plan = plan_node(gpus, parse_layout("1x4+4x1"), faults)
    assert list(plan.faulty) == [0]  # GPU 1 sits in the 4-GPU slot


def test_no_driver_gives_one_clear_line() -> None:
    def missing(argv: list[str]) -> str:
        raise FileNotFoundError(argv[0])

    def failing(argv: list[str]) -> str:
        message = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n"
        raise subprocess.CalledProcessError(9, argv, output=message)

    with pytest.raises(NoGpuDriverError, match="no NVIDIA driver"):
        read_nvidia_smi(missing)
    with pytest.raises(NoGpuDriverError, match="couldn't communicate with the NVIDIA driver"):
        read_nvidia_smi(failing)


def test_text_that_is_not_nvidia_smi_xml_is_refused() -> None:
    with pytest.raises(ValueError, match="not nvidia-smi XML"):
        parse_nvidia_smi_xml("<html></html>")


@needs_capture
def test_estate_gpus_prints_the_gpu_and_the_slot_plan(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["gpus", "--nvidia-smi-xml", str(H100_XML)]) == 0
    out = capsys.readouterr().out
    assert "NVIDIA H100 80GB HBM3" in out
    assert H100_UUID in out
    assert "compute 9.0" in out
    assert "slot 0  1 GPU  devices 0  labels [h100, sm90, 1gpu]" in out

    node = tmp_path / "p5.xml"
    node.write_text(eight_gpu_xml(), encoding="utf-8")
    assert main(["gpus", "--nvidia-smi-xml", str(node), "--layout", "1x4+4x1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["layout"] == "1x4+4x1"
    assert [s["devices"] for s in report["slots"]] == [[0, 1, 2, 3], [4], [5], [6], [7]]
    assert report["gpus"][7]["compute_capability"] == "9.0"


@needs_capture
def test_estate_gpus_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gpus", "--nvidia-smi-xml", str(H100_XML), "--layout", "1x4+4x1"]) == 1
    assert capsys.readouterr().err.strip() == "error: layout 1x4+4x1 needs 8 GPUs; this node has 1"
    assert main(["gpus", "--nvidia-smi-xml", str(H100_XML), "--layout", "4y1"]) == EXIT_USAGE  # a bad argument, before anything runs
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.skipif(shutil.which("nvidia-smi") is None, reason="no NVIDIA driver on this machine")
def test_on_a_real_nvidia_machine_the_real_gpus_are_reported(capsys: pytest.CaptureFixture[str]) -> None:
    query = ["nvidia-smi", "--query-gpu=uuid,name", "--format=csv,noheader"]
    expected = subprocess.run(query, capture_output=True, text=True, check=True).stdout
    assert main(["gpus", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = [line.split(", ") for line in expected.strip().splitlines()]
    assert [(g["uuid"], g["name"]) for g in report["gpus"]] == [(u, n) for u, n in rows]
    assert all(re.fullmatch(r"\d+\.\d", g["compute_capability"] or "") for g in report["gpus"])


# ---- health in `estate gpus`, one decision with the node's slot manager (issue 19.6) ------


@needs_capture
def test_estate_gpus_reports_health_and_takes_a_faulty_gpus_slot_out_of_the_plan(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    node = tmp_path / "p5.xml"
    node.write_text(eight_gpu_xml(ecc_on=5), encoding="utf-8")
    assert main(["gpus", "--nvidia-smi-xml", str(node), "--layout", "1x4+4x1"]) == 0
    out = capsys.readouterr().out
    assert "GPU-00000000-0000-0000-0000-000000000005" in out
    assert out.count("healthy") == 7
    assert "FAULTY: 3 uncorrectable ECC errors" in out
    assert "slot 2  1 GPU  devices 5  labels [h100, sm90, 1gpu]  OUT OF ROTATION: GPU GPU-00000000-0000-0000-0000-000000000005" in out
    assert main(["gpus", "--nvidia-smi-xml", str(node), "--layout", "1x4+4x1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [g["faulty"] for g in report["gpus"]] == [None] * 5 + ["3 uncorrectable ECC errors"] + [None] * 2
    assert [s["slot"] for s in report["slots"] if s["faulty"]] == [2]


@needs_capture
def test_estate_gpus_reads_fault_xids_from_a_kernel_log(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    node = tmp_path / "p5.xml"
    node.write_text(eight_gpu_xml(), encoding="utf-8")
    log = tmp_path / "dmesg.txt"
    log.write_text("[ 1.0] NVRM: Xid (PCI:0000:11:00): 79, pid=0, GPU has fallen off the bus.\n", encoding="utf-8")
    assert main(["gpus", "--nvidia-smi-xml", str(node), "--layout", "4x2", "--kernel-log", str(log), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {s["slot"]: s["faulty"] for s in report["slots"] if s["faulty"]} == {0: "GPU GPU-00000000-0000-0000-0000-000000000001: XID 79"}


@needs_capture
def test_the_node_s_slot_manager_and_estate_gpus_take_the_same_slots_out(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from lambda_src.host.slot_manager import SlotManager, SlotPorts

    node = tmp_path / "p5.xml"
    node.write_text(eight_gpu_xml(ecc_on=6), encoding="utf-8")
    gpus = parse_nvidia_smi_xml(node.read_text(encoding="utf-8"))
    faults = faulty_gpus(gpus, xid_faults(["NVRM: Xid (PCI:0000:10:00): 48, pid=1"]))
    plan = plan_node(gpus, parse_layout("1x4+4x1"))  # as booted, before any fault
    manager = SlotManager(list(plan.slots), SlotPorts(lambda slot: None, lambda slot, config: None, lambda *report: None, lambda: faults))  # type: ignore[arg-type, return-value]
    manager.tick()
    log = tmp_path / "dmesg.txt"
    log.write_text("NVRM: Xid (PCI:0000:10:00): 48, pid=1\n", encoding="utf-8")
    assert main(["gpus", "--nvidia-smi-xml", str(node), "--layout", "1x4+4x1", "--kernel-log", str(log), "--json"]) == 0
    from_cli = {s["slot"]: s["faulty"] for s in json.loads(capsys.readouterr().out)["slots"] if s["faulty"]}
    assert manager.out_of_rotation == from_cli == dict(plan_node(gpus, parse_layout("1x4+4x1"), faults).faulty)
    assert sorted(from_cli) == [0, 3]  # GPU 0's XID in the 4-GPU slot, GPU 6's ECC errors in slot 3


@pytest.mark.parametrize(
    ("args", "code", "error"),
    [
        (["--nvidia-smi-xml", "/nonexistent/nvidia-smi.xml"], 1, "No such file or directory"),
        (["--layout", "4y1"], 64, "--layout 4y1"),
    ],
)
def test_estate_gpus_json_prints_json_on_error_too(args: list[str], code: int, error: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gpus", *args, "--json"]) == code
    out, err = capsys.readouterr()
    assert error in json.loads(out)["error"]
    assert err.count("\n") == 1


def test_estate_gpus_json_on_a_machine_whose_nvidia_smi_lists_no_gpu(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    xml = tmp_path / "none.xml"
    xml.write_text("<nvidia_smi_log><driver_version>570.0</driver_version></nvidia_smi_log>", encoding="utf-8")
    assert main(["gpus", "--nvidia-smi-xml", str(xml), "--json"]) == 1
    assert json.loads(capsys.readouterr().out) == {"error": "nvidia-smi lists no GPU on this machine"}
