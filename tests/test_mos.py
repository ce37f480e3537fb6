"""MOS metrics on real models: DNSMOS (speechmos' ONNX files), DistillMOS (the package's weights)
and UTMOS (its architecture, loaded from a random checkpoint written in the released layout)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

from ivbench import registry
from ivbench.audio import write_wav
from ivbench.metrics.base import ScoreItem, ScoringContext, Status
from ivbench.types import Audio, TurnRecord

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow

TEXT = "The weather today is sunny with a light breeze, and it should stay warm until the evening."


def make_record(reply_audio: Optional[str], *, name: str = "d0", mode: str = "t2s",
                status: str = "ok") -> TurnRecord:
    return TurnRecord(
        system="sys", task="mos", dialogue_id=name, turn_index=0, n_turns=1, mode=mode, attempt=1,
        status=status, user_text="How is the weather?", user_audio=None, reference=None,
        reply_text=TEXT, reply_audio=reply_audio, reply_sample_rate=None, reply_duration_s=None,
        first_audio_ms=None, first_text_ms=None, end_ms=None, rtf=None, events=[], stages={},
        error={"message": "boom"} if status != "ok" else None)


def with_noise(audio: Audio, snr_db: float, seed: int = 0) -> Audio:
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(len(audio.samples)).astype(np.float32)
    power = float(np.mean(audio.samples ** 2))
    noise *= np.sqrt(power / 10 ** (snr_db / 10) / np.mean(noise ** 2))
    return Audio((audio.samples + noise).astype(np.float32), audio.sample_rate)


def join(*parts: Audio, gap_s: float = 0.3) -> Audio:
    rate = parts[0].sample_rate
    gap = np.zeros(int(gap_s * rate), dtype=np.float32)
    chunks = [c for p in parts for c in (p.samples, gap)][:-1]
    return Audio(np.concatenate(chunks), rate)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run-directory-like folder: Piper speech, the same with noise, and longer clips."""
    from ivbench.voices.piper import PiperVoice

    speech = PiperVoice().speak(TEXT)  # about 4.4 s at 22.05 kHz
    noisy = with_noise(speech, snr_db=5)
    folder = tmp_path_factory.mktemp("run")
    clips = {
        "clean": speech,
        "noisy": noisy,
        "short": Audio(speech.samples[:3 * speech.sample_rate], speech.sample_rate),  # 3 s -> 12 s
        "one_window": join(speech, speech, gap_s=0.6),  # 9.4 s: a single 9 s window
        "two_windows": join(speech, noisy, gap_s=2.5),  # 11.3 s: windows 0 and 1
        "long": join(*([speech, noisy] * 3), speech, gap_s=0.6),  # 34.4 s: windows 0..6 and 24
        "eight_s": Audio(np.tile(speech.samples, 2)[:8 * speech.sample_rate],
                         speech.sample_rate),  # 8 s: two DistillMOS crops
        "tiny": Audio(speech.samples[:speech.sample_rate], speech.sample_rate),  # 1 s, for UTMOS
        "tiny_noisy": Audio(noisy.samples[:speech.sample_rate], speech.sample_rate),
    }
    for name, audio in clips.items():
        write_wav(folder / "audio" / f"{name}.wav", audio)
    (folder / "audio" / "broken.wav").write_bytes(b"RIFF not really a wav file")
    return folder


def item(run_dir: Path, name: str) -> ScoreItem:
    return ScoreItem(make_record(f"audio/{name}.wav", name=name), run_dir)


