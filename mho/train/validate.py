"""Dev-set scores during training: phone error rate and greedy word error rate."""

import jiwer
import torch

from mho.data.lexicon import Vocabulary
from mho.decoding.decoders import GreedyDecoder
from mho.decoding.scoring import error_rates


@torch.inference_mode()
def dev_error_rates(
    model: torch.nn.Module, dev_set, vocabulary: Vocabulary, *, batch_size: int = 16
) -> tuple[float, float]:
    """(WER %, PER %) with greedy decoding; the model is left in eval mode."""
    model.eval()
    decoder = GreedyDecoder.from_assets()
    device = next(model.parameters()).device
    hypotheses, phone_refs, phone_hyps = [], [], []
    for start in range(0, len(dev_set), batch_size):
        indices = list(range(start, min(start + batch_size, len(dev_set))))
        batch = dev_set.collate(indices)
        log_probs, out_lengths = model(batch["inputs"].to(device), batch["lengths"].to(device))
        log_probs, out_lengths = log_probs.cpu(), out_lengths.cpu()  # [B, T', V], [B]
        for row, index in enumerate(indices):
            hypothesis = decoder.search(log_probs[row, : out_lengths[row]])
            hypotheses.append(hypothesis.text)
            phone_hyps.append(" ".join(p for p in hypothesis.phones if p != "|"))
            reference = vocabulary.decode(dev_set.labels[index].tolist())
            phone_refs.append(" ".join(p for p in reference if p != "|"))
    wer, _ = error_rates([u.text for u in dev_set.utterances], hypotheses)
    per = 100.0 * jiwer.wer(phone_refs, phone_hyps)
    return wer, per
