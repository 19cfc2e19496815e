import pytest

from lambda_src.core.gpu_slots import LayoutError, parse_layout, whole_node


@pytest.mark.parametrize(
    ("text", "slots", "gpus", "labels"),
    [
        ("1x4+4x1", 5, 8, ("4gpu", "1gpu")),
        ("4x2", 4, 8, ("2gpu",)),
        ("8x1", 8, 8, ("1gpu",)),
        ("1x8", 1, 8, ("8gpu",)),
        (" 2 x 2 + 4X1 ", 6, 8, ("2gpu", "1gpu")),
    ],
)
def test_layouts_from_the_design(text: str, slots: int, gpus: int, labels: tuple[str, ...]) -> None:
    layout = parse_layout(text)
    assert layout.slot_count == slots
    assert layout.total_gpus == gpus
    assert layout.size_labels == labels


def test_spec_round_trips() -> None:
    assert parse_layout("1x4+4x1").spec() == "1x4+4x1"


@pytest.mark.parametrize("text", ["", "4", "x4", "1x4+", "0x1", "1x0", "1x4,4x1", "-1x2"])
def test_malformed_layouts_are_refused_with_the_form_to_use(text: str) -> None:
    with pytest.raises(LayoutError, match="COUNT"):
        parse_layout(text)


def test_whole_node_is_one_slot() -> None:
    assert whole_node(8).spec() == "1x8"
