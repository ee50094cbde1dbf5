"""Stage 1 of LLaVA: the projector alone learns to turn the frozen tower's patches into words the frozen LLaMA
reads, by captioning plates (LLaVA's "feature alignment" pre-training, with its plain ``<image>\\ncaption`` format).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

from rode_lightning.conventions import IGNORE_INDEX, IMAGE_PLACEHOLDER
from rode_lightning.model.projector import MLPProjector
from rode_lightning.model.vision import VisionEncoder
from rode_lightning.pretrain.plates import Plates
from rode_lightning.pretrain.recipe import BaseRecipe
from rode_lightning.pretrain.schedule import train

@torch.no_grad()
def patch_features(tower: VisionEncoder, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The frozen tower's penultimate-block patch tokens of every image, computed once."""
    return torch.cat([tower(images[start:start + batch_size]) for start in range(0, len(images), batch_size)])


def caption_sequences(captions: list[str], tokenizer: PreTrainedTokenizerBase, num_patches: int
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``<s> <image>*num_patches \\n caption </s>`` right-padded: ids, attention mask, labels (caption only)."""
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER)
    prefix = [tokenizer.bos_token_id, *[image_id] * num_patches, *tokenizer("\n", add_special_tokens=False)["input_ids"]]
    rows = [(prefix, ids + [tokenizer.eos_token_id])
            for ids in tokenizer(captions, add_special_tokens=False)["input_ids"]]
    length = max(len(p) + len(c) for p, c in rows)
    ids = torch.full((len(rows), length), tokenizer.pad_token_id)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    labels = torch.full((len(rows), length), IGNORE_INDEX)
    for row, (p, c) in enumerate(rows):
        ids[row, :len(p) + len(c)] = torch.tensor(p + c)
        mask[row, :len(p) + len(c)] = 1
        labels[row, len(p):len(p) + len(c)] = torch.tensor(c)
    return ids, mask, labels


def align_projector(recipe: BaseRecipe, tower: VisionEncoder, language_model: LlamaForCausalLM,
                    tokenizer: PreTrainedTokenizerBase, plates: Plates) -> tuple[MLPProjector, float]:
    torch.manual_seed(recipe.seed + 2)
    projector = MLPProjector(tower.output_dim, language_model.config.hidden_size)
    language_model.requires_grad_(False)
    features = patch_features(tower.eval(), plates.images)
    ids, mask, labels = caption_sequences(plates.captions, tokenizer, features.shape[1])
    image_positions = ids == tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER)
    embedding = language_model.get_input_embeddings()

    def loss_of(batch: torch.Tensor) -> torch.Tensor:
        keep = mask[batch].any(dim=0)  # drop columns that are padding in the whole batch
        rows_ids, rows_mask, rows_labels = ids[batch][:, keep], mask[batch][:, keep], labels[batch][:, keep]
        embeddings = embedding(rows_ids).masked_scatter(image_positions[batch][:, keep].unsqueeze(-1),
                                                       projector(features[batch]))
        logits = language_model(inputs_embeds=embeddings, attention_mask=rows_mask, use_cache=False).logits
        return F.cross_entropy(logits[:, :-1].flatten(0, 1), rows_labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX)

    final = train(list(projector.parameters()), recipe.alignment, len(ids), recipe.seed + 2, loss_of,
                  "aligning the demo projector (LLaVA stage 1)")
    return projector.eval(), final
