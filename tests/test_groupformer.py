"""GroupFormer (IntrinsicVoice reference model) on tiny CPU configurations: shapes through every
part, the speech tokenizer and vocoder loaders on random checkpoints written in the released
formats, the streaming vocoder, memorisation through training (the forward, loss and
generation paths agree), save/load round trip, sessions and `ivbench eval`."""
import json
import math
import subprocess
import sys
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from conftest import ROOT  # noqa: E402

from ivbench.models.groupformer.chat import Message, Speech, render, to_groups  # noqa: E402
from ivbench.models.groupformer.config import SHAPES  # noqa: E402

G = 5


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and lose much on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny():
    from ivbench.models.groupformer.model import GroupFormer

    return GroupFormer.random("tiny", group_size=G, seed=0)


# ---- import hygiene and options -------------------------------------------------------------

def test_system_module_imports_without_torch():
    code = ("import sys\n"
            "from ivbench import registry\n"
            "s = registry.create('systems', registry.parse_spec('groupformer:init=random,size=tiny'))\n"
            "t = registry.create('systems', registry.parse_spec('groupformer-text-first:init=random'))\n"
            "assert s.untrained and t.untrained and t.text_first and not s.text_first\n"
            "assert s.max_groups == 50 and s.min_groups == 50\n"
            "bad = [m for m in ('torch', 'transformers', 'tokenizers') if m in sys.modules]\n"
            "assert not bad, bad\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_system_options_are_checked():
    from ivbench.systems.groupformer import GroupFormerSystem

    with pytest.raises(ValueError, match="checkpoint=PATH"):
        GroupFormerSystem()
    with pytest.raises(ValueError, match="size"):
        GroupFormerSystem(init="random", size="huge")
    trained = GroupFormerSystem(checkpoint="/nowhere")
    assert not trained.untrained and trained.min_groups == 0 and trained.max_groups == 300
    assert GroupFormerSystem.untrained is False  # the class attribute is untouched


# ---- shapes ---------------------------------------------------------------------------------

def test_shapes_through_every_part(tiny):
    cfg, hidden = tiny.config, tiny.llm.config.hidden_size
    groups = torch.randint(0, cfg.n_units + 1, (7, G))
    assert tiny.adaptor(groups).shape == (7, hidden)
    assert tiny.group_model(torch.randn(7, hidden)).shape == (7, G, cfg.n_units + 1)

    messages = [Message("system", ["Reply in speech."]), Message("user", [Speech(tuple(range(12)))])]
    rendered = render(tiny.tokenizer, messages, G, cfg.pad_unit, add_generation_prompt=True)
    assert rendered.groups == to_groups(range(12), G, cfg.pad_unit)  # 12 units: 3 groups, last padded
    assert rendered.groups[-1] == (10, 11, cfg.pad_unit, cfg.pad_unit, cfg.pad_unit)
    assert rendered.ids.count(tiny.special.speech) == 3
    ids = torch.tensor([rendered.ids])
    embeds = tiny.embed(ids, torch.tensor(rendered.groups))
    mask = ids[0] == tiny.special.speech
    assert torch.allclose(embeds[0, mask], tiny.adaptor(torch.tensor(rendered.groups)), atol=1e-6)
    assert torch.equal(embeds[0, ~mask], tiny.llm.get_input_embeddings()(ids)[0, ~mask])
    states = tiny(ids, torch.tensor(rendered.groups))
    assert states.shape == (1, len(rendered.ids), hidden)
    full = tiny.token_logits(states)
    pair = tiny.token_logits(states, [tiny.special.speech, tiny.special.eosp])
    assert torch.allclose(pair, full[..., [tiny.special.speech, tiny.special.eosp]], atol=1e-5)

    samples = np.random.default_rng(0).standard_normal(16000 * 2).astype(np.float32) * 0.1
    units = tiny.speech_tokenizer.encode(samples)
    assert units.dtype == torch.long and abs(len(units) - 50) <= 1  # 25 units per second
    audio = tiny.vocoder.synthesize(units)
    assert audio.shape == (len(units) * 640,)  # 640 samples per unit at 16 kHz


# ---- speech tokenizer: HuBERT folder + k-means files in the released formats ----------------

def _tiny_hubert(tmp_path):
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    model = HubertModel(HubertConfig(**SHAPES["tiny"]["hubert"])).eval()
    model.save_pretrained(str(tmp_path / "hubert"))
    return model


def test_speech_tokenizer_loads_hubert_and_every_kmeans_format(tmp_path, monkeypatch):
    import joblib

    from ivbench.models.groupformer.speech_tokenizer import load_kmeans, load_speech_tokenizer

    hubert = _tiny_hubert(tmp_path)
    dim = hubert.config.hidden_size
    centroids = np.random.default_rng(1).standard_normal((500, dim)).astype(np.float32)
    np.save(tmp_path / "km.npy", centroids)
    centroids.tofile(tmp_path / "km.raw")

    # The km500 file is a joblib pickle of scikit-learn's MiniBatchKMeans. Write one with a
    # stand-in class under the same module path; it is read back without that class.
    fake = types.ModuleType("sklearn.cluster._kmeans")

    MiniBatchKMeans = type("MiniBatchKMeans", (), {"__module__": "sklearn.cluster._kmeans"})
    fake.MiniBatchKMeans = MiniBatchKMeans
    for name in ("sklearn", "sklearn.cluster"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "sklearn.cluster._kmeans", fake)
    km = MiniBatchKMeans()
    km.__dict__.update(n_clusters=500, cluster_centers_=centroids, _n_threads=1, _sklearn_version="0.24.2",
                       labels_=np.zeros(10, dtype=np.int32), inertia_=1.0)
    joblib.dump(km, tmp_path / "km500.bin")
    for name in ("sklearn", "sklearn.cluster", "sklearn.cluster._kmeans"):
        monkeypatch.delitem(sys.modules, name)

    for name in ("km.npy", "km.raw", "km500.bin"):
        assert np.array_equal(load_kmeans(tmp_path / name, dim=dim, n_clusters=500), centroids), name

    # A pickle that would run code is refused.
    (tmp_path / "evil.bin").write_bytes(b"\x80\x04cos\nsystem\n(S'true'\ntR.")
    with pytest.raises(Exception, match="refusing"):
        load_kmeans(tmp_path / "evil.bin", dim=dim)

    tokenizer = load_speech_tokenizer(tmp_path / "hubert", tmp_path / "km500.bin", layer=2)
    samples = np.random.default_rng(2).standard_normal(16000 * 3).astype(np.float32) * 0.1
    units = tokenizer.encode(samples)
    assert abs(len(units) - 75) <= 1 and int(units.max()) < 500
    # Nearest centroid of the layer's features, computed independently.
    with torch.no_grad():
        feats = hubert(torch.from_numpy(samples)[None], output_hidden_states=True).hidden_states[2][0]
    assert torch.equal(units, torch.cdist(feats, torch.from_numpy(centroids)).argmin(-1))


def test_kmeans_from_real_scikit_learn_pickle(tmp_path):
    pytest.importorskip("sklearn")
    import joblib
    from sklearn.cluster import MiniBatchKMeans

    from ivbench.models.groupformer.speech_tokenizer import load_kmeans

    data = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
    km = MiniBatchKMeans(n_clusters=20, n_init=1, random_state=0).fit(data)
    joblib.dump(km, tmp_path / "km.bin")
    assert np.allclose(load_kmeans(tmp_path / "km.bin", dim=8), km.cluster_centers_)


def _hubert_tokenizer(layer, **shape):
    from transformers import HubertConfig, HubertModel

    from ivbench.models.groupformer.speech_tokenizer import SpeechTokenizer

    torch.manual_seed(0)
    hubert = HubertModel(HubertConfig(**{**SHAPES["tiny"]["hubert"], "num_hidden_layers": 3, **shape})).eval()
    centroids = np.random.default_rng(3).standard_normal((50, hubert.config.hidden_size))
    return SpeechTokenizer(hubert, centroids, layer)


@pytest.mark.parametrize("stable", [False, True], ids=["base-layout", "large-layout"])
def test_tokenizer_runs_only_the_layers_it_quantises(stable):
    """Features up to layer k equal the whole model's `hidden_states[k]`, for every k, in both
    HuBERT layouts (base: norm before the layers; large: pre-norm layers)."""
    shape = dict(do_stable_layer_norm=True, feat_extract_norm="layer") if stable else {}
    samples = np.random.default_rng(4).standard_normal(16000).astype(np.float32)
    for layer in range(4):
        tokenizer = _hubert_tokenizer(layer, **shape)
        with torch.no_grad():
            whole = tokenizer.hubert(torch.from_numpy(samples)[None], output_hidden_states=True).hidden_states
            assert torch.allclose(tokenizer.layer_features(tokenizer.conv_features(samples)), whole[layer],
                                  atol=1e-5), layer
        ran: list[int] = []
        hooks = [block.register_forward_hook(lambda *_, i=i, ran=ran: ran.append(i))
                 for i, block in enumerate(tokenizer.hubert.encoder.layers)]
        tokenizer.encode(samples)
        for hook in hooks:
            hook.remove()
        assert ran == list(range(layer))


@pytest.mark.parametrize("attention, conv_norm, normalize",
                         [("sdpa", "group", False), ("eager", "group", False), ("sdpa", "layer", True)])
def test_graphed_tokenizer_gives_the_units_of_the_unpadded_turn(attention, conv_norm, normalize):
    """Samples padded up to a frame bucket, the padding kept out of the input normalisation,
    the first conv layer's group norm and attention, give the features and units of the exact
    turn (base layout: group norm; the other: per-frame layer norms); turns past the largest
    bucket run op by op."""
    from ivbench.models.groupformer.speech_tokenizer import GraphedSpeechTokenizer

    tokenizer = _hubert_tokenizer(2, feat_extract_norm=conv_norm)
    tokenizer.normalize = normalize
    tokenizer.hubert.config._attn_implementation = "flash_attention_2"  # takes no padding mask
    assert GraphedSpeechTokenizer(tokenizer).buckets == ()  # so every turn runs op by op
    tokenizer.hubert.config._attn_implementation = attention
    with torch.no_grad():  # random tiny weights barely mix frames: a missing mask would go unseen
        for block in tokenizer.hubert.encoder.layers:
            block.attention.q_proj.weight.mul_(5)
            block.attention.out_proj.weight.mul_(30)
    graphed = GraphedSpeechTokenizer(tokenizer, buckets=(8, 32), capture=False).prepare()
    assert graphed.n_units == 50 and sorted(graphed._calls) == [8, 32]
    rng = np.random.default_rng(5)
    frames = []
    for seconds in (2.0, 1.3, 1.0, 0.5, 0.3, 0.01):  # longest first: padding holds stale samples
        samples = rng.standard_normal(int(16000 * seconds)).astype(np.float32)
        want = tokenizer.encode(samples)
        got = graphed.encode(samples)
        assert torch.equal(got, want), seconds
        with torch.inference_mode():
            through_graph = graphed._run(samples)  # (features, units) as the graph body left them
            exact = tokenizer.layer_features(tokenizer.conv_features(samples))
        if through_graph is not None:
            assert torch.allclose(through_graph[0], exact, atol=1e-4), seconds
        frames.append(len(got))
    assert frames[0] > 32 and 8 < frames[2] < 32 and frames[-1] < 8  # every path taken
    assert graphed.verify() < 1e-5


def test_mhubert_25hz_shape():
    from ivbench.models.groupformer.config import HUBERT_25HZ_CONV

    samples = 16000 * 5
    for kernel, stride in zip(HUBERT_25HZ_CONV["conv_kernel"], HUBERT_25HZ_CONV["conv_stride"]):
        samples = (samples - kernel) // stride + 1
    assert samples == 124  # 5 s → 124 frames at 25 Hz (the conv stack's edges take one)


# ---- vocoder ---------------------------------------------------------------------------------

def _weight_normed(vocoder):
    """Weight-norm every conv as the released generator checkpoints store them."""
    import warnings

    from torch.nn.utils import weight_norm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.nn.utils.weight_norm is deprecated; the files use it
        for module in list(vocoder.modules()):
            if isinstance(module, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)) and not any(
                    module is m for m in vocoder.dur_predictor.modules()):
                weight_norm(module)
    return vocoder


