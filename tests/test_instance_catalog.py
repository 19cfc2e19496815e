import pytest

from lambda_src.core.instance_catalog import parse_instance_type


@pytest.mark.parametrize(
    ("name", "architecture"),
    [
        ("m7i.24xlarge", "x64"),
        ("r7iz.16xlarge", "x64"),
        ("g4dn.2xlarge", "x64"),
        ("p6-b200.48xlarge", "x64"),
        ("m7g.16xlarge", "arm64"),
        ("c7gn.16xlarge", "arm64"),
        ("x2gd.8xlarge", "arm64"),
        ("im4gn.16xlarge", "arm64"),
        ("r7gd.16xlarge", "arm64"),
        ("g5g.xlarge", "arm64"),
        ("a1.large", "arm64"),
    ],
)
def test_architecture_follows_the_graviton_letter(name: str, architecture: str) -> None:
    itype = parse_instance_type(name)
    assert itype is not None
    assert itype.architecture == architecture


@pytest.mark.parametrize(
    ("name", "model", "sm", "count"),
    [
        ("g4dn.2xlarge", "t4", "sm75", 1),
        ("g4dn.12xlarge", "t4", "sm75", 4),
        ("g5.48xlarge", "a10g", "sm86", 8),
        ("p5.48xlarge", "h100", "sm90", 8),
        ("p5en.48xlarge", "h200", "sm90", 8),
        ("p6-b200.48xlarge", "b200", "sm100", 8),
    ],
)
def test_gpu_nodes_know_their_gpus(name: str, model: str, sm: str, count: int) -> None:
    itype = parse_instance_type(name)
    assert itype is not None
    assert itype.gpu_model is not None
    assert (itype.gpu_model.label, itype.gpu_model.sm, itype.gpu_count) == (model, sm, count)


def test_cpu_types_have_no_gpu() -> None:
    itype = parse_instance_type("r6a.16xlarge")
    assert itype is not None
    assert itype.gpu_model is None
    assert itype.gpu_count == 0


@pytest.mark.parametrize("name", ["", "m7i", "not a type", "p5.2xlarge", "g5.3xlarge", "M7I.LARGE"])
def test_names_that_are_not_instance_types(name: str) -> None:
    assert parse_instance_type(name) is None
