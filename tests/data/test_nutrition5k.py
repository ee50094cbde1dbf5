"""Nutrition5k's own layout: the cafe CSVs' field order and checks, split files, dishes without an overhead image,
the demo copy. What every reader does with bad input (skipping and counting, unreadable images, missing files,
non-UTF-8 text, empty splits, held-out val) is the reader contract's, ``test_reader_contract.py``."""

from __future__ import annotations

import io
import logging

import pytest
from PIL import Image

from rode_lightning.data.dishes import INGREDIENTS, directory_digest
from rode_lightning.data.datasets.nutrition5k.demo import generate_demo_nutrition5k
from rode_lightning.data.datasets.nutrition5k.reader import read_nutrition5k_split
from rode_lightning.data.datasets.unifood.reader import DataFormatError, SkipCounter

CAFE1 = "metadata/dish_metadata_cafe1.csv"
CAFE2 = "metadata/dish_metadata_cafe2.csv"
TRAIN = "dish_ids/splits/rgb_train_ids.txt"
TEST = "dish_ids/splits/rgb_test_ids.txt"

# Every dish value distinct, so a swapped column shows. Dish fields: calories, mass, fat, carb, protein; then per
# ingredient: id, name, grams, calories, fat, carb, protein.
DISH_A = ("dish_1561662216,300.5,193.0,12.25,28.5,18.75,"
          "ingr_0000000508,soy sauce,3.5,1.75,0.25,0.125,0.25,"
          "ingr_0000000122,white rice,120.0,156.0,0.5,33.5,3.25")
DISH_B = ("dish_1562008979,90.0,250.0,1.5,17.0,4.0,"
          "ingr_0000000001,Olive oil,5.0,44.0,5.0,0.0,0.0,"
          "ingr_0000000094,tomatoes,200.0,36.0,0.5,8.0,1.5,"
          "ingr_0000000001,olive oils,7.0,62.0,7.0,0.0,0.0")
A, B = "dish_1561662216", "dish_1562008979"


