from __future__ import annotations

import re
import warnings

import pytest
import sacrebleu

from rode_lightning.metrics.recipe import RecipeScores

HYPOTHESES = [
    "1. Cook the rice in salted water. 2. Beat the eggs. 3. Fry everything together for 5 minutes.",
    "1. Boil the pasta. 2. Add the tomato sauce and basil.",
    "1. Slice the bread. 2. Toast it.",
    "Grill the chicken.",
]
REFERENCES = [
    "1. Cook the rice in water. 2. Beat the eggs with salt. 3. Fry the rice and eggs together for 5 minutes.",
    "1. Boil the pasta until al dente. 2. Stir in the tomato sauce. 3. Top with basil.",
    "1. Toast the bread. 2. Spread the butter.",
    "1. Marinate the chicken. 2. Grill it for 10 minutes. 3. Serve with lemon.",
]
# The same corpus with the step numbers removed by hand: what normalize=True must score.
HYPOTHESES_PLAIN = [
    "Cook the rice in salted water. Beat the eggs. Fry everything together for 5 minutes.",
    "Boil the pasta. Add the tomato sauce and basil.",
    "Slice the bread. Toast it.",
    "Grill the chicken.",
]
REFERENCES_PLAIN = [
    "Cook the rice in water. Beat the eggs with salt. Fry the rice and eggs together for 5 minutes.",
    "Boil the pasta until al dente. Stir in the tomato sauce. Top with basil.",
    "Toast the bread. Spread the butter.",
    "Marinate the chicken. Grill it for 10 minutes. Serve with lemon.",
]


def rouge_l_f(prediction: str, reference: str) -> float:
    """ROUGE-L F1 from a plain LCS table, with rouge-score's default tokenisation (lower case, runs of [a-z0-9])."""
    hyp = re.findall(r"[a-z0-9]+", prediction.lower())
    ref = re.findall(r"[a-z0-9]+", reference.lower())
    if not hyp or not ref:
        return 0.0
    table = [[0] * (len(ref) + 1) for _ in range(len(hyp) + 1)]
    for i, h in enumerate(hyp, 1):
        for j, r in enumerate(ref, 1):
            table[i][j] = table[i - 1][j - 1] + 1 if h == r else max(table[i - 1][j], table[i][j - 1])
    lcs = table[-1][-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(hyp), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def test_raw_scores_equal_sacrebleu_and_lcs():
    metric = RecipeScores(normalize=False)
    metric.update(HYPOTHESES[:1], REFERENCES[:1])  # batching must not matter: BLEU is a corpus statistic
    metric.update(HYPOTHESES[1:], REFERENCES[1:])
    result = metric.compute()
    expected_bleu = sacrebleu.corpus_bleu(HYPOTHESES, [REFERENCES], tokenize="13a").score
    assert result["sacrebleu"].item() == pytest.approx(expected_bleu, rel=1e-6)
    expected_rouge = 100 * sum(map(rouge_l_f, HYPOTHESES, REFERENCES)) / len(HYPOTHESES)
    assert result["rouge_l"].item() == pytest.approx(expected_rouge, rel=1e-6)


def test_default_scores_text_without_step_numbers():
    metric = RecipeScores()
    metric.update(HYPOTHESES, REFERENCES)
    result = metric.compute()
    assert result["sacrebleu"].item() == pytest.approx(
        sacrebleu.corpus_bleu(HYPOTHESES_PLAIN, [REFERENCES_PLAIN]).score, rel=1e-6)
    assert result["rouge_l"].item() == pytest.approx(
        100 * sum(map(rouge_l_f, HYPOTHESES_PLAIN, REFERENCES_PLAIN)) / 4, rel=1e-6)
    # Numbering shared by both sides would otherwise be free n-gram matches.
    raw = RecipeScores(normalize=False)
    raw.update(HYPOTHESES, REFERENCES)
    assert raw.compute()["sacrebleu"] > result["sacrebleu"]


def test_sparse_matches_use_sacrebleu_smoothing():
    # No 3- or 4-gram match anywhere: sacrebleu's default "exp" smoothing gives a small non-zero score, not 0.
    hypotheses, references = ["rice egg pan heat", "onion cut"], ["heat pan rice egg stir", "cut the onion"]
    metric = RecipeScores(normalize=False)
    metric.update(hypotheses, references)
    expected = sacrebleu.corpus_bleu(hypotheses, [references]).score
    assert expected > 0
    assert metric.compute()["sacrebleu"].item() == pytest.approx(expected, rel=1e-6)


def test_identical_predictions_score_100():
    metric = RecipeScores()
    metric.update(REFERENCES, REFERENCES)
    result = metric.compute()
    assert result["sacrebleu"].item() == pytest.approx(100.0)
    assert result["rouge_l"].item() == pytest.approx(100.0)


def test_empty_predictions_and_empty_metric():
    metric = RecipeScores()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchmetrics warns about compute() before update()
        assert {key: value.item() for key, value in metric.compute().items()} == {"sacrebleu": 0.0, "rouge_l": 0.0}
    metric.update(["", ""], REFERENCES[:2])
    assert {key: value.item() for key, value in metric.compute().items()} == {"sacrebleu": 0.0, "rouge_l": 0.0}
    metric.reset()
    metric.update(REFERENCES[:1], REFERENCES[:1])
    assert metric.compute()["rouge_l"].item() == pytest.approx(100.0)
