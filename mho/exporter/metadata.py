"""The `metadata_props` every mho ONNX file carries, and the check that a file has them.

A runtime needs them to use the file at all (vocabulary, what the input is, the feature
front-end, the frame rate of the outputs) and a reader needs them to know what was exported
(bits, memristor settings, programming seed). Values are strings; structured ones are JSON.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from mho import __version__
from mho.errors import MhoError

INPUTS = ("features", "waveform")
REQUIRED = (
    "mho_version", "model_type", "model_name", "input", "vocabulary", "sample_rate",
    "feature_config", "frame_shift_ms", "subsampling", "weight_bits", "activation_bits",
    "memristor", "programming_seed",
)


@dataclass(frozen=True)
class OnnxMetadata:
    model_type: str  # "conformer-ctc"
    model_name: str  # what it was exported from (shipped name or checkpoint path)
    input: str  # "features" (log-mels [B, T, 80] + lengths) or "waveform" ([B, S] + samples)
    vocabulary: list[str]  # CTC outputs, index 0 the blank
    sample_rate: int  # Hz
    feature_config: dict[str, Any]  # mho.data.features.FeatureConfig fields ({}: the model
    # reads the waveform itself, as wav2vec2-style models do)
    frame_shift_ms: float  # of the features (of the outputs when feature_config is {})
    subsampling: int  # feature frames per output frame
    weight_bits: int | None  # None: float model
    activation_bits: int | None
    memristor: dict[str, Any] | None  # SimulatorConfig.to_dict(); None: digital
    programming_seed: int | None  # the chip's seed; None: digital
    mho_version: str = __version__

    def to_props(self) -> dict[str, str]:
        return {
            key: value if isinstance(value, str) else json.dumps(value)
            for key, value in self.__dict__.items()
        }

    @classmethod
    def from_props(cls, props: dict[str, str], where: str) -> "OnnxMetadata":
        missing = [key for key in REQUIRED if key not in props]
        if missing:
            raise MhoError(
                f"{where} is not an mho ONNX export (metadata_props lack {', '.join(missing)}); "
                f"export models with `mho export onnx`")
        try:
            values = {key: props[key] if key in ("mho_version", "model_type", "model_name",
                                                  "input") else json.loads(props[key])
                      for key in REQUIRED}
        except json.JSONDecodeError as error:
            raise MhoError(f"{where}: malformed mho metadata ({error})") from None
        if values["input"] not in INPUTS:
            raise MhoError(f"{where}: unknown input kind {values['input']!r}")
        return cls(**values)


def write_metadata(model: onnx.ModelProto, metadata: OnnxMetadata) -> None:
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, metadata.to_props())


def read_metadata(model: onnx.ModelProto | str | Path) -> OnnxMetadata:
    """The mho metadata of a model or file (weights not loaded); MhoError without it."""
    where = "model"
    if not isinstance(model, onnx.ModelProto):
        where = str(model)
        try:
            model = onnx.load(str(model), load_external_data=False)
        except Exception as error:  # protobuf raises its own DecodeError
            raise MhoError(f"cannot read ONNX file {where}: {error}") from None
    return OnnxMetadata.from_props({p.key: p.value for p in model.metadata_props}, where)