def test_vocoder_loads_released_format(tmp_path):
    from ivbench.models.groupformer.vocoder import UnitHiFiGAN, load_vocoder

    cfg = SHAPES["tiny"]["vocoder"]
    torch.manual_seed(0)
    reference = _weight_normed(UnitHiFiGAN(cfg)).eval()
    state = reference.state_dict()
    for key in ("dict.weight", "conv_pre.weight_g", "conv_pre.weight_v", "ups.0.weight_v",
                "resblocks.0.convs1.2.weight_g", "resblocks.4.convs2.0.bias", "conv_post.weight_v",
                "dur_predictor.conv1.0.weight", "dur_predictor.ln1.weight", "dur_predictor.proj.weight"):
        assert key in state, key
    torch.save({"generator": state}, tmp_path / "g_00500000")
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    loaded = load_vocoder(tmp_path / "g_00500000", tmp_path / "config.json")
    units = torch.randint(0, 500, (1, 30))
    with torch.no_grad():
        expected = reference(units)
    got = loaded(units)
    assert got.shape == (1, 30 * 640)
    assert torch.allclose(got, expected, atol=1e-5)


def test_twist_vocoder_shapes():
    from ivbench.models.groupformer.config import VOCODER_25HZ
    from ivbench.models.groupformer.vocoder import UnitHiFiGAN

    model = UnitHiFiGAN(VOCODER_25HZ)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert model.hop == 640
    assert shapes["dict.weight"] == (500, 128)
    assert shapes["conv_pre.weight"] == (512, 128, 7)
    assert shapes["ups.0.weight"] == (512, 256, 11)  # ConvTranspose1d: (in, out, kernel)
    assert shapes["ups.4.weight"] == (32, 16, 4)
    assert shapes["resblocks.2.convs1.0.weight"] == (256, 256, 11)
    assert shapes["conv_post.weight"] == (1, 16, 7)
    assert len(model.resblocks) == 15


