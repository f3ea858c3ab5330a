"""Parity of any two sessions of one model (torch against its ONNX file, onnxruntime against
the reference evaluator, ...) on the same inputs, output by output.

    report = compare_sessions(torch_session, ort_session, [{"x": batch} for batch in data])
    report.passed, report.outputs["logits"].max_abs, report.outputs["logits"].argmax_agree

Nothing here knows about speech; `mho check` (mho.workflows.check) adds transcripts and WER
for speech models.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from mho.errors import MhoError
from mho.runtime.session import Session


@dataclass(frozen=True)
class OutputParity:
    max_abs: float  # largest |difference| over every element of every input
    mean_abs: float  # mean |difference|
    argmax_agree: float | None  # fraction of rows (last axis) with the same argmax; None
    # for outputs that are not float arrays of at least one axis


@dataclass(frozen=True)
class SessionParity:
    reference: str  # runtime names
    candidate: str
    inputs: int  # how many feeds were compared
    outputs: dict[str, OutputParity]
    atol: float
    min_argmax_agree: float
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


def compare_sessions(
    reference: Session,
    candidate: Session,
    feeds: Iterable[Mapping[str, np.ndarray]],
    *,
    atol: float = 1e-4,
    min_argmax_agree: float = 1.0,
) -> SessionParity:
    """Run every feed through both sessions; an output passes when its mean |difference| is
    at most ``atol`` or, for float outputs, its argmax along the last axis agrees on at
    least ``min_argmax_agree`` of the rows (quantized models may move a value across a
    rounding step without changing the decision)."""
    if reference.output_names != candidate.output_names:
        raise MhoError(f"the sessions' outputs differ: {reference.output_names} vs "
                       f"{candidate.output_names}")
    stats: dict[str, list[tuple[float, float, int, int, int]]] = {
        name: [] for name in reference.output_names}
    count = 0
    for feed in feeds:
        count += 1
        expected, got = reference.run(feed), candidate.run(feed)
        for name in reference.output_names:
            a, b = np.asarray(expected[name]), np.asarray(got[name])
            if a.shape != b.shape:
                raise MhoError(f"output {name}: shapes {a.shape} vs {b.shape}")
            difference = np.abs(a.astype(np.float64) - b.astype(np.float64))
            rows = agree = 0
            if a.ndim and np.issubdtype(a.dtype, np.floating) and a.size:
                rows = a.size // a.shape[-1]
                agree = int((a.argmax(-1) == b.argmax(-1)).sum())
            stats[name].append((float(difference.max(initial=0.0)), float(difference.sum()),
                                difference.size, agree, rows))
    if not count:
        raise MhoError("no inputs to compare")
    outputs, failures = {}, []
    for name, per_feed in stats.items():
        table = np.array(per_feed)  # [feeds, 5]
        rows = table[:, 4].sum()
        parity = OutputParity(max_abs=float(table[:, 0].max()),
                              mean_abs=float(table[:, 1].sum() / max(table[:, 2].sum(), 1)),
                              argmax_agree=float(table[:, 3].sum() / rows) if rows else None)
        outputs[name] = parity
        close = parity.mean_abs <= atol
        decided = parity.argmax_agree is not None and parity.argmax_agree >= min_argmax_agree
        if not (close or decided):
            failures.append(f"{name}: mean |diff| {parity.mean_abs:.3g} > {atol:.3g}"
                            + ("" if parity.argmax_agree is None else
                               f" and argmax agrees on {parity.argmax_agree:.2%}"))
    return SessionParity(reference.runtime, candidate.runtime, count, outputs, atol,
                         min_argmax_agree, failures)
