"""The demo cache every generator shares: a current copy is kept, a stale or interrupted one replaced, and a folder
that no generation marked is refused, never wiped."""

from __future__ import annotations

import pytest

from rode_lightning.data.datasets.unifood.demo import generate_demo_unifood
from rode_lightning.data.demo_cache import INCOMPLETE, DemoCopy, check_sizes
from rode_lightning.user_errors import ExistingFileError, UserError


def demo_copy(root, seed=0):
    return DemoCopy(root, ".demo_toy", {"seed": seed, "version": 1}, ("data", "index.txt"), "Toy")


def write(copy):
    with copy.writing() as root:
        (root / "data").mkdir()
        (root / "data" / f"seed{copy.stamp['seed']}").write_text("plate")
        (root / "index.txt").write_text(str(copy.stamp["seed"]))


def test_a_written_copy_is_current_for_its_stamp_only(tmp_path):
    copy = demo_copy(tmp_path / "toy")
    assert not copy.current
    write(copy)
    assert copy.current and not demo_copy(tmp_path / "toy", seed=1).current
    assert (tmp_path / "toy" / ".demo_toy").read_text() == '{"seed": 0, "version": 1}'  # sorted keys, as before


def test_a_stale_copy_is_replaced_and_nothing_else_is_touched(tmp_path):
    write(demo_copy(tmp_path))
    (tmp_path / "notes.txt").write_text("mine")
    write(demo_copy(tmp_path, seed=1))
    assert sorted(path.name for path in (tmp_path / "data").iterdir()) == ["seed1"]
    assert (tmp_path / "notes.txt").read_text() == "mine"  # not in the layout: never deleted


def test_an_interrupted_copy_is_marked_incomplete_and_replaced(tmp_path):
    copy = demo_copy(tmp_path)
    with pytest.raises(KeyboardInterrupt), copy.writing() as root:
        (root / "data").mkdir()
        (root / "data" / "half").write_text("cut")
        raise KeyboardInterrupt
    assert (tmp_path / ".demo_toy").read_text() == INCOMPLETE and not copy.current
    write(copy)
    assert copy.current and sorted(path.name for path in (tmp_path / "data").iterdir()) == ["seed0"]


def test_a_folder_without_the_marker_is_refused_not_wiped(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "precious").write_text("the user's")
    with pytest.raises(ExistingFileError, match=r"holds \['data'\] but no .demo_toy marker: it is not a demo this "
                                                r"function wrote, so it is left alone; choose an empty directory"):
        write(demo_copy(tmp_path))
    assert (tmp_path / "data" / "precious").read_text() == "the user's"
    assert not (tmp_path / ".demo_toy").exists()


def test_unifood_refuses_the_users_own_folder(tmp_path):
    """Uni-Food's generator used to delete images/ and annotations/ whatever they held."""
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "train.jsonl").write_text('{"id": "mine"}\n')
    with pytest.raises(UserError, match=r"holds \['annotations'\] but no .complete marker"):
        generate_demo_unifood(tmp_path, splits={"train": 1}, image_size=8)
    assert (tmp_path / "annotations" / "train.jsonl").read_text() == '{"id": "mine"}\n'


@pytest.mark.parametrize("arguments, message", [
    ({"sizes": {"dev": 1}, "splits": ("train", "test")},
     r"sizes=\{'dev': 1\}: expected non-negative counts for splits among \['train', 'test'\]"),
    ({"sizes": {"train": -1}}, r"sizes=\{'train': -1\}: expected non-negative counts per split"),
    ({"sizes": {"train": 2.5}}, r"expected non-negative counts"),
    ({"sizes": {"train": 0}, "minimum": 1}, r"sizes=\{'train': 0\}: expected counts of at least 1 per split"),
    ({"sizes": {}, "minimum": 1}, r"sizes=\{\}: expected counts of at least 1"),
    ({"sizes": {"train": 1}, "missing_images": -2}, r"sizes=\{'train': 1\}, missing_images=-2: expected"),
], ids=["unknown split", "negative", "not whole", "below the minimum", "none", "negative extra count"])
def test_sizes_are_checked_before_anything_is_written(arguments, message):
    with pytest.raises(UserError, match=message):
        check_sizes(**arguments)
