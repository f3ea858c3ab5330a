"""A stand-in for an exported recognizer, built op by op in milliseconds (a torch export of
even the tiny Conformer takes a minute on a busy 2-core machine): it carries mho's metadata
like any export and maps each 40 ms frame of the waveform to CTC log-probs over mho's 41
phone tokens through a fixed random projection.

What the server tests need from a model holds exactly: the transcript depends on the audio
(every utterance gets its own), silence is the blank, and a row of a padded batch depends
only on its own samples, so a batched answer must equal the one-by-one answer."""

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mho.data.lexicon import PHONE_VOCABULARY
from mho.exporter.metadata import OnnxMetadata, write_metadata

FRAME = 640  # samples per output frame: 40 ms, the Conformer's output rate
SCALE = 40.0  # sharpens the projection into a peaky, CTC-like distribution


def synthetic_model(path: Path, seed: int = 0, name: str = "synthetic") -> Path:
    vocabulary = list(PHONE_VOCABULARY.tokens)
    projection = np.random.default_rng(seed).standard_normal((FRAME, len(vocabulary)))
    projection *= SCALE / np.sqrt(FRAME)
    const = {
        "projection": projection.astype(np.float32),
        "frame": np.array([FRAME], np.int64),
        "frame_scalar": np.array(FRAME, np.int64),
        "zero": np.array([0], np.int64),
        "one": np.array([1], np.int64),
        "shape": np.array([0, -1, FRAME], np.int64),
    }
    nodes = [
        helper.make_node("Shape", ["waveform"], ["S"], start=1, end=2),  # [1]
        helper.make_node("Div", ["S", "frame"], ["T"]),
        helper.make_node("Mul", ["T", "frame"], ["whole"]),  # whole frames only
        helper.make_node("Slice", ["waveform", "zero", "whole", "one"], ["cut"]),
        helper.make_node("Reshape", ["cut", "shape"], ["frames"]),  # [B, T, FRAME]
        helper.make_node("MatMul", ["frames", "projection"], ["logits"]),  # [B, T, V]
        helper.make_node("LogSoftmax", ["logits"], ["log_probs"], axis=-1),
        helper.make_node("Div", ["samples", "frame_scalar"], ["out_lengths"]),
    ]
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("waveform", TensorProto.FLOAT, ["batch", "samples"]),
         helper.make_tensor_value_info("samples", TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("log_probs", TensorProto.FLOAT,
                                       ["batch", "frames", len(vocabulary)]),
         helper.make_tensor_value_info("out_lengths", TensorProto.INT64, ["batch"])],
        [numpy_helper.from_array(value, key) for key, value in const.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=True)
    write_metadata(model, OnnxMetadata(
        model_type="synthetic-ctc", model_name=name, input="waveform", vocabulary=vocabulary,
        sample_rate=16_000, feature_config={}, frame_shift_ms=1000 * FRAME / 16_000,
        subsampling=1, weight_bits=None, activation_bits=None, memristor=None,
        programming_seed=None))
    onnx.save(model, str(path))
    return path