def _signal_vocoder():
    """The tiny vocoder with variance-keeping weights, so its output varies like speech."""
    from ivbench.models.groupformer.vocoder import random_vocoder

    vocoder = random_vocoder(SHAPES["tiny"]["vocoder"], seed=3)
    with torch.no_grad():
        for m in vocoder.modules():
            if isinstance(m, torch.nn.Conv1d):
                m.weight.normal_(0, 1 / math.sqrt(m.weight.shape[1] * m.weight.shape[2]))
            elif isinstance(m, torch.nn.ConvTranspose1d):
                m.weight.normal_(0, 1 / math.sqrt(m.weight.shape[0] * m.weight.shape[2] / m.stride[0]))
    return vocoder


def _stream(vocoder, units, group, **kw):
    from ivbench.models.groupformer.vocoder import StreamingVocoder

    stream = StreamingVocoder(vocoder, **kw)
    chunks = [c for s in range(0, len(units), group) for c in [stream.push(units[s:s + group])] if c is not None]
    last = stream.flush()
    return chunks + ([last] if last is not None else [])


def test_streaming_vocoder_matches_whole_utterance():
    vocoder = _signal_vocoder()
    units = np.random.default_rng(0).integers(0, 500, 83).tolist()
    whole = vocoder.synthesize(units).numpy()
    scale = whole.std()
    assert scale > 0.05
    rf = vocoder.receptive_field()

    # Look-ahead and context covering the receptive field: equal everywhere, seams included.
    chunks = _stream(vocoder, units, G, chunk_groups=1, lookahead=rf, context=rf, fade=320)
    joined = np.concatenate(chunks)
    assert len(joined) == len(units) * 640
    assert np.abs(joined - whole).max() < 1e-4 * scale

    # A look-ahead of a few units: equal away from the seams, smooth across them.
    la, context, fade = 2, 8, 320
    chunks = _stream(vocoder, units, G, chunk_groups=4, lookahead=la, context=context, fade=fade)
    joined = np.concatenate(chunks)
    assert len(joined) == len(whole) and len(chunks) == 5  # 17 groups: 4 chunks of 4, then the rest
    assert len(chunks[0]) == (4 * G - la) * 640  # the first chunk waits only for its look-ahead
    away = np.ones(len(whole), bool)
    for seam in np.cumsum([len(c) for c in chunks])[:-1]:
        away[max(0, seam - (rf - la) * 640): seam + max(rf - context, 0) * 640 + fade] = False
    assert away.sum() > 0.3 * len(whole)
    assert np.abs(joined - whole)[away].max() < 1e-4 * scale
    # No click at the seams: sample-to-sample steps there are no larger than elsewhere.
    steps = np.abs(np.diff(joined))
    assert steps.max() <= np.abs(np.diff(whole)).max() * 1.5


