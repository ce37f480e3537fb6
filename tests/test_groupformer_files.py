"""GroupFormer's model files load as the public code loads them, and every broken one is a
ModelFileError naming the file and what is wrong: k-means files of every joblib codec (and
never arbitrary bytes as raw centroids), HuBERT folders (config.json required; the frame rate
checked against the model's unit rate), vocoder configs and checkpoints, whole checkpoint
folders. Also: the vocoder drops unit −1 as textlesslib and fairseq do, random init refuses
model paths, and the streaming vocoder's defaults keep ≥ 40 dB against whole-utterance
vocoding (benchmarks/vocoder_streaming.py measures the grid)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from conftest import assert_user_error, write_task  # noqa: E402

from ivbench.errors import ConfigError, ModelFileError  # noqa: E402
from ivbench.models.groupformer.config import SHAPES, VOCODER_25HZ  # noqa: E402

G = 5
TINY_VOCODER = SHAPES["tiny"]["vocoder"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---- k-means ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fitted_kmeans():
    pytest.importorskip("sklearn")
    from sklearn.cluster import MiniBatchKMeans

    data = np.random.default_rng(0).standard_normal((400, 8)).astype(np.float32)
    return MiniBatchKMeans(n_clusters=20, n_init=1, random_state=0).fit(data)


@pytest.mark.parametrize("compress", [0, 3, ("zlib", 3), ("gzip", 3), ("bz2", 3), ("lzma", 3), ("xz", 3), ("lz4", 3)],
                         ids=["none", "default", "zlib", "gzip", "bz2", "lzma", "xz", "lz4"])
def test_kmeans_loads_every_joblib_codec(fitted_kmeans, compress, tmp_path):
    import joblib

    from ivbench.models.groupformer.speech_tokenizer import load_kmeans

    if compress == ("lz4", 3):
        pytest.importorskip("lz4")
    joblib.dump(fitted_kmeans, tmp_path / "km.bin", compress=compress)
    got = load_kmeans(tmp_path / "km.bin", dim=8, n_clusters=20)
    assert got.dtype == np.float32 and np.array_equal(got, fitted_kmeans.cluster_centers_.astype(np.float32))


def test_broken_kmeans_files_name_the_file(fitted_kmeans, tmp_path):
    import joblib

    from ivbench.models.groupformer.speech_tokenizer import load_kmeans

    centers = fitted_kmeans.cluster_centers_.astype(np.float32)
    joblib.dump(fitted_kmeans, tmp_path / "plain.bin")
    joblib.dump(fitted_kmeans, tmp_path / "zlib.bin", compress=3)
    rng = np.random.default_rng(1)
    nan = centers.copy()
    nan[3, 2] = np.nan
    files = {
        "empty.bin": (b"", "is empty"),
        "truncated.bin": ((tmp_path / "plain.bin").read_bytes()[:200], "cannot be unpickled"),
        "truncated_zlib.bin": ((tmp_path / "zlib.bin").read_bytes()[:200], "does not decompress"),
        "page.bin": (b"<html><body>404</body></html>\n", "not a joblib/pickle file"),
        # random bytes of exactly 20 x 8 float32 values: some decode as NaN, so they are not centroids
        "noise.raw": (b"\x01" + rng.integers(0, 256, 4 * 20 * 8 - 1, dtype=np.uint8).tobytes(), "NaN or infinite"),
        "short.raw": (centers.tobytes()[:-4], "has 636 bytes"),
        "evil.bin": (b"\x80\x04cos\nsystem\n(S'true'\ntR.", "refusing to load os.system"),
    }
    for name, (content, _) in files.items():
        (tmp_path / name).write_bytes(content)
    np.save(tmp_path / "nan.npy", nan)
    np.save(tmp_path / "wide.npy", np.zeros((20, 9), np.float32))
    np.save(tmp_path / "few.npy", centers[:19])
    np.save(tmp_path / "text.npy", np.array(["a", "b"]))
    centers.tofile(tmp_path / "unknown_k.raw")
    files.update({"nan.npy": (None, "1 centroid values are NaN"), "wide.npy": (None, "9-dimensional"),
                  "few.npy": (None, "19 centroids, but the model has 20 units"),
                  "text.npy": (None, "expected numbers"), "missing.bin": (None, "not found")})
    for name, (_, fragment) in files.items():
        with pytest.raises(ModelFileError) as err:
            load_kmeans(tmp_path / name, dim=8, n_clusters=20)
        assert str(tmp_path / name) in str(err.value) and fragment in str(err.value), (name, str(err.value))
    with pytest.raises(ModelFileError, match="number of clusters and dimensions is known"):
        load_kmeans(tmp_path / "unknown_k.raw", dim=8)  # raw floats need K and D
    assert np.array_equal(load_kmeans(tmp_path / "unknown_k.raw", dim=8, n_clusters=20), centers)

    # An evil global inside a compressed joblib file is refused too; a stated n_clusters that
    # disagrees with the centres is named.
    import zlib

    (tmp_path / "evil.z").write_bytes(zlib.compress(files["evil.bin"][0]))
    with pytest.raises(ModelFileError, match="refusing"):
        load_kmeans(tmp_path / "evil.z", dim=8, n_clusters=20)
    fitted_kmeans.n_clusters, before = 21, fitted_kmeans.n_clusters
    try:
        joblib.dump(fitted_kmeans, tmp_path / "lying.bin")
    finally:
        fitted_kmeans.n_clusters = before
    with pytest.raises(ModelFileError, match="n_clusters is 21 but cluster_centers_ has 20 rows"):
        load_kmeans(tmp_path / "lying.bin", dim=8)


# ---- HuBERT folders --------------------------------------------------------------------------

def _save_hubert(folder: Path, **shape):
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    model = HubertModel(HubertConfig(**{**SHAPES["tiny"]["hubert"], **shape})).eval()
    model.save_pretrained(str(folder))
    return model


def test_hubert_folders_are_checked(tmp_path):
    from ivbench.models.groupformer.speech_tokenizer import load_hubert

    good = tmp_path / "good"
    model = _save_hubert(good)
    loaded = load_hubert(good)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))

    cases = {}
    for name in ("no_config", "bad_json", "other_model", "truncated", "no_weights", "fewer_layers"):
        shutil.copytree(good, tmp_path / name)
    (tmp_path / "no_config" / "config.json").unlink()
    cases["no_config"] = ("no_config", "no config.json", "50 Hz")
    (tmp_path / "bad_json" / "config.json").write_text('{"model_type": "hubert",')
    cases["bad_json"] = ("bad_json/config.json", "not valid JSON")
    config = json.loads((good / "config.json").read_text())
    (tmp_path / "other_model" / "config.json").write_text(json.dumps(dict(config, model_type="wav2vec2")))
    cases["other_model"] = ("other_model/config.json", "'wav2vec2', not hubert")
    weights = tmp_path / "truncated" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    cases["truncated"] = ("truncated", "cannot be loaded")
    (tmp_path / "no_weights" / "model.safetensors").unlink()
    cases["no_weights"] = ("no_weights", "has no weights")
    # The weights of a 2-layer model under a config of 3 layers: transformers would initialise
    # the third randomly and only warn.
    (tmp_path / "fewer_layers" / "config.json").write_text(json.dumps(dict(config, num_hidden_layers=3)))
    cases["fewer_layers"] = ("fewer_layers", "the weights lack", "encoder.layers.2")
    (tmp_path / "file").write_text("x")
    cases["file"] = ("file", "is a file")
    cases["nowhere"] = ("nowhere", "not found")
    for name, (named, *fragments) in cases.items():
        with pytest.raises(ModelFileError) as err:
            load_hubert(tmp_path / name)
        message = str(err.value)
        assert str(tmp_path / named) in message and all(f in message for f in fragments), (name, message)


def test_tokenizer_frame_rate_must_be_the_models_unit_rate(tmp_path):
    """A HuBERT of another frame rate (the original 50 Hz one, conv strides 5·2·2·2·2·2·2·1
    here) loads, but the model refuses it, naming the folder."""
    from ivbench.models.groupformer.config import GroupFormerConfig
    from ivbench.models.groupformer.model import check_parts
    from ivbench.models.groupformer.speech_tokenizer import load_speech_tokenizer

    strides = [5, 2, 2, 2, 2, 2, 2, 1]
    _save_hubert(tmp_path / "hubert50", conv_stride=strides)
    np.save(tmp_path / "km.npy", np.random.default_rng(0).standard_normal((500, 32)).astype(np.float32))
    tokenizer = load_speech_tokenizer(tmp_path / "hubert50", tmp_path / "km.npy", layer=2, n_units=500)
    assert tokenizer.frame_rate == 50.0
    with pytest.raises(ModelFileError) as err:
        check_parts(GroupFormerConfig(), tokenizer, None)
    assert str(tmp_path / "hubert50") in str(err.value) and "50 frames per second" in str(err.value)
    assert "units are 25 per second" in str(err.value)
    check_parts(GroupFormerConfig(unit_rate_hz=50), tokenizer, None)  # a 50 Hz model takes it


# ---- vocoder ---------------------------------------------------------------------------------

def test_vocoder_drops_padding_units():
    """Unit −1 pads unit sequences (textlesslib, fairseq): dropped, so it adds no samples."""
    from ivbench.models.groupformer.vocoder import StreamingVocoder, signal_vocoder

    vocoder = signal_vocoder(TINY_VOCODER, seed=1)
    units = np.random.default_rng(0).integers(0, 500, 23).tolist()
    padded = [-1] + units[:10] + [-1, -1] + units[10:] + [-1]
    whole = vocoder.synthesize(units)
    assert len(whole) == 23 * vocoder.hop
    assert torch.equal(vocoder.synthesize(padded), whole)
    assert vocoder.synthesize([-1, -1]).shape == (0,)
    with pytest.raises(ValueError, match="unit 500 is past"):
        vocoder.synthesize([3, 500])
    stream = StreamingVocoder(vocoder, lookahead=2, context=8)
    chunks = [stream.push(padded[s:s + G]) for s in range(0, len(padded), G)] + [stream.flush()]
    assert sum(len(c) for c in chunks if c is not None) == 23 * vocoder.hop


def _write_vocoder(folder: Path, cfg: dict, seed: int = 0) -> tuple[Path, Path]:
    from ivbench.models.groupformer.vocoder import signal_vocoder

    folder.mkdir(parents=True, exist_ok=True)
    signal_vocoder(cfg, seed).save(folder / "g_00500000", folder / "config.json")
    return folder / "g_00500000", folder / "config.json"


def test_broken_vocoder_files_name_the_file(tmp_path):
    from ivbench.models.groupformer.vocoder import load_vocoder

    checkpoint, config = _write_vocoder(tmp_path / "good", TINY_VOCODER)
    assert load_vocoder(checkpoint, config).hop == 640
    cfg = json.loads(config.read_text())
    bad_configs = {
        "missing_key": ({k: v for k, v in cfg.items() if k != "upsample_rates"}, "lacks 'upsample_rates'"),
        "rates_kernels": (dict(cfg, upsample_kernel_sizes=[11, 8, 8, 8]), "5 upsample_rates but 4"),
        "hop": (dict(cfg, code_hop_size=320), "code_hop_size 320 but the upsample_rates multiply to 640"),
        "dilations": (dict(cfg, resblock_dilation_sizes=[[1, 3, 5], [1, 3]]), "resblock_dilation_sizes"),
        "f0": (dict(cfg, f0=True), "sets 'f0'"),
        "wider": (dict(cfg, upsample_initial_channel=64), "of the wrong shape (conv_pre.weight (32, 16, 7)"),
        "a_list": ([1, 2], "holds a JSON list"),
    }
    for name, (content, _) in bad_configs.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(content))
    (tmp_path / "not_json.json").write_text("upsample_rates: [5, 4]\n")
    bad_configs["not_json"] = (None, "not valid JSON")
    for name, (_, fragment) in bad_configs.items():
        with pytest.raises(ModelFileError) as err:
            load_vocoder(checkpoint, tmp_path / f"{name}.json")
        assert str(tmp_path / f"{name}.json") in str(err.value) and fragment in str(err.value), (name, str(err.value))

    state = torch.load(checkpoint, weights_only=True)["generator"]
    torch.save({"generator": {k: v for k, v in state.items() if k != "conv_post.weight"}}, tmp_path / "lacking.pt")
    half_pair = dict(state, **{"ups.0.weight_g": torch.ones(32, 1, 1)})  # a weight_g without its weight_v
    torch.save({"generator": half_pair}, tmp_path / "half_pair.pt")
    torch.save({"generator": "not tensors"}, tmp_path / "no_state.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "truncated.pt").write_bytes(checkpoint.read_bytes()[:3000])
    (tmp_path / "truncated.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    bad_checkpoints = {"lacking.pt": "1 missing (conv_post.weight)", "half_pair.pt": "only part of a weight-norm pair",
                       "no_state.pt": "holds no generator state dict", "empty.pt": "is empty",
                       "truncated.pt": "cannot be read as a torch checkpoint",
                       "truncated.safetensors": "cannot be read as safetensors", "nowhere.pt": "not found"}
    for name, fragment in bad_checkpoints.items():
        with pytest.raises(ModelFileError) as err:
            load_vocoder(tmp_path / name, config)
        assert str(tmp_path / name) in str(err.value) and fragment in str(err.value), (name, str(err.value))


def test_streaming_defaults_keep_40_db_against_whole_utterance_vocoding():
    """The system's default look-ahead and context, on vocoders of the TWIST 25 Hz shape (its
    kernels and dilations: a receptive field of 24 units each way) with `signal_vocoder`
    weights — random, every layer keeping the signal's variance (the SNR takes the signal's
    power about its mean: the random network adds an offset), so distant units matter as
    much as the architecture allows (torch's default initialisation makes a near-constant
    output, for which an SNR means nothing). 32 channels instead of 512, for speed: the
    benchmark finds the same look-ahead for both."""
    from ivbench.systems.groupformer import GroupFormerSystem
    from ivbench.models.groupformer.vocoder import StreamingVocoder, signal_vocoder

    system = GroupFormerSystem(init="random", size="tiny")
    defaults = dict(chunk_groups=system.chunk_groups, lookahead=system.lookahead, context=system.context,
                    fade=system.fade)
    plain = StreamingVocoder(signal_vocoder(TINY_VOCODER))
    assert (plain.chunk_groups, plain.lookahead, plain.context, plain.fade) == tuple(defaults.values())
    units = np.random.default_rng(0).integers(0, 500, 60).tolist()
    snrs = []
    for seed in range(3):
        vocoder = signal_vocoder(dict(VOCODER_25HZ, upsample_initial_channel=32), seed)
        whole = vocoder.synthesize(units).numpy().astype(np.float64)
        assert whole.std() > 0.05  # a varying signal, not a near-constant
        stream = StreamingVocoder(vocoder, **defaults)
        chunks = [stream.push(units[s:s + G]) for s in range(0, len(units), G)] + [stream.flush()]
        streamed = np.concatenate([c for c in chunks if c is not None])
        snrs.append(10 * np.log10(np.sum((whole - whole.mean()) ** 2) / np.sum((streamed - whole) ** 2)))
    assert min(snrs) >= 40, snrs
    # The look-ahead the defaults replaced loses much more: the measurement can tell.
    stream = StreamingVocoder(vocoder, 1, 2, 8, 320)
    chunks = [stream.push(units[s:s + G]) for s in range(0, len(units), G)] + [stream.flush()]
    old = np.concatenate([c for c in chunks if c is not None])
    assert 10 * np.log10(np.sum((whole - whole.mean()) ** 2) / np.sum((old - whole) ** 2)) < 30


# ---- whole checkpoint folders ------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint_folder(tmp_path_factory):
    from ivbench.models.groupformer.model import GroupFormer

    folder = tmp_path_factory.mktemp("ckpt") / "tiny"
    GroupFormer.random("tiny", group_size=G, seed=0).save_pretrained(folder)
    return folder


def _edit_json(path: Path, **changes) -> None:
    path.write_text(json.dumps(dict(json.loads(path.read_text()), **changes)))


def _truncate(path: Path, keep: int = 500) -> None:
    path.write_bytes(path.read_bytes()[:keep])


BROKEN_FOLDERS = {
    "config_not_json": (lambda f: (f / "groupformer.json").write_text("{"), "groupformer.json", "not valid JSON"),
    "config_unknown_key": (lambda f: _edit_json(f / "groupformer.json", n_unit=500), "groupformer.json",
                           "unknown keys ['n_unit']"),
    "heads_truncated": (lambda f: _truncate(f / "heads.safetensors"), "heads.safetensors",
                        "cannot be read as safetensors"),
    "heads_other_group_size": (lambda f: _edit_json(f / "groupformer.json", group_size=4), "heads.safetensors",
                               "of the wrong shape"),
    "vocoder_config_lacks_key": (lambda f: (f / "vocoder" / "config.json").write_text(json.dumps(
        {k: v for k, v in TINY_VOCODER.items() if k != "upsample_rates"})), "vocoder/config.json",
        "lacks 'upsample_rates'"),
    "vocoder_wider_config": (lambda f: _edit_json(f / "vocoder" / "config.json", upsample_initial_channel=64),
                             "vocoder/generator.pt", "of the wrong shape"),
    "vocoder_24k": (lambda f: _edit_json(f / "vocoder" / "config.json", sampling_rate=24000),
                    "vocoder/generator.pt", "37.5 units per second"),
    "vocoder_empty": (lambda f: (f / "vocoder" / "generator.pt").write_bytes(b""), "vocoder/generator.pt", "is empty"),
    "vocoder_truncated": (lambda f: _truncate(f / "vocoder" / "generator.pt", 4000), "vocoder/generator.pt",
                          "cannot be read as a torch checkpoint"),
    "vocoder_config_gone": (lambda f: (f / "vocoder" / "config.json").unlink(), "vocoder/config.json", "not found"),
    "kmeans_499": (lambda f: np.save(f / "kmeans.npy", np.load(f / "kmeans.npy")[:499]), "kmeans.npy",
                   "499 centroids, but the model has 500 units"),
    "kmeans_gone": (lambda f: (f / "kmeans.npy").unlink(), "kmeans.npy", "not found"),
    "hubert_config_gone": (lambda f: (f / "hubert" / "config.json").unlink(), "hubert", "no config.json"),
    "hubert_50hz": (lambda f: _edit_json(f / "hubert" / "config.json", conv_stride=[5, 2, 2, 2, 2, 2, 2, 1]),
                    "hubert", "50 frames per second"),
    "llm_truncated": (lambda f: _truncate(f / "llm" / "model.safetensors"), "llm", "cannot be loaded"),
}


@pytest.mark.parametrize("case", list(BROKEN_FOLDERS))
def test_broken_checkpoint_folder_names_the_file(checkpoint_folder, case, tmp_path):
    from ivbench.models.groupformer.model import GroupFormer

    folder = tmp_path / "ckpt"
    shutil.copytree(checkpoint_folder, folder)
    breaks, named, fragment = BROKEN_FOLDERS[case]
    breaks(folder)
    with pytest.raises(ModelFileError) as err:
        GroupFormer.from_pretrained(folder)
    assert str(folder / named) in str(err.value) and fragment in str(err.value), str(err.value)


# ---- options -----------------------------------------------------------------------------------

def test_random_init_refuses_model_paths(tmp_path):
    from click.testing import CliRunner

    from ivbench import registry
    from ivbench.cli import main

    for option in ("checkpoint=/ckpt", "vocoder=/v.pt", "hubert=/h", "kmeans=/k.bin", "vocoder_config=/v.json"):
        with pytest.raises(ConfigError) as err:
            registry.create("systems", registry.parse_spec(f"groupformer:init=random,size=tiny,{option}"))
        assert option.split("=")[0] in str(err.value) and "would be ignored" in str(err.value)
    registry.create("systems", registry.parse_spec("groupformer:init=random,size=tiny"))  # no paths: fine
    task = write_task(tmp_path, [["hello"]])
    result = CliRunner().invoke(main, ["eval", "--task", str(task), "--system", "groupformer:init=random,vocoder=/v.pt",
                                       "--out", str(tmp_path / "run"), "--no-progress", "--no-score"])
    assert_user_error(result, "init=random", "vocoder would be ignored")


def test_model_file_errors_are_value_errors_and_missing_files_file_not_found():
    """Callers that catch ValueError / FileNotFoundError keep working."""
    from ivbench.model_files import MissingModelFile

    assert issubclass(ModelFileError, ValueError) and issubclass(MissingModelFile, FileNotFoundError)
    assert issubclass(MissingModelFile, ModelFileError)
