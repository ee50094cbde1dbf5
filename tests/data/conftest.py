from __future__ import annotations

import datasets
import pytest

from rode_lightning.data.datasets.huggingface.files import clear_dataset_cache


@pytest.fixture
def fresh_datasets(tmp_path_factory, monkeypatch):
    """Parquet is converted into the datasets cache: keep it out of the home directory. Each test loads its own
    datasets, not those an earlier test left in this process."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.getbasetemp() / "hf_cache")
    clear_dataset_cache()
    yield
    clear_dataset_cache()