def test_graphed_vocoder_streams_what_the_vocoder_streams():
    """The fixed-buffer vocoder (a CUDA graph per chunk length on a GPU; here the same body,
    uncaptured) gives the plain vocoder's chunks; inputs past its longest length go op by op."""
    from ivbench.models.groupformer.vocoder import GraphedVocoder, StreamingVocoder

    vocoder = _signal_vocoder()
    units = np.random.default_rng(1).integers(0, 500, 41).tolist()
    longest = StreamingVocoder.longest_input(G, chunk_groups=2, lookahead=2, context=8)
    graphed = GraphedVocoder(vocoder, longest).prepare()
    assert not graphed.capture and sorted(graphed._calls) == list(range(1, longest + 1))
    plain = _stream(vocoder, units, G, chunk_groups=2, lookahead=2, context=8, fade=320)
    fixed = _stream(graphed, units, G, chunk_groups=2, lookahead=2, context=8, fade=320)
    assert len(plain) == len(fixed) > 2
    for a, b in zip(plain, fixed):
        np.testing.assert_allclose(a, b, atol=1e-6)
    whole = graphed.synthesize(units)  # longer than any chunk: op by op
    np.testing.assert_allclose(whole.numpy(), vocoder.synthesize(units).numpy(), atol=1e-6)
    assert len(graphed._calls) == longest


# ---- training: the four tasks and the text-first chain, memorised ---------------------------

def _dialogues():
    from ivbench.models.groupformer.training import Exchange

    rng = np.random.default_rng(7)
    units = lambda n: rng.integers(0, 500, n).tolist()  # noqa: E731
    return [
        [Exchange("hello there", units(16), "hi, how are you?", units(22))],
        [Exchange("what time is it", units(14), "noon.", units(18)),
         Exchange("thanks", units(9), "any time.", units(15))],
    ]


@pytest.fixture(scope="module")
def trained():
    from ivbench.models.groupformer.model import GroupFormer
    from ivbench.models.groupformer.training import all_conversations, train

    model = GroupFormer.random("tiny", group_size=G, seed=1)
    dialogues = _dialogues()
    conversations = [c for d in dialogues for c in all_conversations(d, model.config.system_prompts)]
    assert len(conversations) == 12  # 2 dialogues × (4 tasks + 2 text-first)
    history = train(model, conversations, steps=200, lr=3e-3, seed=0)
    return model, dialogues, history


def _generate(model, messages, *, speech_out, text_out, decoder=None):
    from ivbench.models.groupformer.generation import Decoder, Limits, Sampling

    decoder = decoder or Decoder(model)
    rendered = render(model.tokenizer, messages, G, model.config.pad_unit, add_generation_prompt=True)
    tokens, units = [], []
    for event in decoder.respond(rendered, speech_out=speech_out, text_out=text_out,
                                 limits=Limits(max_groups=12, max_new_tokens=40), sampling=Sampling()):
        if event.kind == "token":
            tokens.append(event.value)
        elif event.kind == "group":
            units.extend(event.value)
    return model.tokenizer.decode(tokens, skip_special_tokens=True), units, decoder


def test_training_drives_the_loss_down(trained):
    _, _, history = trained
    first = np.mean([h["loss"] for h in history[:5]])
    last = np.mean([h["loss"] for h in history[-5:]])
    assert last < 0.02 * first and last < 0.15, (first, last)
    assert history[-1]["group"] < 0.1 and history[-1]["text"] < 0.1


@pytest.mark.parametrize("task,text_first", [("s2s", False), ("s2s", True), ("t2s", False), ("t2s", True),
                                             ("s2t", False), ("t2t", False)])
def test_generation_reproduces_memorised_replies(trained, task, text_first):
    from ivbench.models.groupformer.training import conversation

    model, dialogues, _ = trained
    speech_out = task.endswith("s")
    for dialogue in dialogues:
        full = conversation(dialogue, task, model.config.system_prompts, text_first=text_first)
        decoder = None
        for turn, exchange in enumerate(dialogue):
            prompt = full[: 2 + 2 * turn]  # system, (user, assistant)*, user
            text, units, decoder = _generate(model, prompt, speech_out=speech_out,
                                             text_out=text_first or not speech_out, decoder=decoder)
            if speech_out:
                assert units == list(exchange.reply_units), (task, text_first, turn)
            if text_first or not speech_out:
                assert text == exchange.reply_text, (task, text_first, turn)
            else:
                assert text == ""
            if turn:  # the earlier turns came from the KV cache
                assert decoder.stats.cached_tokens > 0


def _engine(model, kind):
    from ivbench.models.groupformer.engines import DynamicEngine, StaticEngine

    if kind == "dynamic":
        return DynamicEngine(model)
    # Small buckets, windows and capacity: prefills are padded, the longest run uncaptured, and
    # dialogues move from window to window.
    return StaticEngine(model, capacity=400, graphs=kind == "graphs", buckets=(8, 16, 64),
                        windows=(32, 64)).prepare()