# --------------------------------------------------------------------------- DNSMOS
def test_dnsmos_scores_clean_speech_above_noisy(run_dir):
    from ivbench.metrics.mos.dnsmos import DNSMOS

    metric = DNSMOS()
    metric.load(ScoringContext())
    clean, noisy, broken = metric.score([item(run_dir, "clean"), item(run_dir, "noisy"),
                                         item(run_dir, "broken")])
    assert clean.status == noisy.status == Status.OK.value
    for result in (clean, noisy):
        assert set(result.values) == {"sig", "bak", "ovrl", "p808"}
        assert all(1.0 <= v <= 5.0 for v in result.values.values()), result.values
    # Clean TTS speech is good; white noise at 5 dB SNR is heard as noise.
    assert clean.values["ovrl"] > 2.8 and clean.values["bak"] > 3.5
    assert clean.values["bak"] > noisy.values["bak"] + 1.0
    assert clean.values["ovrl"] > noisy.values["ovrl"] + 0.5
    assert clean.values["sig"] > noisy.values["sig"]
    assert clean.values["p808"] > noisy.values["p808"]
    assert broken.status == Status.FAILED.value and "broken.wav" in broken.reason
    assert broken.values == {"sig": None, "bak": None, "ovrl": None, "p808": None}

    assert metric.cache_inputs(item(run_dir, "clean")) == {"audio": item(run_dir, "clean").reply_audio_sha256()}
    ident = metric.identity()
    assert ident["speechmos"] and len(ident["models"]) == 2
    # clips scored side by side, each on one thread: the same numbers, the same identity.
    # onnxruntime sums in another order on another thread count: equal to float32's precision.
    one = DNSMOS(workers=1, threads=2)
    side_by_side = DNSMOS(workers=2, threads=1).score([item(run_dir, "clean"), item(run_dir, "noisy")])
    alone = one.score([item(run_dir, "clean"), item(run_dir, "noisy")])
    for a, b, c in zip(side_by_side, alone, [clean, noisy]):
        assert a.values == pytest.approx(b.values, rel=1e-6) == c.values
    assert one.identity() == ident


def test_dnsmos_fast_path_equals_speechmos(run_dir):
    """The shared-window computation gives speechmos' own numbers: a short clip that speechmos
    repeats to 12 s (three windows), a single window, and two windows of the personalised model."""
    pytest.importorskip("librosa")  # speechmos' own feature code needs it
    from ivbench.metrics.mos.dnsmos import DNSMOS

    for personalized, names in ((False, ["short", "one_window"]), (True, ["two_windows"])):
        fast = DNSMOS(personalized=personalized).score([item(run_dir, n) for n in names])
        reference = DNSMOS(personalized=personalized, backend="speechmos").score([item(run_dir, n) for n in names])
        for name, got, want in zip(names, fast, reference):
            assert got.status == want.status == Status.OK.value
            assert got.details["windows"] == want.details["windows"]
            for field in ("sig", "bak", "ovrl", "p808"):
                assert got.values[field] == pytest.approx(want.values[field], abs=1e-5), (name, field)
        assert [r.details["windows"] for r in fast] == ([3, 1] if not personalized else [2])


