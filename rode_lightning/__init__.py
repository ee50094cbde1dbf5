"""rode_lightning: mixtures of LoRA experts (RoDE and the methods it is measured against) for food LMMs."""

import logging

# torchao (the [quantization] extra), which transformers and peft import whenever it is installed, registers two Enums
# with torch's pytree in a way torch 2.14 deprecates: two warning lines on every start of every command, about
# code that is neither ours nor the user's. Only that message is dropped.
logging.getLogger("torch.utils._pytree").addFilter(lambda record: "is an Enum subclass" not in record.getMessage())
