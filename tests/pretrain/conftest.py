"""The tiny demo base shared by the pre-training tests (built once per session, 2 % of the demo recipe's steps)."""

from __future__ import annotations

import pytest

from rode_lightning.pretrain import BaseRecipe, build_demo_base

TINY = BaseRecipe().scaled(0.02)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory):
    return build_demo_base(tmp_path_factory.mktemp("tiny_base") / "base", TINY)