@pytest.mark.parametrize("kind", ["dynamic", "static", "graphs"])
def test_cached_generation_agrees_with_full_forward(trained, kind):
    """Hidden states from the step-by-step KV-cached path equal one full forward pass, with
    every engine (`graphs` off CUDA: the graph bodies on their fixed buffers, uncaptured)."""
    from ivbench.models.groupformer.generation import Decoder
    from ivbench.models.groupformer.training import conversation

    model, dialogues, _ = trained
    messages = conversation(dialogues[1], "s2s", model.config.system_prompts)
    rendered = render(model.tokenizer, messages, G, model.config.pad_unit)
    with torch.no_grad():
        full = model(torch.tensor([rendered.ids]), torch.tensor(rendered.groups))[0]
    decoder = Decoder(model, _engine(model, kind))
    cut = len(rendered.ids) // 2
    prefix_groups = rendered.groups[: rendered.ids[:cut].count(model.special.speech)]
    from ivbench.models.groupformer.chat import Rendered

    hidden = decoder.prefill(Rendered(rendered.ids[:cut], prefix_groups))
    assert torch.allclose(hidden[0], full[cut - 1], atol=1e-4)
    it = iter(rendered.groups[len(prefix_groups):])
    for p in range(cut, len(rendered.ids)):
        token = rendered.ids[p]
        hidden = decoder.feed_group(next(it)) if token == model.special.speech else decoder.feed_token(token)
        assert torch.allclose(hidden[0], full[p], atol=1e-4), p

    # A dialogue that departs from the cached one mid-way: the cache is cut back to the common
    # prefix and the rest recomputed, giving what a fresh pass gives.
    changed = conversation(dialogues[1], "t2s", model.config.system_prompts)
    changed[3].content = ["a different text reply"]
    other = render(model.tokenizer, changed, G, model.config.pad_unit)
    hidden = decoder.prefill(other)
    assert 0 < decoder.stats.cached_tokens < len(other.ids) - 1
    assert decoder.engine.length == len(decoder.cached) == len(other.ids)
    if kind == "dynamic":
        assert decoder.engine.cache.get_seq_length() == len(other.ids)
    with torch.no_grad():
        fresh = model(torch.tensor([other.ids]), torch.tensor(other.groups))[0, -1]
    assert torch.allclose(hidden[0], fresh, atol=1e-4)


def test_one_static_engine_shared_by_interleaved_dialogues(trained):
    """Two decoders (sessions) take turns on one graphs engine: each finds the other's dialogue
    in the buffers, starts again from position 0, and still reproduces its memorised replies."""
    from ivbench.models.groupformer.generation import Decoder
    from ivbench.models.groupformer.training import conversation

    model, dialogues, _ = trained
    engine = _engine(model, "graphs")
    fulls = [conversation(d, "s2s", model.config.system_prompts, text_first=True) for d in dialogues]
    decoders = [Decoder(model, engine) for _ in dialogues]
    for turn in range(min(len(d) for d in dialogues)):
        for full, dialogue, decoder in zip(fulls, dialogues, decoders):
            text, units, _ = _generate(model, full[: 2 + 2 * turn], speech_out=True, text_out=True,
                                       decoder=decoder)
            assert units == list(dialogue[turn].reply_units) and text == dialogue[turn].reply_text
            assert engine.owner is decoder and decoder.stats.cached_tokens == 0  # the other one was there
    # Alone, a decoder keeps its dialogue in the buffers between turns.
    longest = max(range(len(dialogues)), key=lambda i: len(dialogues[i]))
    assert len(dialogues[longest]) > 1
    decoder = Decoder(model, engine)
    _generate(model, fulls[longest][:2], speech_out=True, text_out=True, decoder=decoder)
    _, units, _ = _generate(model, fulls[longest][:4], speech_out=True, text_out=True, decoder=decoder)
    assert decoder.stats.cached_tokens > 0 and units == list(dialogues[longest][1].reply_units)


def test_graphs_engine_in_bfloat16():
    """The GPU's dtype, here: the graphed engine (bodies recorded and replayed) stays within the
    16-bit tolerance of op-by-op decoding across a window change, and a bf16 session speaks."""
    from ivbench.models.groupformer.engines import StaticEngine
    from ivbench.models.groupformer.model import GroupFormer
    from ivbench.systems.groupformer import GroupFormerSystem

    model = GroupFormer.random("tiny", group_size=G, seed=0, dtype="bfloat16")
    engine = StaticEngine(model, capacity=128, graphs=True, buckets=(8, 16), windows=(32, 64)).prepare()
    assert engine.verify(positions=14, steps=20) < 0.1  # a graphed prefill (bucket 16), steps from window 32 into 64
    system = GroupFormerSystem(init="random", size="tiny", dtype="bfloat16", engine="graphs", max_groups=3,
                               min_groups=3, max_positions=300)
    system.load("cpu")
    session = system.new_session()
    for index in range(2):
        out = _events(session, _turn("s2s", index=index))
        assert sum(len(a) for a in out["audio"]) == 3 * G * 640
    assert system.model.dtype == torch.bfloat16


