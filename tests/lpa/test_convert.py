"""The wav2vec2-style host, waveform archives, the MSE diagnostic and progressive
conversion, end to end on a tiny model and a few real utterances."""

import pytest
import torch

from mho.data.datasets import shipped_manifest
from mho.data.waveform_set import WaveformSet, mu_law_decode, mu_law_encode
from mho.lpa.convert import ConversionConfig, Converter
from mho.lpa.diagnostic import diagnose, mse_order
from mho.lpa.fitting import FitConfig, load_waveform_set
from mho.models.transformer import Wav2Vec2CTC, output_lengths, wav2vec2_config
from mho.models.zoo import WAV2VEC2_TYPE, load_model


@pytest.fixture(scope="module")
def waveforms(tmp_path_factory) -> WaveformSet:
    data = load_waveform_set(shipped_manifest("flite-slt"), count=8)
    path = tmp_path_factory.mktemp("w") / "set.pt"
    data.save_archive(path)
    return WaveformSet.load_archive(path)


def test_mu_law_round_trip_is_within_its_step():
    waveform = torch.linspace(-1, 1, 2001)
    decoded = mu_law_decode(mu_law_encode(waveform))
    # mu-law steps grow with level: relative error stays below ~4% above -30 dBFS
    loud = waveform.abs() > 0.03
    assert ((decoded - waveform).abs()[loud] / waveform.abs()[loud]).max() < 0.04
    assert (decoded - waveform).abs().max() < 0.025  # half the top step (~0.043)


def test_archive_round_trip_keeps_audio_and_labels(waveforms):
    assert len(waveforms) == 8 and all(len(lab) > 0 for lab in waveforms.labels)
    batch = waveforms.collate([0, 1])
    assert batch["inputs"].shape == (2, int(batch["lengths"].max()))


def test_host_lengths_padding_and_shapes(waveforms):
    torch.manual_seed(0)
    model = Wav2Vec2CTC(wav2vec2_config("tiny", lpa_layers=[1])).eval()
    batch = waveforms.collate([0, 1])
    with torch.no_grad():
        log_probs, frames = model(batch["inputs"], batch["lengths"])
        alone, _ = model(batch["inputs"][1:, : batch["lengths"][1]], batch["lengths"][1:])
    assert log_probs.shape[1] == int(frames.max())
    assert frames.tolist() == output_lengths(batch["lengths"]).tolist()
    torch.testing.assert_close(log_probs[1, : frames[1]], alone[0], atol=1e-4, rtol=1e-4)
    assert output_lengths(torch.tensor([399, 400, 720])).tolist() == [0, 1, 2]


def test_diagnostic_and_conversion_resume(waveforms, tmp_path):
    torch.manual_seed(0)
    teacher = Wav2Vec2CTC(wav2vec2_config("tiny")).eval()
    payload = {"model_type": WAV2VEC2_TYPE, "model_config": teacher.config.to_dict(),
               "vocabulary": ["<b>"] * 41, "state_dict": teacher.state_dict(), "metadata": {}}
    fit = FitConfig(steps=3, max_batch_seconds=20.0, max_batch_size=4)
    fits = diagnose(teacher, waveforms, waveforms, fit, torch.device("cpu"))
    assert sorted(mse_order(fits)) == [0, 1, 2]
    assert all(0 <= f.mse < 2 for f in fits)
    config = ConversionConfig(fit=fit, coadapt_steps=2, finetune_steps=2)
    order = mse_order(fits)[:2]
    state = Converter(payload, teacher, order, waveforms, config, tmp_path,
                      torch.device("cpu")).run()
    assert state.done == 2 and state.order == order
    model, stored = load_model(tmp_path / "depth-2.pt")
    assert sorted(model.config.lpa_layers) == sorted(order)
    assert stored["metadata"]["lpa_order"] == order
    # a finished run resumes as a no-op; a run with other settings is refused
    fresh = Wav2Vec2CTC(wav2vec2_config("tiny"))
    again = Converter(payload, fresh, order, waveforms, config, tmp_path, torch.device("cpu"))
    assert again.run(resume=True).done == 2
    other = ConversionConfig(fit=fit, coadapt_steps=3, finetune_steps=2)
    from mho.errors import MhoError

    with pytest.raises(MhoError, match="other settings"):
        Converter(payload, fresh, order, waveforms, other, tmp_path,
                  torch.device("cpu")).run(resume=True)
