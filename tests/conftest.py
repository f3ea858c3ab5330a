"""Shared test set-up, and the helpers several test modules use."""

import os

import pytest
import torch

from mho.data.lm import kenlm_tool
from mho.errors import MhoError
from mho.models import ConformerCTC, calibrate, conformer_config


@pytest.fixture(autouse=True)
def single_thread():
    """Small models run fastest on one thread, and the test machine's cores are shared: a second
    intra-op thread that waits for a busy core makes every op many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# the tiny model is 64 wide: 64 x 64 tiles waste no cells, so programming the measured device
# (3 planes at 4-bit weights) takes about a second
TILE = (64, 64)


def tiny_qat_model(seed: int = 0) -> ConformerCTC:
    torch.manual_seed(seed)
    model = ConformerCTC(conformer_config("tiny", dropout=0.0, attention_dropout=0.0))
    model.enable_quantization(weight_bits=4)
    features, lengths = inputs(seed + 100)
    calibrate(model, [(features, lengths)])
    return model.eval()


def inputs(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(2, 48, 80, generator=generator)
    lengths = torch.tensor([48, 33])
    features[1, 33:] = 0  # padding frames of the shorter utterance
    return features, lengths


def run(simulated) -> torch.Tensor:
    """Log-probs of a (simulated) tiny model on `inputs()`."""
    with torch.no_grad():
        return simulated(*inputs())[0]


def _have(tool: str) -> bool:
    try:
        kenlm_tool(tool)
    except MhoError:
        return False
    return True


# `make test` builds KenLM's tools and names them in $MHO_KENLM_BIN, so there the tests that
# run them run (a missing tool fails them); elsewhere they skip when the tools are not built.
needs_lmplz = pytest.mark.skipif(
    "MHO_KENLM_BIN" not in os.environ and not (_have("lmplz") and _have("build_binary")),
    reason="KenLM tools not built (make kenlm)",
)