def test_static_engine_checks(tiny):
    from ivbench.models.groupformer.engines import (DynamicEngine, StaticEngine, UnsupportedModel,
                                                     make_engine)

    assert isinstance(make_engine(tiny, "auto"), DynamicEngine)  # on the CPU
    with pytest.raises(ValueError, match="use auto, dynamic, static or graphs"):
        make_engine(tiny, "fast")
    engine = make_engine(tiny, "graphs", capacity=40)
    assert engine.name == "static-graphs" and engine.verify() < 1e-4
    with pytest.raises(ValueError, match="needs 41 positions; the static KV cache holds 40"):
        engine.forward(torch.zeros(1, 41, tiny.config.llm_hidden_size))
    from ivbench.models.groupformer.generation import Decoder

    long = render(tiny.tokenizer, [Message("user", [Speech(tuple(range(300)))])], G, tiny.config.pad_unit,
                  add_generation_prompt=True)
    with pytest.raises(ValueError, match="at most 40 fit .*max_positions"):
        Decoder(tiny, engine).prefill(long)

    # Another backbone family (Llama) on the same engine; a sliding-window one is refused.
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    from ivbench.models.groupformer.chat import build_fallback_tokenizer
    from ivbench.models.groupformer.config import GroupFormerConfig
    from ivbench.models.groupformer.model import GroupFormer

    def other(llm_class, config_class, **window):
        tokenizer = build_fallback_tokenizer()
        llm = llm_class(config_class(vocab_size=len(tokenizer) + 8, hidden_size=64, intermediate_size=128,
                                     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                     max_position_embeddings=1024, **window))
        heads = GroupFormerConfig(group_size=G, unit_dim=16, adaptor_hidden=32, group_layers=1, group_width=32,
                                  group_heads=2, group_ffn=64)
        return GroupFormer(heads, llm, tokenizer).eval()

    llama = StaticEngine(other(LlamaForCausalLM, LlamaConfig), capacity=256, graphs=True, windows=(16, 64)).prepare()
    assert llama.windows == (16, 64, 256) and llama.verify() < 1e-4  # from window 16 into 64
    with pytest.raises(UnsupportedModel, match="sliding window 16"):
        StaticEngine(other(MistralForCausalLM, MistralConfig, sliding_window=16))


def test_recorded_ops_replay_as_a_captured_graph_would(monkeypatch):
    """Off CUDA the suite replays graph bodies as recordings (conftest): a replay reads the current
    contents of the tensors the body used, but Python values and the tensors themselves stay
    those of the recording — as in a CUDA graph."""
    from ivbench.models.groupformer.cuda_graphs import RecordedOps, Replay

    scale = {"k": 2.0}
    x, out = torch.arange(4.0), torch.zeros(3)
    inputs = {"x": x}
    call = Replay(lambda: out.copy_(inputs["x"][1:] * scale["k"] + 1), capture=False)
    assert isinstance(call.graph, RecordedOps)
    x.copy_(torch.tensor([9.0, 1.0, 2.0, 3.0]))
    scale["k"], inputs["x"] = 10.0, torch.full((4,), 5.0)
    out.zero_()
    call()
    assert out.tolist() == [3.0, 5.0, 7.0]  # x's new contents, × 2 + 1 as recorded
    monkeypatch.setenv("IVBENCH_EMULATE_GRAPHS", "0")
    direct = Replay(lambda: out.copy_(inputs["x"][1:] * scale["k"] + 1), capture=False)
    assert direct.graph is None
    direct()
    assert out.tolist() == [51.0, 51.0, 51.0]


def test_graph_bodies_never_wait_for_the_host(tiny):
    """Everything a CUDA graph would hold — the LLM calls and heads of the graphs engine, the
    tokenizer's layers and k-means, the vocoder — records without an op that a capture refuses
    (one that waits for the device or copies host values in); planted ones fail the recording."""
    from ivbench.models.groupformer.cuda_graphs import RecordedOps
    from ivbench.models.groupformer.engines import StaticEngine
    from ivbench.models.groupformer.speech_tokenizer import GraphedSpeechTokenizer
    from ivbench.models.groupformer.vocoder import GraphedVocoder

    engine = StaticEngine(tiny, capacity=64, graphs=True, buckets=(8,), windows=(16,)).prepare()
    tokenizer = GraphedSpeechTokenizer(tiny.speech_tokenizer, buckets=(8,)).prepare()
    vocoder = GraphedVocoder(tiny.vocoder, 3).prepare()
    bodies = {f"llm T={t} window={w}": replay for (t, w), replay in engine._calls.items()}
    bodies["heads"] = engine._heads[0]
    bodies.update({f"tokenizer {n} frames": found[0] for n, found in tokenizer._calls.items()})
    bodies.update({f"vocoder {n} units": found[0] for n, found in vocoder._calls.items()})
    assert len(bodies) == 2 * 2 + 1 + 1 + 3  # (T 1, 8) × (window 16, 64), heads, tokenizer, vocoder
    for name, replay in bodies.items():
        assert isinstance(replay.graph, RecordedOps) and len(replay.graph.steps) > 10, name
    x = torch.ones(3)
    for planted, op in ((lambda: x.sum().item(), "_local_scalar_dense"), (lambda: x[x > 0], "index"),
                        (lambda: bool(x.any()), "_local_scalar_dense"),
                        (lambda: x + torch.tensor([1.0, 2.0, 3.0]), "lift_fresh")):
        with pytest.raises(RuntimeError, match=f"aten.{op} in a graph body"):
            RecordedOps(planted)


