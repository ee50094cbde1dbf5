"""Recipe generation quality: corpus SacreBLEU and sample-averaged ROUGE-L F-measure, both on a 0-100 scale.

These are the two recipe metrics of the RoDE paper (Table 2 reports e.g. SacreBLEU 9.66 and Rouge-L 40.11).

* SacreBLEU is a *corpus* score: n-gram matches and totals and the hypothesis and reference lengths are summed over
  the whole set before the geometric mean and brevity penalty are taken. The metric keeps exactly those sums (read
  from sacrebleu's own per-batch statistics) and hands them to sacrebleu's ``BLEU.compute_bleu``, so the result is the
  number ``sacrebleu.corpus_bleu`` gives for the same corpus (13a tokenizer, exponential smoothing, case-sensitive:
  sacrebleu's defaults), whatever the batching and however DDP sharded the samples.
* ROUGE-L is computed per sample with Google's ``rouge-score`` package (the implementation behind most published
  ROUGE numbers; its rougeL needs no nltk data, unlike rougeLsum's sentence splitter) and averaged over samples; the
  metric keeps the sum of F-measures and the sample count.

Both sides are first passed through :func:`~rode_lightning.metrics.parsing.normalize_recipe`, which removes step
numbers, bullets and markdown, so that the list format itself earns no n-grams (``normalize=False`` scores the raw
text instead).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from sacrebleu.metrics import BLEU
from torchmetrics import Metric

from rode_lightning.metrics.parsing import normalize_recipe


class RecipeScores(Metric):
    """``compute()`` gives ``{"sacrebleu": ..., "rouge_l": ...}`` on a 0-100 scale; 0 for both with no samples.

    Args:
        normalize: compare :func:`normalize_recipe` text (default) rather than the raw text.
        use_stemmer: Porter-stem tokens for ROUGE-L. Off by default, as in the HuggingFace ``evaluate`` and
            torchmetrics wrappers of the same scorer.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, normalize: bool = True, use_stemmer: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.normalize = normalize
        from rouge_score import rouge_scorer  # here, not with the package: it imports nltk (half a second)

        self._bleu = BLEU(tokenize="13a")  # corpus_bleu's defaults: smoothing "exp", case-sensitive, 4-grams
        self._rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)
        orders = self._bleu.max_ngram_order
        # Counts are integers: int64 keeps them, and therefore the score, exact after any number of updates.
        self.add_state("bleu_correct", default=torch.zeros(orders, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("bleu_total", default=torch.zeros(orders, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("bleu_hypothesis_length", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("bleu_reference_length", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("rouge_l_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("samples", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def _prepare(self, text: str | None) -> str:
        text = "" if text is None else str(text)
        return normalize_recipe(text) if self.normalize else text

    def update(self, predictions: Iterable[str], targets: Iterable[str]) -> None:
        pairs = [(self._prepare(prediction), self._prepare(target))
                 for prediction, target in zip(predictions, targets, strict=True)]
        if not pairs:
            return
        hypotheses = [prediction for prediction, _ in pairs]
        references = [target for _, target in pairs]
        # A corpus score over the batch carries the batch's summed statistics; the score itself is discarded.
        batch = self._bleu.corpus_score(hypotheses, [references])
        device = self.bleu_correct.device
        self.bleu_correct += torch.tensor(batch.counts, dtype=torch.int64, device=device)
        self.bleu_total += torch.tensor(batch.totals, dtype=torch.int64, device=device)
        self.bleu_hypothesis_length += batch.sys_len
        self.bleu_reference_length += batch.ref_len
        self.rouge_l_sum += sum(self._rouge.score(target, prediction)["rougeL"].fmeasure
                                for prediction, target in pairs)
        self.samples += len(pairs)

    def compute(self) -> dict[str, torch.Tensor]:
        if self.samples == 0:
            return {"sacrebleu": torch.zeros(()), "rouge_l": torch.zeros(())}
        bleu = BLEU.compute_bleu(
            correct=self.bleu_correct.tolist(), total=self.bleu_total.tolist(),
            sys_len=int(self.bleu_hypothesis_length), ref_len=int(self.bleu_reference_length),
            smooth_method=self._bleu.smooth_method, smooth_value=self._bleu.smooth_value,
            effective_order=self._bleu.effective_order, max_ngram_order=self._bleu.max_ngram_order,
        )
        rouge_l = 100.0 * self.rouge_l_sum / self.samples
        return {"sacrebleu": torch.tensor(bleu.score, dtype=torch.float32), "rouge_l": rouge_l.float()}
