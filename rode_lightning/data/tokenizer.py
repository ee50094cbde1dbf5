"""Tokenizers: the user's own (LLaVA/LLaMA directory) or a small one built offline for the demo.

The demo cannot download LLaMA's tokenizer, so it trains a byte-level BPE on the demo's own vocabulary (questions,
answers, ingredient and category names, the generic food text its base is pre-trained on). Byte-level BPE decodes
exactly back to the text, which the answer parsers rely on. Like LLaMA's sentencepiece model (``split_digits``), it
splits every number into single digits: ``348`` is ``3``, ``4``, ``8``, so a model writes numbers digit by digit
from ten tokens it sees constantly, instead of choosing among a thousand whole-number tokens it sees rarely.
Training is deterministic and takes about a second.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from tokenizers import AddedToken
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from rode_lightning.conventions import IMAGE_PLACEHOLDER, NUTRITION_UNITS, SYSTEM_PROMPT
from rode_lightning.data.prompts import QUESTIONS
from rode_lightning.user_errors import MissingFileError, UserError

DEMO_TOKENIZER = "demo"
SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}


@functools.lru_cache(maxsize=4)
def load_tokenizer(spec: str = DEMO_TOKENIZER) -> PreTrainedTokenizerBase:
    """``"demo"`` builds the demo tokenizer; anything else is a local directory holding a Hugging Face tokenizer
    (``tokenizer.json``, or LLaMA's sentencepiece ``tokenizer.model``, which needs the ``sentencepiece`` package to
    be converted), usually the LLaVA directory of ``model.language.path``. Nothing is downloaded.

    The LLaVA conversation format needs ``<image>`` as one special token (it splices one per image patch) and a pad
    token:

    * ``<image>`` is added as a special token when the vocabulary lacks it (LLaVA v1.5's tokenizer; llava-hf's has it,
      id 32000), so it gets the next id (32000 for LLaMA's 32000 tokens);
    * a missing pad token becomes ``<unk>`` (LLaVA v1.5 pads with it; padding is masked out), else ``</s>``, else a
      new ``<pad>`` token (llava-hf has its own ``<pad>``, id 32001).

    The language model's embedding is resized to ``len(tokenizer)`` when it is built (``model/language.py``: new rows
    at the mean embedding, frozen). Cached: the model and its conversation format ask for the same tokenizer.
    """
    if spec == DEMO_TOKENIZER:
        tokenizer = _build_demo_tokenizer()
    else:
        tokenizer = _load_local_tokenizer(Path(spec).expanduser(), spec)
    if IMAGE_PLACEHOLDER not in tokenizer.get_vocab():
        tokenizer.add_tokens([AddedToken(IMAGE_PLACEHOLDER, special=True, normalized=False, lstrip=False,
                                         rstrip=False)], special_tokens=True)
    if tokenizer.pad_token is None:
        if tokenizer.unk_token is not None or tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
        else:
            tokenizer.add_special_tokens({"pad_token": "<pad>"})
    return tokenizer


def _load_local_tokenizer(path: Path, spec: str) -> PreTrainedTokenizerBase:
    if not path.is_dir():
        raise MissingFileError(f"model.tokenizer: {spec!r} is neither 'demo' nor an existing directory")
    has_json, has_sentencepiece = (path / "tokenizer.json").is_file(), (path / "tokenizer.model").is_file()
    if not has_json and not has_sentencepiece and not (path / "tokenizer_config.json").is_file():
        raise MissingFileError(f"model.tokenizer: {path} holds no tokenizer (tokenizer.json, tokenizer.model or "
                               "tokenizer_config.json)")
    if not has_json and has_sentencepiece:
        try:
            import sentencepiece  # noqa: F401
        except ImportError:
            raise ImportError(f"model.tokenizer: {path} has LLaMA's sentencepiece tokenizer.model and no "
                              "tokenizer.json; converting it needs `pip install sentencepiece` (once: "
                              "`AutoTokenizer.from_pretrained(path).save_pretrained(path)` writes tokenizer.json)"
                              ) from None
    # AutoTokenizer reads config.json too; transformers does not know LLaVA v1.5's model_type ``llava_llama`` and
    # warns that the config is of another type, which says nothing about the tokenizer.
    config_logger = logging.getLogger("transformers.configuration_utils")
    level = config_logger.level
    config_logger.setLevel(logging.ERROR)
    try:
        return AutoTokenizer.from_pretrained(path, use_fast=True, local_files_only=True)
    except (OSError, ValueError) as error:  # what transformers raises for a folder it cannot read a tokenizer from
        detail = " ".join(str(error).split())[:300]
        raise UserError(f"model.tokenizer: transformers cannot read a tokenizer from {path} ({detail})") from error
    finally:
        config_logger.setLevel(level)


def _demo_corpus() -> list[str]:
    import numpy as np

    from rode_lightning.data.dishes import CATEGORIES, INGREDIENTS, recipe_of
    from rode_lightning.data.demo_text import PORTION_WORDS, food_text

    lines = [SYSTEM_PROMPT, "USER: ASSISTANT:"]
    lines += [question for phrasings in QUESTIONS.values() for question in phrasings]
    lines += [", ".join(INGREDIENTS), ", ".join(CATEGORIES)]
    for category, spec in CATEGORIES.items():
        ingredients = [{"name": name} for name in spec.core + spec.optional]
        lines.append(" ".join(f"{n}. {step}" for n, step in enumerate(recipe_of(category, ingredients), start=1)))
    lines += [", ".join(f"{label}: 123.4 {unit}" for label, unit in NUTRITION_UNITS.values())]
    lines += [" ".join(word for _, word in PORTION_WORDS)]
    # Repeat so that whole words win the BPE merges over arbitrary fragments.
    return lines * 20 + food_text(np.random.default_rng(0), 200)


def _build_demo_tokenizer() -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    core = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                  pre_tokenizers.ByteLevel(add_prefix_space=False)])
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1200,
        special_tokens=[SPECIAL_TOKENS[k] for k in ("unk_token", "bos_token", "eos_token", "pad_token")]
        + [IMAGE_PLACEHOLDER],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(_demo_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, additional_special_tokens=[IMAGE_PLACEHOLDER],
                                   **SPECIAL_TOKENS)
