"""Runtimes: one session interface over torch, onnxruntime, the ONNX reference evaluator and
Core ML (named numpy inputs in, named numpy outputs out), speech sessions and recognizers on
top of it, and the peer recognizer PocketSphinx."""

from mho.runtime.recognizer import PEER_RECOGNIZERS, Transcriber, load_recognizer
from mho.runtime.session import (
    ONNX_RUNTIMES,
    RUNTIMES,
    OnnxFileSession,
    Session,
    TorchSession,
    open_session,
)
from mho.runtime.speech import SPEECH_INPUTS, SPEECH_OUTPUTS, Recognizer, SpeechModel, SpeechSession

__all__ = [
    "ONNX_RUNTIMES",
    "PEER_RECOGNIZERS",
    "RUNTIMES",
    "SPEECH_INPUTS",
    "SPEECH_OUTPUTS",
    "OnnxFileSession",
    "Recognizer",
    "Session",
    "SpeechModel",
    "SpeechSession",
    "TorchSession",
    "Transcriber",
    "load_recognizer",
    "open_session",
]
