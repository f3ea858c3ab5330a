"""Hugging Face Wav2Vec2ForCTC models converted into mho's Wav2Vec2CTC give HF's outputs.

Small random models are built and saved offline (no download), in both of wav2vec2's
variants: base (GroupNorm on the first conv, post-LN layers, no conv bias) and large-lv60
(LayerNorm on every conv, pre-LN layers, conv bias)."""

import json
import sys

import numpy as np
import pytest
import torch

from mho.decoding.decoders import CharacterDecoder, load_decoder
from mho.errors import MhoError
from mho.models.transformer import Wav2Vec2CTC, Wav2Vec2CTCConfig
from mho.models.zoo import checkpoint_path, load_model
from mho.runtime.recognizer import load_recognizer

transformers = pytest.importorskip("transformers")

SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
             conv_dim=(16, 16, 16), conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2),
             num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, vocab_size=12)
VARIANTS = {
    "base": dict(feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False),
    # pad (the CTC blank) last, as in many fine-tuned XLSR models: mho moves it to index 0
    "large-lv60": dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True,
                       pad_token_id=11),
}
CHARACTERS = ["|", "e", "t", "a", "o", "n", "h", "s"]


def save_hf_model(directory, **overrides):
    config = transformers.Wav2Vec2Config(**{**SIZES, **overrides})
    torch.manual_seed(0)
    model = transformers.Wav2Vec2ForCTC(config).eval()
    with torch.no_grad():  # off the init values, so a wrongly mapped norm or bias shows
        for parameter in model.parameters():
            parameter.add_(0.2 * torch.randn_like(parameter))
    model.save_pretrained(directory)
    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    if config.pad_token_id == 11:
        specials = ["[UNK]", "<s>", "</s>", "[PAD]"]
    tokens = [*specials[:3], *CHARACTERS, specials[3]] if config.pad_token_id == 11 else \
        [*specials, *CHARACTERS]
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (directory / "preprocessor_config.json").write_text(json.dumps(
        {"do_normalize": True, "sampling_rate": 16000, "feature_size": 1,
         "padding_value": 0.0, "return_attention_mask": config.do_stable_layer_norm}))
    return model, tokens


@pytest.fixture(scope="module", params=list(VARIANTS))
def hf_model(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp(request.param)
    model, tokens = save_hf_model(directory, **VARIANTS[request.param])
    return request.param, directory, model, tokens


def test_converted_model_gives_hf_log_probs(hf_model):
    variant, directory, hf, tokens = hf_model
    model, payload = load_model(checkpoint_path(str(directory)))
    blank = hf.config.pad_token_id
    order = [blank, *(i for i in range(len(tokens)) if i != blank)]
    assert payload["vocabulary"] == [tokens[i] for i in order]
    extractor = transformers.Wav2Vec2FeatureExtractor(return_attention_mask=True)
    torch.manual_seed(1)
    waveforms = [0.1 * torch.randn(3000), 0.05 * torch.randn(2210)]
    lengths = torch.tensor([len(w) for w in waveforms])
    padded = torch.nn.utils.rnn.pad_sequence(waveforms, batch_first=True)
    with torch.no_grad():
        log_probs, frames = model(padded, lengths)
        assert frames.tolist() == hf._get_feat_extract_output_lengths(lengths).tolist()
        # HF base models take no attention mask: compare each utterance alone there (mho's
        # padded batch gives the same, its conv norm uses valid frames only)
        for i, waveform in enumerate(waveforms):
            inputs = extractor(waveform.numpy(), sampling_rate=16_000, return_tensors="pt")
            expected = hf(inputs.input_values).logits.log_softmax(-1)[0][:, order]
            assert expected.std() > 0.1  # not a flat output
            torch.testing.assert_close(log_probs[i, : frames[i]], expected, atol=1e-4, rtol=0)
        if variant == "large-lv60":
            inputs = extractor([w.numpy() for w in waveforms], sampling_rate=16_000,
                               padding=True, return_tensors="pt")
            expected = hf(inputs.input_values, attention_mask=inputs.attention_mask)
            expected = expected.logits.log_softmax(-1)[..., order]
            for i, n in enumerate(frames.tolist()):
                torch.testing.assert_close(log_probs[i, :n], expected[i, :n], atol=1e-4, rtol=0)


def test_converted_model_takes_lpa_layers_and_round_trips_its_config(hf_model):
    _, directory, _, _ = hf_model
    teacher, payload = load_model(directory)
    config = Wav2Vec2CTCConfig(**payload["model_config"])
    assert config == teacher.config
    student = Wav2Vec2CTC(Wav2Vec2CTCConfig(**{**payload["model_config"], "lpa_layers": [0]}))
    missing, unexpected = student.load_state_dict(payload["state_dict"], strict=False)
    assert missing and unexpected
    assert all(k.startswith("layers.0.attention.") for k in missing + unexpected)
    with torch.no_grad():
        log_probs, frames = student.eval()(torch.randn(1, 4000), torch.tensor([4000]))
    assert log_probs.shape == (1, int(frames[0]), 12)


def test_character_decoding_and_lm_refused(hf_model):
    _, directory, _, _ = hf_model
    tokens = ["<pad>", "<s>", "|", "h", "i", "[UNK]", "o"]
    decoder = load_decoder("greedy", tokens=tokens)
    assert isinstance(decoder, CharacterDecoder)
    path = [3, 3, 0, 4, 5, 2, 2, 1, 3, 0, 0, 6, 6, 0, 6, 2]  # hh_i[UNK]||<s>h__oo_o|
    emissions = np.log(np.eye(len(tokens), dtype=np.float32)[path] + 1e-6)  # [T, V]
    assert decoder.decode(emissions) == "hi hoo"
    with pytest.raises(MhoError, match="--decoder greedy"):
        load_decoder("lm", tokens=tokens)
    with pytest.raises(MhoError, match="--decoder greedy"):
        load_recognizer(str(directory), decoder="lm")
    recognizer = load_recognizer(str(directory), decoder="greedy")
    assert isinstance(recognizer.transcribe(0.1 * np.random.randn(4000).astype(np.float32)), str)


def test_unusable_directories_give_one_line_errors(tmp_path, monkeypatch):
    from safetensors.torch import load_file, save_file  # a dependency of transformers

    with pytest.raises(MhoError, match="no config.json"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(MhoError, match="bert/BertModel model; mho converts"):
        load_model(tmp_path)
    adapter = tmp_path / "adapter"
    save_hf_model(adapter, add_adapter=True)
    with pytest.raises(MhoError, match="unsupported wav2vec2 features: a conv adapter"):
        load_model(adapter)
    weightless = tmp_path / "weightless"
    save_hf_model(weightless)
    weights = weightless / "model.safetensors"
    state = load_file(weights)
    save_file({k: v for k, v in state.items() if "lm_head" not in k}, weights,
                                metadata={"format": "pt"})
    with pytest.raises(MhoError, match="weights missing for 2 parameters"):
        load_model(weightless)
    weights.unlink()
    with pytest.raises(MhoError, match="cannot read the weights"):
        load_model(weightless)
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed
    with pytest.raises(MhoError, match=r"pip install 'mho\[hf\]'"):
        load_model(weightless)
