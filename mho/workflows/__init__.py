"""Orchestration above the layers: evaluate recognizers and chips, compare sessions and check
speech models across runtimes, sweep chip settings, pack models, and the benchmarks."""

from mho.workflows.check import CheckReport, Tolerances, check_model, wer_tolerance
from mho.workflows.chips import (
    evaluate_models_on_chips,
    evaluate_on_chips,
    map_model,
    resolve_simulator_config,
)
from mho.workflows.compare import SessionParity, compare_sessions
from mho.workflows.evaluate import EvalResult, evaluate, evaluate_models

__all__ = [
    "CheckReport",
    "EvalResult",
    "SessionParity",
    "Tolerances",
    "check_model",
    "compare_sessions",
    "evaluate",
    "evaluate_models",
    "evaluate_models_on_chips",
    "evaluate_on_chips",
    "map_model",
    "resolve_simulator_config",
    "wer_tolerance",
]
