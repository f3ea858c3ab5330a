"""How far do FP16-sized perturbations move a model's greedy transcripts (in torch)?

Every Linear, Conv1d, LayerNorm and GroupNorm output is multiplied by (1 + u e), e uniform in
[-1, 1], u = 2^-11 (FP16's unit roundoff), with a fresh e per value and run; the CER between
these greedy transcripts and the unperturbed ones is the part of a Core ML FP16 mismatch that
the model itself, not the converter, is responsible for.

    python recipes/fp16_sensitivity.py wav2vec2-small-lpa6-mse flite-slt [--seeds 3]
"""

import argparse

import jiwer
import numpy as np
import torch
from torch import nn

from mho.data.datasets import resolve_dataset
from mho.data.manifest import load_utterance_audio
from mho.runtime.recognizer import load_recognizer

UNIT_ROUNDOFF_FP16 = 2.0**-11
PERTURBED = (nn.Linear, nn.Conv1d, nn.LayerNorm, nn.GroupNorm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("data")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    recognizer = load_recognizer(args.model, decoder="greedy")
    waveforms = [load_utterance_audio(u) for u in resolve_dataset(args.data)[1]]

    def transcripts() -> list[str]:
        with torch.no_grad():
            return [recognizer.transcribe(w) for w in waveforms]

    clean = transcripts()
    for seed in range(args.seeds):
        generator = torch.Generator().manual_seed(seed)

        def perturb(module, inputs, output, generator=generator):
            noise = 2 * torch.rand(output.shape, generator=generator) - 1
            return output * (1 + UNIT_ROUNDOFF_FP16 * noise)

        handles = [m.register_forward_hook(perturb) for m in recognizer.model.modules()
                   if isinstance(m, PERTURBED)]
        perturbed = transcripts()
        for handle in handles:
            handle.remove()
        pairs = [(a, b) for a, b in zip(clean, perturbed, strict=True) if a or b]
        cer = 100 * jiwer.cer([a or "-" for a, _ in pairs], [b for _, b in pairs])
        print(f"{args.model} {args.data} seed {seed}: transcript CER {cer:.2f}% "
              f"vs unperturbed ({np.mean([a == b for a, b in pairs]):.0%} identical)")


if __name__ == "__main__":
    main()
