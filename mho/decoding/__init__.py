"""CTC decoding (greedy and lexicon + LM beam search) and error rates: what turns a model's
log-probs into words and scores them, below training, simulation and the runtimes."""

from mho.decoding.decoders import Decoder, load_decoder
from mho.decoding.scoring import error_rates

__all__ = ["Decoder", "error_rates", "load_decoder"]
