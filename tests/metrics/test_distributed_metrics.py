"""NutritionPMAE and RecipeScores reduced over two CPU processes (gloo) equal the single-process values on all data.

The ranks get unequal shares (every other sample of an odd-length set), so a mean of per-rank results would differ
from the true value: only summing the states is exact.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rode_lightning.metrics.nutrition import NutritionPMAE
from rode_lightning.metrics.recipe import RecipeScores

WORLD_SIZE = 2

NUTRITION_PREDICTED = [
    "mass: 330 g, energy: 400 kcal, fat: 15.0 g, carbohydrate: 50.0 g, protein: 25.0 g",
    "It weighs about 100 g and has 260 kcal, 8 g fat, 20 g carbs and 5 g protein.",
    "mass: 500 g, energy: 650 kcal",  # three fields missing
    "no idea",
    {"mass_g": 90.0, "energy_kcal": 120.0, "fat_g": 1.0, "carbohydrate_g": 25.0, "protein_g": 2.0},
]
NUTRITION_TRUE = [
    "mass: 300 g, energy: 450 kcal, fat: 12.0 g, carbohydrate: 55.0 g, protein: 20.0 g",
    "mass: 150 g, energy: 200 kcal, fat: 8.0 g, carbohydrate: 15.0 g, protein: 10.0 g",
    "mass: 450 g, energy: 700 kcal, fat: 30.0 g, carbohydrate: 70.0 g, protein: 35.0 g",
    "mass: 250 g, energy: 300 kcal, fat: 9.5 g, carbohydrate: 40.0 g, protein: 12.5 g",
    "mass: 100 g, energy: 100 kcal, fat: 0.5 g, carbohydrate: 22.0 g, protein: 1.5 g",
]
RECIPE_PREDICTED = [
    "1. Cook the rice in salted water. 2. Beat the eggs. 3. Fry everything together.",
    "1. Boil the pasta. 2. Add the tomato sauce and basil.",
    "1. Slice the bread. 2. Toast it.",
    "Grill the chicken and serve it with lemon.",
    "",
]
RECIPE_TRUE = [
    "1. Cook the rice in water. 2. Beat the eggs with salt. 3. Fry the rice and eggs together.",
    "1. Boil the pasta until al dente. 2. Stir in the tomato sauce. 3. Top with basil.",
    "1. Toast the bread. 2. Spread the butter.",
    "1. Marinate the chicken. 2. Grill it for 10 minutes. 3. Serve with lemon.",
    "1. Mix the flour and water. 2. Knead.",
]


def _scores(rank: int, world_size: int) -> dict[str, float]:
    nutrition, recipe = NutritionPMAE(), RecipeScores()
    nutrition.update(NUTRITION_PREDICTED[rank::world_size], NUTRITION_TRUE[rank::world_size])
    recipe.update(RECIPE_PREDICTED[rank::world_size], RECIPE_TRUE[rank::world_size])
    result = {f"nutrition/{key}": value.item() for key, value in nutrition.compute().items()}
    result.update({f"recipe/{key}": value.item() for key, value in recipe.compute().items()})
    return result


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE, timeout=timedelta(seconds=60))
    try:
        scores = _scores(rank, WORLD_SIZE)  # compute() gathers and sums the states of both ranks
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(scores))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.timeout(120)
@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs the gloo backend")
def test_two_process_reduction_equals_single_process(tmp_path):
    expected = _scores(rank=0, world_size=1)
    # fork starts in a fraction of a second; spawn (re-importing torch per process) takes seconds.
    start_method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    mp.start_processes(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD_SIZE, join=True,
                       start_method=start_method)
    for rank in range(WORLD_SIZE):
        reduced = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert reduced.keys() == expected.keys()
        for key, value in expected.items():
            assert reduced[key] == pytest.approx(value, rel=1e-6, abs=1e-9), (rank, key)
    # The unequal split must matter, or the test would not tell a sum from a mean of rank results.
    per_rank = [_scores(rank, WORLD_SIZE) for rank in range(WORLD_SIZE)]
    means = {key: sum(scores[key] for scores in per_rank) / WORLD_SIZE for key in expected}
    assert means["nutrition/average"] != pytest.approx(expected["nutrition/average"])
    assert means["recipe/sacrebleu"] != pytest.approx(expected["recipe/sacrebleu"])