def test_dnsmos_shared_windows_across_a_gap_equal_the_network_per_window(run_dir):
    """A long clip: speechmos keeps windows 0..6 and 24 (its float end index drops 7..23), so
    the shared computation runs twice; every window equals the whole network run on it."""
    from ivbench.metrics.mos._common import reply_16k
    from ivbench.metrics.mos._dnsmos_engine import WINDOW_SAMPLES, FastDNSMOS, prepare

    audio, starts = prepare(reply_16k(item(run_dir, "long")))
    assert [s // 16000 for s in starts] == [0, 1, 2, 3, 4, 5, 6, 24]
    engine = FastDNSMOS(chunk_frames=400, window_batch=2)  # several chunks and batches per run
    picked = [0, 16000, 24 * 16000]
    got = engine._primary(audio, [s // 160 for s in picked])
    name = engine.full.get_inputs()[0].name
    want = np.concatenate([engine.full.run(None, {name: audio[s:s + WINDOW_SAMPLES][None]})[0] for s in picked])
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("plant", ["pool 3x3", "conv strided", "op before the pool"])
def test_dnsmos_split_refuses_a_graph_it_cannot_share(plant, tmp_path):
    """The fast path checks the network before it shares windows: a changed speechmos file is a
    ModelFileError naming the file and the way out, not wrong numbers."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    from ivbench.errors import ModelFileError
    from ivbench.metrics.mos._dnsmos_engine import _Split, model_paths

    model = onnx.load(str(model_paths(False)[0]))
    nodes = list(model.graph.node)
    pool = next(n for n in nodes if n.op_type == "MaxPool")
    conv = next(n for n in nodes if n.op_type == "Conv" and
                [a.ints for a in n.attribute if a.name == "kernel_shape"] == [[3, 3]])
    if plant == "pool 3x3":
        pool.attribute.remove(next(a for a in pool.attribute if a.name == "kernel_shape"))
        pool.attribute.append(helper.make_attribute("kernel_shape", [3, 3]))
    elif plant == "conv strided":
        conv.attribute.append(helper.make_attribute("strides", [2, 1]))
    else:  # a time-mixing op between the last conv and the pool
        conv.op_type = "ConvTranspose"
    path = tmp_path / "sig_bak_ovr.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelFileError, match="not the one ivbench knows.*backend=speechmos") as err:
        _Split(path, ort.SessionOptions())
    assert str(path) in str(err.value)


def test_dnsmos_mel_filters_match_librosa():
    librosa = pytest.importorskip("librosa")
    from ivbench.metrics.mos._dnsmos_engine import mel_filterbank

    np.testing.assert_allclose(mel_filterbank(), librosa.filters.mel(sr=16000, n_fft=321, n_mels=120),
                               atol=1e-7)


# --------------------------------------------------------------------------- DistillMOS
def test_distillmos_scores_clean_speech_above_noisy_and_batches_exactly(run_dir):
    import torch

    from ivbench.metrics.mos.distillmos import DistillMOS, _import_distillmos_sqa
    from ivbench.metrics.mos._common import reply_16k

    metric = DistillMOS(batch_size=4)
    metric.load(ScoringContext(device="cpu"))
    clean, noisy, longer = metric.score([item(run_dir, "clean"), item(run_dir, "noisy"),
                                         item(run_dir, "eight_s")])
    assert clean.status == noisy.status == longer.status == Status.OK.value
    assert all(1.0 <= r.values["mos"] <= 5.0 for r in (clean, noisy, longer))
    assert clean.values["mos"] > 3.5
    assert clean.values["mos"] > noisy.values["mos"] + 0.5
    assert (clean.details["crops"], longer.details["crops"]) == (1, 2)
    assert metric.identity()["weights"]

    # The package's own forward, one clip at a time, gives the same numbers.
    sqa = _import_distillmos_sqa()
    own = sqa.ConvTransformerSQAModel(load_weights=False).eval()
    own.load_state_dict(torch.load(sqa.DEFAULT_WEIGHTS_CHKPT, map_location="cpu", weights_only=True)["model"])
    with torch.inference_mode():
        want = own(torch.from_numpy(reply_16k(item(run_dir, "eight_s")))[None]).item()
    assert longer.values["mos"] == pytest.approx(want, abs=1e-5)
    lent = sys.modules.get("torchaudio")  # the stand-in is lent for distillmos' import only
    assert lent is None or "stand-in" not in (lent.__doc__ or "")


# --------------------------------------------------------------------------- UTMOS
def released_layout() -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of utmos22_strong_step7459_v1.pt, written out independently
    of the module: wav2vec 2.0 base (fairseq names), embeddings, BLSTM, projection."""
    layout: dict[str, tuple[int, ...]] = {}
    w = "wav2vec2."
    for i, (k, n_in) in enumerate([(10, 1)] + [(3, 512)] * 4 + [(2, 512)] * 2):
        layout[f"{w}feature_extractor.conv_layers.{i}.0.weight"] = (512, n_in, k)
    layout[f"{w}feature_extractor.conv_layers.0.2.weight"] = (512,)
    layout[f"{w}feature_extractor.conv_layers.0.2.bias"] = (512,)
    layout.update({f"{w}layer_norm.weight": (512,), f"{w}layer_norm.bias": (512,),
                   f"{w}post_extract_proj.weight": (768, 512), f"{w}post_extract_proj.bias": (768,),
                   f"{w}mask_emb": (768,),
                   f"{w}encoder.pos_conv.0.weight_g": (1, 1, 128),
                   f"{w}encoder.pos_conv.0.weight_v": (768, 48, 128),
                   f"{w}encoder.pos_conv.0.bias": (768,),
                   f"{w}encoder.layer_norm.weight": (768,), f"{w}encoder.layer_norm.bias": (768,)})
    for i in range(12):
        p = f"{w}encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            layout[f"{p}self_attn.{proj}.weight"] = (768, 768)
            layout[f"{p}self_attn.{proj}.bias"] = (768,)
        layout.update({f"{p}fc1.weight": (3072, 768), f"{p}fc1.bias": (3072,),
                       f"{p}fc2.weight": (768, 3072), f"{p}fc2.bias": (768,)})
        for norm in ("self_attn_layer_norm", "final_layer_norm"):
            layout[f"{p}{norm}.weight"] = (768,)
            layout[f"{p}{norm}.bias"] = (768,)
    layout.update({"domain_emb": (1, 128), "judge_emb": (1, 128)})
    for suffix in ("", "_reverse"):
        layout.update({f"blstm.weight_ih_l0{suffix}": (2048, 1024), f"blstm.weight_hh_l0{suffix}": (2048, 512),
                       f"blstm.bias_ih_l0{suffix}": (2048,), f"blstm.bias_hh_l0{suffix}": (2048,)})
    layout.update({"projection.0.weight": (2048, 1024), "projection.0.bias": (2048,),
                   "projection.2.weight": (1, 2048), "projection.2.bias": (1,)})
    return layout


def lightning_layout() -> dict[str, tuple[int, ...]]:
    """Key names and shapes of the UTMOS22 repository's Lightning checkpoint
    (epoch=3-step=7459.ckpt), written out independently of the module: its
    BaselineLightningModule holds feature_extractors = [SSL_model wrapping fairseq's wav2vec 2.0
    as `ssl_model`, DomainEmbedding(3 domains, 128)] and output_layers = [LDConditioner (3000
    listeners × 128, BLSTM `decoder_rnn`), Projection (`net`: Linear, ReLU, Dropout, Linear)]."""
    layout = {"feature_extractors.0.ssl_model." + k[len("wav2vec2."):]: v
              for k, v in released_layout().items() if k.startswith("wav2vec2.")}
    layout["feature_extractors.1.embedding.weight"] = (3, 128)
    layout["output_layers.0.judge_embedding.weight"] = (3000, 128)
    for suffix in ("", "_reverse"):
        layout.update({f"output_layers.0.decoder_rnn.weight_ih_l0{suffix}": (2048, 1024),
                       f"output_layers.0.decoder_rnn.weight_hh_l0{suffix}": (2048, 512),
                       f"output_layers.0.decoder_rnn.bias_ih_l0{suffix}": (2048,),
                       f"output_layers.0.decoder_rnn.bias_hh_l0{suffix}": (2048,)})
    layout.update({"output_layers.1.net.0.weight": (2048, 1024), "output_layers.1.net.0.bias": (2048,),
                   "output_layers.1.net.3.weight": (1, 2048), "output_layers.1.net.3.bias": (1,)})
    return layout


class _RunsCode:
    """Unpickling this would run a shell command (as a malicious checkpoint could)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def write_lightning_checkpoint(path: Path, state: dict, marker: Path) -> None:
    """The SpeechMOS tensors as the UTMOS22 Lightning checkpoint holds them — the same weights,
    the domain and listener tables with rows 0 and 288 (what the UTMOS demo scores as) equal to
    SpeechMOS's picked embeddings — inside Lightning's checkpoint dict, whose hyper-parameters
    are an OmegaConf DictConfig (here a stand-in class of that name, as omegaconf is not installed)."""
    import collections
    import types

    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(1)
    renamed = {"blstm.": "output_layers.0.decoder_rnn.", "projection.0.": "output_layers.1.net.0.",
               "projection.2.": "output_layers.1.net.3.", "wav2vec2.": "feature_extractors.0.ssl_model."}
    lightning = collections.OrderedDict()
    for key, value in state.items():
        for old, new in renamed.items():
            if key.startswith(old):
                lightning[new + key[len(old):]] = value
    domains = torch.randn(3, 128, generator=gen)
    domains[0] = state["domain_emb"][0]
    judges = torch.randn(3000, 128, generator=gen)
    judges[288] = state["judge_emb"][0]
    lightning["feature_extractors.1.embedding.weight"] = domains
    lightning["output_layers.0.judge_embedding.weight"] = judges
    assert {k: tuple(v.shape) for k, v in lightning.items()} == lightning_layout()

    config_module = types.ModuleType("omegaconf.dictconfig")
    DictConfig = type("DictConfig", (dict,), {"__module__": "omegaconf.dictconfig"})
    config_module.DictConfig = DictConfig
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "omegaconf", types.ModuleType("omegaconf"))
        patch.setitem(sys.modules, "omegaconf.dictconfig", config_module)
        cfg = DictConfig(model={"feature_extractors": [{"_target_": "model.load_ssl_model"}]})
        cfg.flags = {"struct": False}
        torch.save({"epoch": 3, "global_step": 7459, "pytorch-lightning_version": "1.5.10",
                    "state_dict": lightning,
                    "callbacks": {"ModelCheckpoint": {"best_model_score": torch.tensor(0.93)}},
                    "optimizer_states": [{"state": {0: {"exp_avg": torch.zeros(3)}},
                                          "param_groups": [{"lr": 2e-5, "params": [0]}]}],
                    "lr_schedulers": [{"last_epoch": 7459}], "hparams_name": "cfg",
                    "hyper_parameters": {"cfg": cfg}, "trap": _RunsCode(marker)}, path)


@pytest.fixture(scope="module")
def utmos_checkpoints(tmp_path_factory):
    """Random weights in the released SpeechMOS layout (.pt), the same weights as a UTMOS22
    Lightning checkpoint (.ckpt), and a .pt lacking one key."""
    import types

    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in released_layout().items():
        value = torch.randn(shape, generator=gen) * 0.05
        if "norm" in key and key.endswith(".weight") or key.endswith("conv_layers.0.2.weight") \
                or key.endswith("weight_g"):
            value += 1.0
        state[key] = value
    folder = tmp_path_factory.mktemp("utmos")
    files = types.SimpleNamespace(good=folder / "utmos22_strong_step7459_v1.pt",
                                  lightning=folder / "epoch=3-step=7459.ckpt", bad=folder / "missing_key.pt",
                                  marker=folder / "code_ran")
    torch.save(state, files.good)
    write_lightning_checkpoint(files.lightning, state, files.marker)
    del state["wav2vec2.encoder.layers.3.fc1.weight"]
    torch.save(state, files.bad)
    return files


def test_utmos_module_matches_the_released_layout():
    pytest.importorskip("torch")
    from ivbench.metrics.mos._utmos_model import UTMOS22Strong

    got = {k: tuple(v.shape) for k, v in UTMOS22Strong().state_dict().items()}
    assert got == released_layout()


def test_utmos_random_checkpoint_loads_strictly_and_scores_a_batch(run_dir, utmos_checkpoints):
    from ivbench.metrics.mos.utmos import UTMOS

    good = utmos_checkpoints.good
    metric = registry.create("metrics", registry.parse_spec(f"utmos:checkpoint={good},batch_size=2"))
    assert isinstance(metric, UTMOS)
    metric.load(ScoringContext(device="cpu"))
    scores = metric.predict(np.random.default_rng(0).standard_normal((3, 8000)).astype(np.float32) * 0.1)
    assert scores.shape == (3,) and np.all(np.isfinite(scores))

    # Two clips of one length share a batch; a broken file fails alone.
    results = metric.score([item(run_dir, "tiny"), item(run_dir, "tiny_noisy"), item(run_dir, "broken")])
    assert [r.status for r in results] == ["ok", "ok", "failed"]
    assert all(np.isfinite(r.values["mos"]) for r in results[:2])
    assert metric.identity()["checkpoint_sha256"] and "checkpoint" not in metric.identity()["options"]


def test_utmos_lightning_checkpoint_scores_as_the_speechmos_file(utmos_checkpoints):
    """The UTMOS22 repository's Lightning checkpoint loads without Lightning or OmegaConf, runs
    none of its pickled code, and gives the SpeechMOS file's scores."""
    from ivbench.metrics.mos.utmos import UTMOS

    speechmos = UTMOS(checkpoint=str(utmos_checkpoints.good))
    lightning = UTMOS(checkpoint=str(utmos_checkpoints.lightning))
    waves = np.random.default_rng(1).standard_normal((2, 6000)).astype(np.float32) * 0.1
    np.testing.assert_array_equal(lightning.predict(waves, 24000), speechmos.predict(waves, 24000))
    assert not utmos_checkpoints.marker.exists()
    assert lightning.identity()["checkpoint_sha256"] != speechmos.identity()["checkpoint_sha256"]


def test_sinc_resampler_matches_torchaudio():
    """torchaudio.functional.resample's own output (tests/data, made by
    tests/make_resample_fixture.py) and the filter's formula summed directly in float64."""
    torch = pytest.importorskip("torch")
    from ivbench.metrics.mos._sinc_resample import resampled_length, sinc_resample

    data = np.load(ROOT / "tests" / "data" / "torchaudio_resample.npz")
    for rate in (24000, 22050, 44100, 8000):
        x, want = data[f"in_{rate}"], data[f"out_{rate}"]
        got = sinc_resample(torch.from_numpy(x), rate, 16000).numpy()
        assert got.shape == want.shape == (resampled_length(len(x), rate, 16000),)
        np.testing.assert_allclose(got, want, atol=2e-7, err_msg=str(rate))  # float32 rounding
        batch = torch.from_numpy(np.stack([x, -x, 0.5 * x]))[None]  # (1, 3, T): every row alike
        np.testing.assert_allclose(sinc_resample(batch, rate, 16000)[0].numpy(),
                                   np.stack([got, -got, 0.5 * got]), atol=1e-7)

    # y(t) = Σ_i x[i]·(b/f)·sinc(b(i/f − t))·cos²(π b(i/f − t) / 12) within 6 zero crossings,
    # with f the input rate and b = 0.99·min(f, 16000): the Hann-windowed sinc interpolator.
    x = data["in_22050"].astype(np.float64)
    f, b = 22050, 0.99 * 16000
    lag = b * (np.arange(len(x))[None, :] / f - np.arange(len(data["out_22050"]))[:, None] / 16000)
    taps = np.where(np.abs(lag) <= 6, np.sinc(lag) * np.cos(np.pi * lag / 12) ** 2, 0.0) * b / f
    # (torchaudio builds its filter in the samples' float32: a few 1e-6 from the exact one)
    np.testing.assert_allclose(data["out_22050"], taps @ x, atol=1e-5)


def test_utmos_resamples_inside_the_model_as_the_reference(utmos_checkpoints, tmp_path):
    """A reply at 24, 22.05, 44.1 or 8 kHz scores what SpeechMOS gives: the model on
    torchaudio's 16 kHz resampling of the same samples."""
    import soundfile
    import soxr

    from ivbench.metrics.mos.utmos import UTMOS

    data = np.load(ROOT / "tests" / "data" / "torchaudio_resample.npz")
    metric = UTMOS(checkpoint=str(utmos_checkpoints.good))
    (tmp_path / "audio").mkdir()
    moved = []
    for rate in (24000, 22050, 44100, 8000):
        soundfile.write(tmp_path / "audio" / f"{rate}.wav", data[f"in_{rate}"], rate, subtype="FLOAT")
        result, = metric.score([ScoreItem(make_record(f"audio/{rate}.wav"), tmp_path)])
        want = metric.predict(data[f"out_{rate}"][None])[0]  # torchaudio's 16 kHz samples
        assert result.status == "ok" and result.values["mos"] == pytest.approx(want, abs=2e-6), rate
        other = soxr.resample(data[f"in_{rate}"], rate, 16000, quality="HQ")[None]  # what ivbench did
        moved.append(abs(metric.predict(other)[0] - want))
    assert max(moved) > 1e-4  # another resampler moves the score: the comparison can tell


def test_utmos_checkpoint_errors(utmos_checkpoints, tmp_path, monkeypatch):
    import torch

    from ivbench.errors import ModelFileError
    from ivbench.metrics.mos.utmos import FILE_NAME, RELEASE_URL, UTMOS

    with pytest.raises(ModelFileError, match=r"missing.*wav2vec2\.encoder\.layers\.3\.fc1\.weight"):
        UTMOS(checkpoint=str(utmos_checkpoints.bad)).load()
    with open(utmos_checkpoints.good, "rb") as f:
        head = f.read(1 << 16)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    torch.save({"state_dict": {"output_layers.0.judge_embedding.weight": torch.zeros(100, 128),
                               "feature_extractors.0.ssl_model.mask_emb": torch.zeros(768)}},
               tmp_path / "few_judges.ckpt")
    broken = {"empty.pt": (b"", "is empty"), "truncated.pt": (head, "cannot be read as a torch checkpoint"),
              "text.pt": (b"<html>rate limited</html>\n", "cannot be read as a torch checkpoint"),
              "list.pt": (None, "holds a list, not a state dict"), "few_judges.ckpt": (None, "row 288")}
    for name, (content, fragment) in broken.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
        with pytest.raises(ModelFileError) as err:
            UTMOS(checkpoint=str(tmp_path / name)).load()
        assert str(tmp_path / name) in str(err.value) and fragment in str(err.value), (name, str(err.value))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty torch.hub cache
    with pytest.raises(FileNotFoundError) as err:
        UTMOS().load()
    assert FILE_NAME in str(err.value) and RELEASE_URL in str(err.value) and "checkpoint=" in str(err.value)
    with pytest.raises(FileNotFoundError, match="not found"):
        UTMOS(checkpoint=str(tmp_path / "nowhere.pt")).load()


# --------------------------------------------------------------------------- all three
@pytest.mark.parametrize("name", ["dnsmos", "distillmos", "utmos"])
def test_precheck_without_reply_audio_is_not_applicable(name, tmp_path):
    metric = registry.create("metrics", registry.parse_spec(name))
    text_only = ScoreItem(make_record(None, mode="t2t"), tmp_path)
    result = metric.precheck(text_only)
    assert result is not None and result.status == Status.NOT_APPLICABLE.value
    assert set(result.values) == set(metric.fields) and all(v is None for v in result.values.values())
    failed = metric.precheck(ScoreItem(make_record("audio/x.wav", status="failed"), tmp_path))
    assert failed is not None and failed.status == Status.MISSING.value
    assert metric.precheck(ScoreItem(make_record("audio/x.wav"), tmp_path)) is None


def test_importing_the_metrics_loads_no_model_library():
    code = ("import sys, ivbench.metrics.mos.dnsmos, ivbench.metrics.mos.distillmos, ivbench.metrics.mos.utmos; "
            "heavy = {'torch', 'onnx', 'onnxruntime', 'speechmos', 'librosa', 'distillmos'} & set(sys.modules); "
            "print(sorted(heavy)); sys.exit(1 if heavy else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_missing_package_names_the_extra(monkeypatch):
    from ivbench.metrics.mos.dnsmos import DNSMOS

    monkeypatch.setitem(sys.modules, "onnx", None)  # as if not installed
    with pytest.raises(ImportError, match=r"ivbench\[scoring\]"):
        DNSMOS().load()