def png_bytes(colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def write_release(root, cafe1=(DISH_A,), cafe2=(DISH_B,), train=(A, B), test=(A,), images=None):
    """A Nutrition5k root in the release layout; every listed dish gets a valid overhead PNG unless ``images`` says
    otherwise (``None`` for no image, bytes for a file with those bytes)."""
    files = {CAFE1: "".join(f"{row}\n" for row in cafe1), CAFE2: "".join(f"{row}\n" for row in cafe2),
             TRAIN: "".join(f"{dish}\n" for dish in train), TEST: "".join(f"{dish}\n" for dish in test)}
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    images = {dish: png_bytes() for dish in (*train, *test)} | (images or {})
    for dish, data in images.items():
        if data is not None:
            path = root / "imagery" / "realsense_overhead" / dish / "rgb.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    return root


ALL_TRAIN = 1e-9  # a hold-out share too small to take any dish of these tests: the train file is all train


def read_train(root, **kwargs):
    return read_nutrition5k_split(root, "train", val_fraction=ALL_TRAIN, **kwargs)


def test_two_dish_release_is_parsed_in_the_release_field_order(tmp_path):
    records = read_train(write_release(tmp_path, train=(B, A)))
    assert [record.id for record in records] == [B, A]  # split-file order
    b, a = records
    assert a.dataset == "nutrition5k" and a.category is None and a.recipe == ()
    assert a.image == str(tmp_path / "imagery" / "realsense_overhead" / A / "rgb.png")
    assert a.nutrition == {"mass_g": 193.0, "energy_kcal": 300.5, "fat_g": 12.25, "carbohydrate_g": 28.5,
                           "protein_g": 18.75}
    assert list(a.nutrition) == ["mass_g", "energy_kcal", "fat_g", "carbohydrate_g", "protein_g"]
    # Heaviest first, grams from the ingr_grams column (not calories, which would reverse the order for B).
    assert [(i.name, i.grams) for i in a.ingredients] == [("white rice", 120.0), ("soy sauce", 3.5)]
    # "Olive oil" and "olive oils" are one ingredient weighed twice: merged, raw first name kept, grams summed.
    assert [(i.name, i.grams) for i in b.ingredients] == [("tomatoes", 200.0), ("Olive oil", 12.0)]


def test_test_split_reads_its_own_file(tmp_path):
    records = read_nutrition5k_split(write_release(tmp_path, train=(B,), test=(A,)), "test")
    assert [record.id for record in records] == [A]


def with_field(row: str, index: int, value: str) -> str:
    fields = row.split(",")
    fields[index] = value
    return ",".join(fields)


BAD_B = [
    # (case, release overrides, file:line the error names, message (it starts with the skip reason))
    ("wrong field count", {"cafe2": (DISH_B + ",ingr_0000000002",)}, f"{CAFE2}:1",
     r"wrong number of fields: found 28, expected 6 dish fields plus 7 per ingredient"),
    ("missing field", {"cafe2": (DISH_B.rsplit(",", 1)[0],)}, f"{CAFE2}:1", "wrong number of fields: found 26"),
    ("non-numeric", {"cafe2": (with_field(DISH_B, 3, "lots"),)}, f"{CAFE2}:1",
     r"bad nutrition value: field 4 \(total_fat\) is 'lots', expected a number in \[0, 1000\]"),
    ("not finite", {"cafe2": (with_field(DISH_B, 4, "nan"),)}, f"{CAFE2}:1",
     r"bad nutrition value: field 5 \(total_carb\) is 'nan'"),
    ("negative total", {"cafe2": (with_field(DISH_B, 5, "-4"),)}, f"{CAFE2}:1",
     r"bad nutrition value: field 6 \(total_protein\) is -4, expected a number in \[0, 1000\]"),
    ("absurd total", {"cafe2": (with_field(DISH_B, 1, "25000"),)}, f"{CAFE2}:1",
     r"bad nutrition value: field 2 \(total_calories\) is 25000, expected a number in \[0, 10000\]"),
    ("negative ingredient grams", {"cafe2": (with_field(DISH_B, 15, "-200"),)}, f"{CAFE2}:1",
     r"bad ingredient value: field 16 \(ingr_grams of 'tomatoes'\) is -200"),
    ("non-numeric ingredient value", {"cafe2": (with_field(DISH_B, 12, "?"),)}, f"{CAFE2}:1",
     r"bad ingredient value: field 13 \(ingr_protein of 'Olive oil'\) is '\?'"),
    ("misaligned ingredient", {"cafe2": (with_field(DISH_B, 13, "tomatoes"),)}, f"{CAFE2}:1",
     r"misaligned ingredient: field 14 \(ingr_id of ingredient 2\) is 'tomatoes'"),
    ("empty ingredient name", {"cafe2": (with_field(DISH_B, 7, " "),)}, f"{CAFE2}:1",
     r"empty ingredient name: field 8"),
    ("no ingredients", {"cafe2": (",".join(DISH_B.split(",")[:6]),)}, f"{CAFE2}:1",
     "no ingredients: the row has only the 6 dish fields"),
    ("duplicate across cafes", {"cafe1": (DISH_A, DISH_B)}, f"{CAFE1}:2",
     rf"duplicate dish id: {B} has rows at .*{CAFE1}:2 and .*{CAFE2}:1"),
    ("duplicate within a cafe", {"cafe2": (DISH_B, DISH_B)}, f"{CAFE2}:1",
     rf"duplicate dish id: {B} has rows at .*{CAFE2}:1 and .*{CAFE2}:2"),
    ("unknown dish", {"cafe2": ()}, f"{TRAIN}:2", rf"unknown dish: '{B}' is in the split file but in neither"),
]


@pytest.mark.parametrize("overrides, location, message", [case[1:] for case in BAD_B],
                         ids=[case[0] for case in BAD_B])
def test_bad_dish_raises_naming_file_line_and_field(tmp_path, overrides, location, message):
    write_release(tmp_path, **overrides)
    with pytest.raises(DataFormatError, match=rf"{location}: .*{message}"):
        read_train(tmp_path)


def test_dish_listed_twice_in_a_split_file(tmp_path):
    write_release(tmp_path, train=(A, B, A))
    with pytest.raises(DataFormatError, match=rf"{TRAIN}:3: duplicate dish id: {A} is listed again .*{TRAIN}:1"):
        read_train(tmp_path)
    skipped = SkipCounter()
    assert [r.id for r in read_train(tmp_path, on_error="skip", skipped=skipped)] == [A, B]
    assert skipped == {"nutrition5k/train: DataFormatError: duplicate dish id": 1}


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_dish_without_overhead_image_is_counted_in_both_modes(tmp_path, on_error):
    write_release(tmp_path, images={B: None})
    skipped = SkipCounter()
    assert [r.id for r in read_train(tmp_path, on_error=on_error, skipped=skipped)] == [A]
    assert skipped == {"nutrition5k/train: no overhead image (normal in Nutrition5k)": 1}


def test_bad_row_of_a_dish_no_split_lists_does_not_stop_the_run(tmp_path):
    unused = with_field(DISH_B.replace(B, "dish_1000000000"), 3, "lots")
    write_release(tmp_path, cafe2=(DISH_B, unused))
    assert [r.id for r in read_train(tmp_path)] == [A, B]


def test_row_without_dish_id_is_logged_not_silently_dropped(tmp_path, caplog):
    header = "dish_id,total_calories,total_mass,total_fat,total_carb,total_protein"
    write_release(tmp_path, cafe1=(header, DISH_A))
    with caplog.at_level(logging.WARNING, logger="rode_lightning.data.datasets.nutrition5k.reader"):
        assert [r.id for r in read_train(tmp_path)] == [A, B]
    assert f"{CAFE1}:1: expected a dish id like dish_1561662216 in field 1, found 'dish_id'" in caplog.text


@pytest.fixture(scope="module")
def demo_n5k(tmp_path_factory):
    return generate_demo_nutrition5k(tmp_path_factory.mktemp("demo_n5k"), seed=0, sizes={"train": 20, "test": 6},
                                     image_size=32)


def test_demo_is_readable_and_counts_its_dishes_without_overhead_image(demo_n5k):
    skipped = SkipCounter()
    splits = {split: read_nutrition5k_split(demo_n5k, split, skipped=skipped) for split in ("train", "val", "test")}
    assert len(splits["train"]) + len(splits["val"]) == 20 and len(splits["test"]) == 6
    assert skipped == {"nutrition5k/train: no overhead image (normal in Nutrition5k)": 1,
                       "nutrition5k/test: no overhead image (normal in Nutrition5k)": 1}
    assert (demo_n5k / CAFE1).read_text().count("\n") > (demo_n5k / CAFE2).read_text().count("\n") > 0


def test_demo_metadata_and_images_agree(demo_n5k):
    """Nutrition follows from the grams and the per-100 g table, and each image shows its own dish."""
    for record in read_nutrition5k_split(demo_n5k, "test"):
        grams = {i.name: i.grams for i in record.ingredients}
        assert record.nutrition["mass_g"] == pytest.approx(sum(grams.values()))
        assert record.nutrition["energy_kcal"] == pytest.approx(
            sum(g * INGREDIENTS[name].kcal / 100 for name, g in grams.items()), abs=1e-4)
        assert record.nutrition["protein_g"] == pytest.approx(
            sum(g * INGREDIENTS[name].protein / 100 for name, g in grams.items()), abs=1e-4)
        pixels = set(Image.open(record.image).convert("RGB").getdata())
        shown = {name for name, spec in INGREDIENTS.items() if spec.colour in pixels}
        assert set(grams) <= shown


def test_demo_is_deterministic_and_idempotent(tmp_path):
    sizes = {"train": 5, "test": 2}
    first = generate_demo_nutrition5k(tmp_path / "a", seed=3, sizes=sizes, image_size=16)
    second = generate_demo_nutrition5k(tmp_path / "b", seed=3, sizes=sizes, image_size=16)
    other = generate_demo_nutrition5k(tmp_path / "c", seed=4, sizes=sizes, image_size=16)
    assert directory_digest(first) == directory_digest(second) != directory_digest(other)
    metadata = first / CAFE1
    before = metadata.stat().st_mtime_ns
    generate_demo_nutrition5k(first, seed=3, sizes=sizes, image_size=16)
    assert metadata.stat().st_mtime_ns == before
    # Other arguments replace the previous demo instead of mixing with it.
    generate_demo_nutrition5k(first, seed=3, sizes={"train": 1, "test": 1}, image_size=16, missing_overhead=0)
    assert len(list((first / "imagery" / "realsense_overhead").iterdir())) == 2


def test_demo_refuses_to_overwrite_a_directory_it_did_not_write(tmp_path):
    write_release(tmp_path)
    with pytest.raises(FileExistsError, match="not a demo this function wrote"):
        generate_demo_nutrition5k(tmp_path, sizes={"train": 1, "test": 1})
    assert (tmp_path / CAFE1).read_text().startswith(A)
