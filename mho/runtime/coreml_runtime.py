"""Recognizer over an exported .mlpackage ("coreml"): real Core ML prediction on macOS, the
ML program evaluated with numpy elsewhere (mho.runtime.mil_numpy).

Inputs are padded to the smallest enumerated length that holds them, with the true length as
the second input (mho models ignore padding), so one session serves every utterance up to
the longest enumerated length.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

from mho.data.features import FeatureConfig, LogMel
from mho.decoding.decoders import Decoder
from mho.errors import MhoError
from mho.exporter.coreml import LENGTHS_KEY, import_coremltools
from mho.exporter.metadata import OnnxMetadata


class CoreMLSession:
    """log_probs of one utterance: `session(waveform [S])` -> log_probs [T', V]."""

    runtime = "coreml"

    def __init__(self, path: str | Path):
        path = Path(path)
        if not (path / "Manifest.json").is_file():
            raise MhoError(f"no such Core ML package: {path}")
        ct = import_coremltools()
        self.path = path
        spec = ct.utils.load_spec(str(path))
        props = dict(spec.description.metadata.userDefined)
        if "mho_version" not in props or LENGTHS_KEY not in props:
            raise MhoError(f"{path} is not an mho export (its metadata lacks mho's keys); "
                           "export models with `mho export coreml`")
        self.metadata = OnnxMetadata.from_props(props, str(path))
        self.lengths = sorted(json.loads(props[LENGTHS_KEY]))
        self.input_names = [i.name for i in spec.description.input]
        self._log_mel = None
        if self.metadata.input == "features":
            self.features = FeatureConfig(**self.metadata.feature_config)
            self._log_mel = LogMel(self.features)
        if sys.platform == "darwin":  # the real runtime
            model = ct.models.MLModel(str(path))
            self._predict = model.predict
            self.executor = "Core ML"
        else:
            from mho.runtime.mil_numpy import MilProgram

            self.program = MilProgram.load(path)
            self._predict = self.program.run
            self.executor = "MIL program on numpy"

    def op_counts(self) -> dict[str, int]:
        """The program's ops per type (constants left out)."""
        if not hasattr(self, "program"):  # macOS: read the program from the package
            from mho.runtime.mil_numpy import MilProgram

            self.program = MilProgram.load(self.path)
        return self.program.op_counts()

    def run(self, waveform: np.ndarray) -> np.ndarray:
        """16 kHz float32 waveform [S] -> log_probs [T', V] (its valid frames)."""
        if self._log_mel is None:
            inputs = waveform[None].astype(np.float32)  # [1, S]
        else:
            with torch.inference_mode():
                inputs = self._log_mel(torch.from_numpy(waveform)[None]).numpy()  # [1, T, F]
        length = inputs.shape[1]
        fitting = [n for n in self.lengths if n >= length]
        if not fitting:
            unit = "samples" if self._log_mel is None else "frames"
            raise MhoError(f"utterance of {length} {unit} is longer than the package's longest "
                           f"input ({self.lengths[-1]}); export with longer --lengths")
        padded = np.zeros((1, fitting[0], *inputs.shape[2:]), dtype=np.float32)
        padded[:, :length] = inputs
        outputs = self._predict({self.input_names[0]: padded,
                                 self.input_names[1]: np.array([length], dtype=np.int32)})
        frames = int(np.asarray(outputs["frames"]).reshape(-1)[0])
        return np.asarray(outputs["log_probs"], dtype=np.float32)[0, :frames]

    __call__ = run  # a LogProbs callable for parity checks


class CoreMLRecognizer:
    """An .mlpackage + a CTC decoder: the Recognizer interface of mho.runtime.recognizer."""

    runtime = "coreml"

    def __init__(self, name: str, session: CoreMLSession, decoder: Decoder, decoder_name: str):
        self.name = name
        self.session = session
        self._decoder = decoder
        self.decoder = decoder_name

    def log_probs(self, waveform: np.ndarray) -> np.ndarray:
        return self.session.run(waveform)

    def transcribe(self, waveform: np.ndarray) -> str:
        return self._decoder.decode(self.log_probs(waveform))