def test_from_llm_turns_a_pretrained_causal_lm_into_a_groupformer(tmp_path):
    """The start of training (the paper: Qwen2-7B-Instruct): a saved causal LM and tokenizer
    without speech tokens get `<sosp>`, `<eosp>`, `<speech>`, embeddings for them and new heads."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from ivbench.models.groupformer.chat import CHATML_TEMPLATE, SOSP, SPEECH, Message, Speech, _bytes_to_unicode
    from ivbench.models.groupformer.config import GroupFormerConfig
    from ivbench.models.groupformer.model import GroupFormer

    # A chat model's tokenizer as it comes: byte-level, ChatML, no speech tokens.
    core = Tokenizer(models.BPE(vocab={char: byte for byte, char in _bytes_to_unicode().items()}, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core)
    tokenizer.add_special_tokens({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
                                  "additional_special_tokens": ["<|im_start|>"]})
    tokenizer.chat_template = CHATML_TEMPLATE
    assert SPEECH not in tokenizer.get_vocab()
    torch.manual_seed(0)
    llm = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                       num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))
    llm.save_pretrained(tmp_path / "llm")
    tokenizer.save_pretrained(tmp_path / "llm")
    heads = GroupFormerConfig(group_size=G, unit_dim=8, adaptor_hidden=16, group_layers=1, group_width=16,
                              group_heads=2, group_ffn=32)
    model = GroupFormer.from_llm(tmp_path / "llm", heads).eval()
    assert len(model.tokenizer) == len(tokenizer) + 3 and {SOSP, SPEECH} <= set(model.tokenizer.get_vocab())
    assert model.llm.get_input_embeddings().num_embeddings >= len(model.tokenizer)
    rendered = model.render([Message("user", [Speech(tuple(range(2 * G)))])], add_generation_prompt=True)
    assert rendered.ids.count(model.special.speech) == 2 and len(rendered.groups) == 2
    with torch.no_grad():
        hidden = model(torch.tensor([rendered.ids]), torch.tensor(rendered.groups))
    assert hidden.shape == (1, len(rendered.ids), 32)
    assert model.unit_logits(hidden[0, -1:]).shape == (1, G, heads.n_units + 1)


def test_save_and_load_give_identical_outputs(trained, tmp_path):
    from ivbench.models.groupformer.model import GroupFormer
    from ivbench.models.groupformer.training import conversation

    model, dialogues, _ = trained
    model.save_pretrained(tmp_path / "ckpt")
    for name in ("groupformer.json", "heads.safetensors", "llm/config.json", "llm/model.safetensors",
                 "llm/tokenizer.json", "hubert/config.json", "kmeans.npy", "vocoder/generator.pt",
                 "vocoder/config.json"):
        assert (tmp_path / "ckpt" / name).is_file(), name
    loaded = GroupFormer.from_pretrained(tmp_path / "ckpt")
    messages = conversation(dialogues[0], "s2s", model.config.system_prompts)
    rendered = render(model.tokenizer, messages, G, model.config.pad_unit)
    assert render(loaded.tokenizer, messages, G, loaded.config.pad_unit).ids == rendered.ids
    args = (torch.tensor([rendered.ids]), torch.tensor(rendered.groups))
    with torch.no_grad():
        h1, h2 = model(*args), loaded(*args)
        assert torch.equal(h1, h2)
        assert torch.equal(model.unit_logits(h1[0]), loaded.unit_logits(h2[0]))
        assert torch.equal(model.token_logits(h1), loaded.token_logits(h2))
    samples = np.random.default_rng(3).standard_normal(16000).astype(np.float32) * 0.1
    assert torch.equal(model.speech_tokenizer.encode(samples), loaded.speech_tokenizer.encode(samples))
    units = list(range(0, 500, 37))
    assert torch.equal(model.vocoder.synthesize(units), loaded.vocoder.synthesize(units))
    prompt = messages[:2]
    assert _generate(model, prompt, speech_out=True, text_out=True)[:2] == \
        _generate(loaded, prompt, speech_out=True, text_out=True)[:2]
    assert loaded.config.untrained and loaded.config.shape == "tiny"

    # The speech tokenizer and vocoder files may be given from elsewhere, in the released formats.
    import copy

    released = _weight_normed(copy.deepcopy(model.vocoder))
    torch.save({"generator": released.state_dict()}, tmp_path / "hifigan.pt")
    (tmp_path / "hifigan.json").write_text(json.dumps(model.vocoder.cfg))
    np.save(tmp_path / "km.npy", model.speech_tokenizer.centroids.numpy())
    other = GroupFormer.from_pretrained(tmp_path / "ckpt", kmeans=str(tmp_path / "km.npy"),
                                        vocoder=str(tmp_path / "hifigan.pt"),
                                        vocoder_config=str(tmp_path / "hifigan.json"))
    assert torch.allclose(other.vocoder.synthesize(units), model.vocoder.synthesize(units), atol=1e-5)
    with pytest.raises(FileNotFoundError):
        GroupFormer.from_pretrained(tmp_path / "ckpt", vocoder=str(tmp_path / "missing.pt"))

    # The same folder as a system: a text turn gets the memorised spoken reply, streamed.
    from ivbench.systems.groupformer import GroupFormerSystem

    system = GroupFormerSystem(checkpoint=str(tmp_path / "ckpt"))
    assert system.untrained  # saved from random initial weights, whatever it learnt since
    system.load("cpu")
    for dialogue in dialogues:
        session = system.new_session()
        for index, exchange in enumerate(dialogue):
            out = _events(session, _turn("t2s", text=exchange.user_text, index=index))
            assert session.last_stats["ended_by"] in ("end unit", "eosp")
            assert sum(len(a) for a in out["audio"]) == len(exchange.reply_units) * 640
            assert session.messages[-1].content == [Speech(tuple(exchange.reply_units))]
        assert [m.role for m in session.messages] == ["system"] + ["user", "assistant"] * len(dialogue)


# ---- sessions and the runner -----------------------------------------------------------------

def _turn(mode, text="hello", seconds=1.5, index=0):
    from ivbench.types import Audio, Mode, TurnInput

    mode = Mode.parse(mode)
    audio = None
    if mode.speech_in:
        t = np.arange(int(22050 * seconds)) / 22050
        audio = Audio((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 22050)
    return TurnInput(mode=mode, text=text, audio=audio, turn_index=index)


def _events(session, turn):
    from ivbench.types import AudioChunk, StageMark, TextDelta

    out = {"audio": [], "text": "", "stages": []}
    for event in session.respond(turn):
        if isinstance(event, AudioChunk):
            assert event.sample_rate == 16000 and event.samples.dtype == np.float32
            assert isinstance(event.samples, np.ndarray)
            out["audio"].append(event.samples)
        elif isinstance(event, TextDelta):
            out["text"] += event.text
        elif isinstance(event, StageMark):
            out["stages"].append(event.name)
    return out


def test_sessions_in_every_mode_and_text_first():
    from ivbench.systems.groupformer import GroupFormerSystem, GroupFormerTextFirst

    direct = GroupFormerSystem(init="random", size="tiny", max_groups=6, max_new_tokens=5)
    direct.load("cpu")
    session = direct.new_session()
    first = _events(session, _turn("s2s"))
    assert first["text"] == "" and "first_group" in first["stages"] and "speech_tokenized" in first["stages"]
    assert sum(len(a) for a in first["audio"]) == 6 * G * 640
    assert len(first["audio"]) > 1  # streamed, not one block
    roles = [m.role for m in session.messages]
    assert roles == ["system", "user", "assistant"]
    assert abs(len(session.messages[1].content[0].units) - 1.5 * 25) <= 1  # the user's speech, 25 units/s
    second = _events(session, _turn("s2s", index=1))
    assert sum(len(a) for a in second["audio"]) == 6 * G * 640
    assert session.last_stats["cached_tokens"] > 0  # the first turn stayed in the KV cache
    assert session.last_stats["groups"] == 6
    for mode in ("s2t", "t2t"):
        out = _events(direct.new_session(), _turn(mode))
        assert out["audio"] == [] and len(out["text"]) > 0
    out = _events(direct.new_session(), _turn("t2s"))
    assert sum(len(a) for a in out["audio"]) == 6 * G * 640

    chain = GroupFormerTextFirst(init="random", size="tiny", max_groups=6, max_new_tokens=5)
    chain.load("cpu")
    session = chain.new_session()
    out = _events(session, _turn("s2s"))
    assert out["stages"].index("text_done") < out["stages"].index("first_group")
    assert session.last_stats["text_tokens"] == 5 and len(out["text"]) > 0
    assert sum(len(a) for a in out["audio"]) == 6 * G * 640
    assert chain.describe()["label"] == "untrained — latency only"
    assert chain.describe()["engine"] == "dynamic"  # auto, on the CPU


def test_session_replies_equal_with_every_engine():
    from ivbench.systems.groupformer import GroupFormerSystem

    replies = {}
    for engine in ("dynamic", "static", "graphs"):
        system = GroupFormerSystem(init="random", size="tiny", max_groups=4, max_new_tokens=5, engine=engine,
                                   max_positions=500)
        system.load("cpu")
        assert system.describe()["engine"] == {"graphs": "static-graphs"}.get(engine, engine)
        assert (type(system.unit_tokenizer).__name__ == "GraphedSpeechTokenizer") is (engine == "graphs")
        session = system.new_session()
        replies[engine] = []
        for index, mode in enumerate(("s2s", "t2t", "s2s")):
            out = _events(session, _turn(mode, index=index))
            # the user's turn as heard (units) and the reply
            replies[engine].append((out["text"], session.messages[-2].content, session.messages[-1].content))
        assert session.last_stats["cached_tokens"] > 0
    assert replies["static"] == replies["dynamic"] == replies["graphs"]
    with pytest.raises(ValueError, match="engine 'fast'"):
        GroupFormerSystem(init="random", size="tiny", engine="fast")


def test_a_failed_graph_capture_leaves_that_part_op_by_op(monkeypatch):
    """With engine=auto a part whose capture fails runs op by op, and describe() says why; a
    forced engine=graphs fails the load instead."""
    from ivbench.models.groupformer.speech_tokenizer import GraphedSpeechTokenizer
    from ivbench.systems.groupformer import GroupFormerSystem

    def fail(self):
        raise RuntimeError("operation not permitted when stream is capturing")

    system = GroupFormerSystem(init="random", size="tiny", max_groups=2, max_new_tokens=2, engine="graphs",
                               max_positions=300)
    system.load("cpu")
    assert type(system.unit_tokenizer) is GraphedSpeechTokenizer
    monkeypatch.setattr(GraphedSpeechTokenizer, "prepare", fail)
    with pytest.raises(RuntimeError, match="stream is capturing"):
        system._graph_parts(system.model)
    system.engine_kind = "auto"  # as on a GPU, where auto graphs these parts
    tokenizer, vocoder = system._graph_parts(system.model)
    assert tokenizer is system.model.speech_tokenizer and type(vocoder).__name__ == "GraphedVocoder"
    assert system.describe()["graph_fallbacks"] == {
        "speech tokenizer": "operation not permitted when stream is capturing"}


def test_ivbench_eval_runs_the_demo_task(tmp_path):
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "eval", "--system", "groupformer:init=random,size=tiny",
         "--limit", "2", "--out", str(out), "--no-progress", "--no-score"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert records and all(r["status"] == "ok" for r in records)
    assert all(r["mode"] == "s2s" and r["first_audio_ms"] > 0 for r in records)
    assert all(abs(r["reply_duration_s"] - 50 * G * 0.04) < 1e-6 for r in records)  # max_groups=50
    assert all("first_group" in r["stages"] for r in records)
    assert all(r["stage_data"]["speech_tokenized"]["units"] > 0 for r in records)  # 25 per second of speech
    manifest = json.loads((out / "manifest.json").read_text())
    system = manifest["systems"]["groupformer:init=random,size=tiny"]
    assert system["untrained"] is True and system["label"] == "untrained — latency only"
    loaded = manifest["sessions"][-1]["loaded"]["groupformer:init=random,size=tiny"]
    assert loaded["engine"] == "dynamic" and loaded["model"]["shape"] == "tiny"  # what ran, once loaded
