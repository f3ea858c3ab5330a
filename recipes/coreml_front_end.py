"""How far do FP16-sized changes of the log-mel features move a Conformer's greedy transcripts
(in torch)? The part of a Core ML FP16 / mixed mismatch that comes before the model.

Each variant replaces the torch session's log-mel front end; the model and decoder are
unchanged; the CER is between these greedy transcripts and the unchanged ones (as
`mho check` computes it against torch):

- `fp16 front end`: every front-end tensor rounded to FP16 as an FP16 Core ML program holds
  it (waveform, DFT basis, DFT output, power, mel energies, log-mels; sums inside an op in
  FP32, as mho.runtime.mil_numpy does): the front end of `--precision fp16`;
- `fp16 DFT`: only the waveform, the DFT basis and the DFT output in FP16, the rest FP32:
  the front end of `--precision mixed`;
- `features x (1 + r e)`: the exact features times 1 + r e, e uniform in [-1, 1] per value
  (seed 0), for r = 1e-6 and 1e-5: how small a change already moves the transcripts.

    python recipes/coreml_front_end.py conformer-sinusoidal-linear-w8 flite-slt
"""

import argparse

import jiwer
import torch
from torch import nn

from mho.data.datasets import resolve_dataset
from mho.data.features import LogMel
from mho.data.manifest import load_utterance_audio
from mho.runtime.recognizer import load_recognizer


def fp16(x: torch.Tensor) -> torch.Tensor:
    return x.half().float()


class RoundedLogMel(LogMel):
    """LogMel with FP16 rounding of the DFT's operands and output; `everything`: of the
    power, mel energies and log-mels too."""

    def __init__(self, config, everything: bool):
        super().__init__(config)
        self.everything = everything

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        half_window = self.config.window_samples // 2
        padded = nn.functional.pad(fp16(waveform)[:, None, :], (half_window, half_window))
        spectrum = fp16(nn.functional.conv1d(padded, fp16(self.basis),
                                             stride=self.config.shift_samples))
        real, imag = spectrum.chunk(2, dim=1)
        if not self.everything:
            power = (real.square() + imag.square()).transpose(1, 2)
            return torch.log(power @ self.filterbank + self.config.log_floor)
        power = fp16(fp16(real.square()) + fp16(imag.square())).transpose(1, 2)
        mel = fp16(fp16(power @ fp16(self.filterbank)) + fp16(torch.tensor(self.config.log_floor)))
        return fp16(torch.log(mel))


class ScaledLogMel(LogMel):
    """LogMel times (1 + r e), e uniform in [-1, 1], fresh per value."""

    def __init__(self, config, relative: float, seed: int = 0):
        super().__init__(config)
        self.relative, self.generator = relative, torch.Generator().manual_seed(seed)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        features = super().forward(waveform)
        noise = 2 * torch.rand(features.shape, generator=self.generator) - 1
        return features * (1 + self.relative * noise)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("data")
    args = parser.parse_args()
    torch.set_num_threads(1)
    recognizer = load_recognizer(args.model, decoder="greedy")
    session = recognizer.session
    config = session.features
    waveforms = [load_utterance_audio(u) for u in resolve_dataset(args.data)[1]]

    def transcripts(front_end: nn.Module) -> list[str]:
        session._log_mel = front_end.eval()
        with torch.no_grad():
            return [recognizer.transcribe(w) for w in waveforms]

    clean = transcripts(LogMel(config))
    variants = {"fp16 front end": RoundedLogMel(config, everything=True),
                "fp16 DFT": RoundedLogMel(config, everything=False),
                "features x (1 + 1e-6 e)": ScaledLogMel(config, 1e-6),
                "features x (1 + 1e-5 e)": ScaledLogMel(config, 1e-5)}
    for name, front_end in variants.items():
        changed = transcripts(front_end)
        pairs = [(a, b) for a, b in zip(clean, changed, strict=True) if a or b]
        cer = 100 * jiwer.cer([a or "-" for a, _ in pairs], [b for _, b in pairs])
        print(f"{args.model} {args.data} {name}: transcript CER {cer:.2f}% vs exact features")


if __name__ == "__main__":
    main()
