"""Reading the open_clip vision towers users have (``model.vision.checkpoint``). Nothing here downloads.

:func:`load_open_clip_visual` reads a ``.safetensors``,
``.bin``/``.pt``/``.pth`` state dict (open_clip's own ``load_state_dict``, which also unwraps ``state_dict`` and
``module.``) or OpenAI's TorchScript ``.pt`` archive, keeps the ``visual.*`` tensors and loads them into the tower.

Every problem is an error naming the file and the tensor: missing path, no ``visual.*`` tensors, a shape that does not
fit (expected vs found), missing or unexpected tensors.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch
from torch import nn

from rode_lightning.model.weight_files import check_shape, first_tensor_names, unreadable_as_error
from rode_lightning.user_errors import MissingFileError, UserError


def read_open_clip_visual(path: str | Path) -> dict[str, torch.Tensor]:
    """The vision tower's tensors of an open_clip checkpoint, without their ``visual.`` prefix.

    Reads ``.safetensors`` and ``torch.save`` files through open_clip's ``load_state_dict`` (which unwraps a
    ``state_dict`` entry and DDP's ``module.`` prefix) and OpenAI's TorchScript ``.pt`` archives (``ViT-L-14-336px.pt``)
    through ``torch.jit.load``. A file of the tower alone (``conv1.weight`` at the top level) is taken as is."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise MissingFileError(f"model.vision.checkpoint: {file} does not exist")
    with unreadable_as_error(file, "model.vision.checkpoint"):
        if _is_torchscript(file):
            state = torch.jit.load(str(file), map_location="cpu").state_dict()
        else:
            from open_clip.factory import load_state_dict

            state = load_state_dict(str(file), device="cpu", weights_only=True)
    visual = {name[len("visual."):]: tensor for name, tensor in state.items() if name.startswith("visual.")}
    if not visual and "conv1.weight" in state:
        visual = dict(state)
    if not visual:
        hint = (" It looks like a transformers CLIP checkpoint (vision_model.*); give open_clip's file for the same "
                "weights (e.g. open_clip_pytorch_model.bin of the open_clip/timm release)."
                if any(name.startswith(("vision_model.", "vision_tower.")) for name in state) else "")
        raise UserError(f"model.vision.checkpoint: {file} has no visual.* tensors (open_clip naming); it holds "
                        f"{first_tensor_names(sorted(state))}.{hint}")
    return visual


def load_open_clip_visual(tower: nn.Module, path: str | Path) -> None:
    """Load the ``visual.*`` tensors of an open_clip checkpoint into ``tower`` (open_clip's ``VisionTransformer``),
    converted to the tower's dtype. Every tensor must fit: shapes are checked first (expected vs found, naming the
    file and the tensor), then missing and unexpected tensors are listed."""
    file = Path(path).expanduser()
    visual = read_open_clip_visual(file)
    own = tower.state_dict()
    for name, tensor in visual.items():
        if name in own:
            check_shape(own[name].shape, tensor.shape, file, f"visual.{name}",
                         "the tower built from model.vision (preset or sizes)")
    missing = sorted(set(own) - set(visual))
    unexpected = sorted(set(visual) - set(own))
    if missing or unexpected:
        raise UserError(f"model.vision.checkpoint {file} does not fit the tower built from model.vision: missing "
                        f"tensors: {first_tensor_names(['visual.' + n for n in missing])}; unexpected tensors: "
                        f"{first_tensor_names(['visual.' + n for n in unexpected])}")
    with torch.no_grad():
        for name, tensor in visual.items():
            own[name].copy_(tensor)


def _is_torchscript(file: Path) -> bool:
    if not zipfile.is_zipfile(file):
        return False
    with zipfile.ZipFile(file) as archive:
        return any(name.endswith("constants.pkl") for name in archive.namelist())
