"""Recognizer running an mho model in torch eager mode: waveform (-> log-mel for feature
models) -> model -> CTC decoder."""

import numpy as np
import torch

from mho.data.features import LogMel
from mho.decoding.decoders import Decoder


class TorchRecognizer:
    runtime = "torch"

    def __init__(self, name: str, model: torch.nn.Module, decoder: Decoder, decoder_name: str):
        self.name = name
        self.model = model.eval()
        self.log_mel = LogMel()
        self._decoder = decoder
        self.decoder = decoder_name

    @torch.inference_mode()
    def log_probs(self, waveform: np.ndarray) -> torch.Tensor:
        """[S] -> CTC log-probs [T', V] of one utterance."""
        if self.model.input_kind == "waveform":
            waveform = torch.from_numpy(waveform)[None]  # [1, S]
            return self.model(waveform, torch.tensor([waveform.shape[1]]))[0][0]
        features = self.log_mel(torch.from_numpy(waveform)[None])  # [1, T, 80]
        log_probs, _ = self.model(features, torch.tensor([features.shape[1]]))
        return log_probs[0]

    def transcribe(self, waveform: np.ndarray) -> str:
        return self._decoder.decode(self.log_probs(waveform))
