"""LPA hosts: what the fitting, the diagnostic, the conversion and the study need to know
about a model family whose self-attention an LPA replaces.

- wav2vec2-style (`Wav2Vec2CTC`, layers in ``model.layers``): the attention module gets
  the layer's normalized input, so the LPA is a bare `PulseAccumulator`; data are waveform
  archives (`mho data waveforms`) or manifests.
- Conformer (`ConformerCTC`, blocks in ``model.blocks``): the relative-position MHSA module
  normalizes its own input and ends with dropout, so the LPA is a `NormedPulseAccumulator`
  (pre-norm copied from the attention's); a QAT Conformer's LPA is quantized at the model's
  bits; data are feature archives (`mho data features`) or manifests.

Both keep ``config.lpa_layers`` and ``config.lpa``, so a converted model rebuilds from its
checkpoint with the LPAs in place.
"""

import dataclasses
from pathlib import Path

import torch
from torch import nn

from mho.errors import MhoError
from mho.models import quant
from mho.models.conformer import ConformerCTC
from mho.models.lpa import NormedPulseAccumulator, PulseAccumulator
from mho.models.transformer import Wav2Vec2CTC
from mho.models.zoo import MODEL_TYPE, WAV2VEC2_TYPE


class Host:
    """The wav2vec2-style host; `ConformerHost` overrides what differs."""

    model_type = WAV2VEC2_TYPE
    data_kind = "waveform archive (mho data waveforms) or manifest"

    def layers(self, model: nn.Module) -> nn.ModuleList:
        """The blocks, each with an ``attention`` module and forward(x, mask)."""
        return model.layers

    def num_layers(self, model: nn.Module) -> int:
        return len(self.layers(model))

    def attention(self, model: nn.Module, layer: int) -> nn.Module:
        return self.layers(model)[layer].attention

    def build_lpa(self, model: nn.Module, settings: dict) -> nn.Module:
        """An LPA for one of `model`'s layers (random weights) with PulseAccumulatorConfig
        overrides `settings`."""
        return PulseAccumulator(dataclasses.replace(model.config, lpa=settings).lpa_config())

    def new_lpa(self, model: nn.Module, layer: int, settings: dict) -> nn.Module:
        """`build_lpa` with selective initialization from layer `layer`'s attention."""
        lpa = self.build_lpa(model, settings)
        lpa.initialize_from_attention(self.attention(model, layer))
        return lpa

    def install(self, model: nn.Module, layer: int, lpa: nn.Module, settings: dict) -> None:
        """Put `lpa` in place of layer `layer`'s attention; the config records it."""
        config = model.config
        model.config = dataclasses.replace(config, lpa_layers=(*config.lpa_layers, layer),
                                           lpa=settings)
        self.layers(model)[layer].attention = lpa

    def train_for_fit(self, lpa: nn.Module, training: bool = True) -> None:
        """Soft gates (training) or hard gates (eval) for fitting and scoring."""
        lpa.train(training)

    def load_data(self, path: Path, count: int | None = None):
        from mho.lpa.fitting import load_waveform_set

        return load_waveform_set(path, count=count)


class ConformerHost(Host):
    model_type = MODEL_TYPE
    data_kind = "feature archive (mho data features) or manifest"

    def layers(self, model: nn.Module) -> nn.ModuleList:
        return model.blocks

    def build_lpa(self, model: nn.Module, settings: dict) -> nn.Module:
        config = dataclasses.replace(model.config, lpa=settings)
        lpa = NormedPulseAccumulator(config.lpa_config(), config.dropout)
        if config.quant is not None:  # the LPA's projections on the model's QAT grid
            quant.enable_quantization(lpa, config.quant)
        return lpa

    def train_for_fit(self, lpa: nn.Module, training: bool = True) -> None:
        # the module's output dropout is the block's regularization (outside the fitted
        # module in the wav2vec2 host): off while the LPA learns the attention's output
        lpa.train(training)
        lpa.dropout.eval()

    def load_data(self, path: Path, count: int | None = None):
        from mho.data.feature_set import FeatureSet

        path = Path(path)
        if path.suffix == ".pt":
            data = FeatureSet.load_archive(path)
            return data.select({u.id for u in data.utterances[:count]}) if count else data
        from mho.data.lexicon import PHONE_VOCABULARY, Lexicon
        from mho.data.manifest import read_manifest

        return FeatureSet.build(read_manifest(path)[:count], Lexicon.from_cmudict(),
                                PHONE_VOCABULARY, progress=False)


def host_of(model: nn.Module) -> Host:
    """The host of a model instance; MhoError for a model an LPA cannot go into."""
    if isinstance(model, Wav2Vec2CTC):
        return Host()
    if isinstance(model, ConformerCTC):
        return ConformerHost()
    raise MhoError(f"{type(model).__name__} has no self-attention an LPA can replace "
                   f"(wav2vec2-style and Conformer models do)")


def model_pair(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(all-attention, all-LPA) models of `model`'s size and family, with its weights
    (the LPAs selectively initialized), in eval mode."""
    host = host_of(model)
    config = model.config
    attention = type(model)(dataclasses.replace(config, lpa_layers=()))
    lpa = type(model)(dataclasses.replace(
        config, lpa_layers=tuple(range(host.num_layers(model)))))
    state = model.state_dict()
    for target in (attention, lpa):
        own = target.state_dict()
        target.load_state_dict({k: v for k, v in state.items()
                                if k in own and own[k].shape == v.shape}, strict=False)
    with torch.no_grad():
        for block, lpa_block in zip(host.layers(attention), host.layers(lpa), strict=True):
            lpa_block.attention.initialize_from_attention(block.attention)
    return attention.eval(), lpa.eval()
