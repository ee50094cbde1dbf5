"""README's memory table of a quantized base: ``python -m rode_lightning.estimate`` for LLaVA-1.5-7B and
Qwen2.5-VL-7B with the frozen base in bf16, 8 and 4 bits.

    python scripts/quantization_memory.py run      # the estimates -> results/estimates/quantization.json, render
    python scripts/quantization_memory.py render   # README.md's quantization-memory block from that file
    python scripts/quantization_memory.py check    # exit 1 when README.md's block differs from the file

Each row is one estimate command, recorded with its output in the JSON; the estimate builds the model on the meta
device (no weights, no GPU), so the table can be regenerated anywhere in about a minute.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import readme_blocks  # noqa: E402

KIND = "quantization-memory"
RESULT = ROOT / "results" / "estimates" / "quantization.json"
BASES = {
    "LLaVA-1.5-7B": ["--config", "configs/rode.yaml"],
    "Qwen2.5-VL-7B-Instruct": ["--config", "configs/rode_qwen2_5_vl_7b.yaml",
                               "--model.transformers.path", "configs/bases/qwen2.5-vl-7b-instruct"],
}
SCHEMES = {
    "bf16": [],
    "8-bit torchao (int8)": ["--model.quantization.bits", "8", "--model.quantization.library", "torchao"],
    "8-bit bitsandbytes (LLM.int8)": ["--model.quantization.bits", "8", "--model.quantization.library",
                                      "bitsandbytes"],
    "4-bit bitsandbytes (NF4)": ["--model.quantization.bits", "4", "--model.quantization.library", "bitsandbytes"],
    "4-bit torchao (int4, groups of 128)": ["--model.quantization.bits", "4", "--model.quantization.library",
                                            "torchao"],
}


def run() -> None:
    from rode_lightning.estimate import main as estimate
    from rode_lightning.provenance import library_versions

    rows = []
    for base, base_arguments in BASES.items():
        for scheme, scheme_arguments in SCHEMES.items():
            arguments = [*base_arguments, *scheme_arguments]
            with contextlib.redirect_stdout(io.StringIO()):
                report = estimate(arguments)
            row = report["this config"]
            rows.append({"base": base, "scheme": scheme,
                         "command": shlex.join(["python", "-m", "rode_lightning.estimate", *arguments]),
                         "memory_gib": row["memory_gib"], "total_gib": row["total_gib"],
                         "trainable_parameters": row["trainable_parameters"]})
            print(f"{base:24s} {scheme:38s} frozen {row['memory_gib']['frozen_weights']:6.2f} GiB, "
                  f"total {row['total_gib']:6.2f} GiB", flush=True)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    versions = {name: version for name, version in library_versions().items()
                if name in ("python", "torch", "transformers")}
    RESULT.write_text(json.dumps({"rows": rows, "versions": versions}, indent=2) + "\n")
    readme_blocks.render(KIND, blocks)


def blocks() -> dict[str, str]:
    record = json.loads(RESULT.read_text())
    lines = ["| base | frozen base | frozen weights | trainable + grads + AdamW | activations | logits | total, 1 GPU |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in record["rows"]:
        memory = row["memory_gib"]
        lines.append(f"| {row['base']} | {row['scheme']} | {memory['frozen_weights']:.2f} | "
                     f"{memory['trainable_states']:.2f} | {memory['activations']:.2f} | {memory['logits']:.2f} | "
                     f"{row['total_gib']:.2f} |")
    first = record["rows"][0]["command"]
    versions = ", ".join(f"{name} {version}" for name, version in record["versions"].items())
    lines += ["", f"Each row is the estimate's first line (`this config`), e.g. `{first}` with "
                  "`--model.quantization.bits 4 --model.quantization.library bitsandbytes`; every command is in "
                  f"`results/estimates/quantization.json` ({versions}); `python scripts/quantization_memory.py run` "
                  "regenerates the table."]
    return {"table": "\n".join(lines)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["run", "render", "check"])
    action = parser.parse_args().action
    if action == "run":
        run()
    elif action == "render":
        readme_blocks.render(KIND, blocks)
    else:
        return readme_blocks.check(KIND, blocks, "python scripts/quantization_memory.py render")
    return 0


if __name__ == "__main__":
    sys.exit(main())
