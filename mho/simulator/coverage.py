"""Which of a model's parameters a chip holds, which stay digital, and why.

A crossbar holds the integer weights of the quantized Linear and Conv layers it maps; their
biases are added digitally after the ADC, and everything outside those layers (norms,
embeddings, attention matrices computed from activations, a MultiheadAttention's packed
in-projection that was never split into Linear layers) runs digitally too. Reporting this
per parameter keeps a user from believing a model is "on the chip" when most of it is not.
"""

from dataclasses import dataclass

from torch import nn

from mho.simulator.mapping import MappingReport

CROSSBAR = "crossbar"
DIGITAL = "digital"


@dataclass(frozen=True)
class ParameterPlacement:
    name: str  # parameter name in the (unmapped) model, e.g. "encoder.0.weight"
    size: int  # elements
    placement: str  # CROSSBAR or DIGITAL
    reason: str  # why it is where it is


def parameter_placements(model: nn.Module, report: MappingReport) -> list[ParameterPlacement]:
    """Every parameter of the quantized ``model`` that ``report`` mapped (from
    map_to_crossbars or load_chip), in definition order."""
    crossbar, digital = set(report.crossbar_layers), set(report.digital_layers)
    modules = dict(model.named_modules())
    placements = []
    for name, parameter in model.named_parameters():
        owner, _, leaf = name.rpartition(".")
        module = modules[owner]
        if owner in crossbar:
            placement, reason = ((CROSSBAR, "crossbar weights") if leaf == "weight"
                                 else (DIGITAL, "added digitally after the ADC"))
        elif owner in digital:
            placement, reason = DIGITAL, "layer kept digital by the config"
        elif isinstance(module, nn.MultiheadAttention):
            placement, reason = DIGITAL, ("packed MultiheadAttention projection: quantize "
                                          "the model with mho.quantize to split it into "
                                          "Linear layers")
        else:
            placement, reason = DIGITAL, f"{type(module).__name__} has no crossbar mapping"
        placements.append(ParameterPlacement(name, parameter.numel(), placement, reason))
    return placements


def crossbar_share(placements: list[ParameterPlacement]) -> float:
    """Fraction of the parameters (elements) held by crossbars."""
    total = sum(p.size for p in placements)
    return sum(p.size for p in placements if p.placement == CROSSBAR) / max(total, 1)
