"""Session over an exported .mlpackage, on one of two runtimes:

- "coreml": Core ML's own prediction, macOS only, on the compute units recorded in the
  package (`mho export coreml --compute-units`); asked for elsewhere, a clear error.
- "coreml-mil": the package's ML program evaluated with numpy (mho.runtime.mil_numpy), on any
  platform: Core ML's numerics (FP16 activations, compressed weights decompressed as Core ML
  does), not its speed; a real-time factor measured on it is numpy's.

The default is "coreml" on macOS, "coreml-mil" elsewhere.

mho's Core ML packages take (input [1, L, ...], length [1]) and return (log_probs [1, T', V],
frames [1]) at enumerated input lengths L. The session hides both: it takes a padded batch
with its lengths under the speech input names (waveform/samples or features/lengths), pads
each row to the smallest enumerated length that holds it (mho models ignore padding), runs
one prediction per row and returns the speech outputs (log_probs [B, T', V], out_lengths [B]),
like every other runtime.
"""

import json
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mho.errors import MhoError
from mho.exporter.coreml import COMPUTE_UNITS_KEY, LENGTHS_KEY, import_coremltools
from mho.exporter.metadata import OnnxMetadata
from mho.runtime.session import COREML_RUNTIMES

# The speech input names by the package's input kind (mho.runtime.speech.SPEECH_INPUTS).
_INPUT_NAMES = {"waveform": ["waveform", "samples"], "features": ["features", "lengths"]}


class CoreMLSession:
    """An mho .mlpackage as a session: speech inputs in, (log_probs, out_lengths) out."""

    output_names = ["log_probs", "out_lengths"]

    def __init__(self, path: str | Path, runtime: str | None = None):
        path = Path(path)
        on_macos = sys.platform == "darwin"
        runtime = runtime or ("coreml" if on_macos else "coreml-mil")
        if runtime not in COREML_RUNTIMES:
            raise MhoError(f"{path} is a Core ML package: it runs on runtime coreml (macOS) "
                           f"or coreml-mil, not {runtime}")
        if runtime == "coreml" and not on_macos:
            raise MhoError("runtime coreml is Core ML's own prediction, which runs only on "
                           "macOS; here use coreml-mil (the package's ML program evaluated "
                           "with numpy: Core ML's numerics, not its speed)")
        self.runtime = runtime
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
        self.input_names = list(_INPUT_NAMES[self.metadata.input])
        self._package_inputs = [i.name for i in spec.description.input]
        self.compute_units = props.get(COMPUTE_UNITS_KEY, "ALL")
        if runtime == "coreml":  # the real runtime, on the units the package asks for
            model = ct.models.MLModel(str(path),
                                      compute_units=ct.ComputeUnit[self.compute_units])
            self._predict = model.predict
            self.executor = f"Core ML ({self.compute_units})"
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

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs, lengths = (np.asarray(feeds[name]) for name in self.input_names)
        rows = [self._predict_row(row[:length], int(length))
                for row, length in zip(inputs, lengths, strict=True)]
        frames = max(len(r) for r in rows)
        log_probs = np.zeros((len(rows), frames, rows[0].shape[-1]), dtype=np.float32)
        for out, row in zip(log_probs, rows, strict=True):
            out[: len(row)] = row
        return {"log_probs": log_probs,
                "out_lengths": np.array([len(r) for r in rows], dtype=np.int64)}

    def _predict_row(self, inputs: np.ndarray, length: int) -> np.ndarray:
        """One utterance's input [L, ...] -> its valid log_probs [T', V]."""
        fitting = [n for n in self.lengths if n >= length]
        if not fitting:
            unit = "samples" if self.metadata.input == "waveform" else "frames"
            raise MhoError(f"utterance of {length} {unit} is longer than the package's longest "
                           f"input ({self.lengths[-1]}); export with longer --lengths")
        padded = np.zeros((1, fitting[0], *inputs.shape[1:]), dtype=np.float32)
        padded[0, :length] = inputs
        outputs = self._predict({self._package_inputs[0]: padded,
                                 self._package_inputs[1]: np.array([length], dtype=np.int32)})
        frames = int(np.asarray(outputs["frames"]).reshape(-1)[0])
        return np.asarray(outputs["log_probs"], dtype=np.float32)[0, :frames]
