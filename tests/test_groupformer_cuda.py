"""GroupFormer's CUDA paths — graphs captured and replayed — where torch sees a GPU; skipped
elsewhere (test_groupformer.py runs the same graph bodies uncaptured on the CPU).

IVBENCH_TEST_DEVICE=cpu runs these tests on the CPU, to check the tests themselves."""
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from test_groupformer import G, _dialogues, _generate, _signal_vocoder, _stream  # noqa: E402

DEVICE = os.environ.get("IVBENCH_TEST_DEVICE", "cuda")
CAPTURED = DEVICE == "cuda"
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def trained_on_device():
    """The memorising tiny model of test_groupformer.py, in float32 on the device."""
    from ivbench.models.groupformer.model import GroupFormer
    from ivbench.models.groupformer.training import all_conversations, train

    model = GroupFormer.random("tiny", group_size=G, seed=1)
    dialogues = _dialogues()
    conversations = [c for d in dialogues for c in all_conversations(d, model.config.system_prompts)]
    train(model, conversations, steps=200, lr=3e-3, seed=0)
    return model.place(DEVICE, torch.float32).eval(), dialogues


def test_captured_engine_reproduces_memorised_replies(trained_on_device):
    from ivbench.models.groupformer.engines import make_engine
    from ivbench.models.groupformer.generation import Decoder
    from ivbench.models.groupformer.training import conversation

    model, dialogues = trained_on_device
    engine = make_engine(model, "graphs", capacity=512)
    assert engine.capture is CAPTURED and engine.verified_difference < 1e-3
    for text_first in (False, True):
        for dialogue in dialogues:
            full = conversation(dialogue, "s2s", model.config.system_prompts, text_first=text_first)
            decoder = Decoder(model, engine)
            for turn, exchange in enumerate(dialogue):
                text, units, _ = _generate(model, full[: 2 + 2 * turn], speech_out=True, text_out=text_first,
                                           decoder=decoder)
                assert units == list(exchange.reply_units), (text_first, turn)
                assert text == (exchange.reply_text if text_first else "")
                if turn:
                    assert decoder.stats.cached_tokens > 0


def test_auto_engine_on_a_qwen2_shape_in_bfloat16():
    """The default on a GPU: the captured engine, within the bf16 tolerance of the dynamic one."""
    from ivbench.models.groupformer.engines import make_engine
    from ivbench.models.groupformer.model import GroupFormer

    size = "qwen2-0.5b" if CAPTURED else "tiny"
    model = GroupFormer.random(size, group_size=G, seed=0, device=DEVICE, dtype="bfloat16")
    engine = make_engine(model, "auto", capacity=1024)
    if CAPTURED:
        assert engine.name == "cuda-graphs", getattr(engine, "fallback_reason", None)
        assert engine.verified_difference < 0.1


def test_captured_vocoder_streams_what_the_vocoder_streams():
    from ivbench.models.groupformer.vocoder import GraphedVocoder, StreamingVocoder

    vocoder = _signal_vocoder().to(DEVICE)
    units = np.random.default_rng(1).integers(0, 500, 41).tolist()
    longest = StreamingVocoder.longest_input(G, chunk_groups=1, lookahead=2, context=8)
    graphed = GraphedVocoder(vocoder, longest).prepare()
    assert graphed.capture is CAPTURED
    plain = _stream(vocoder, units, G, chunk_groups=1, lookahead=2, context=8, fade=320)
    fixed = _stream(graphed, units, G, chunk_groups=1, lookahead=2, context=8, fade=320)
    assert len(plain) == len(fixed) > 2
    for a, b in zip(plain, fixed):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_captured_tokenizer_gives_the_units_of_the_tokenizer():
    from ivbench.models.groupformer.config import SHAPES
    from ivbench.models.groupformer.speech_tokenizer import GraphedSpeechTokenizer, random_speech_tokenizer

    tokenizer = random_speech_tokenizer(SHAPES["tiny"]["hubert"], 2, 50).to(DEVICE)
    graphed = GraphedSpeechTokenizer(tokenizer, buckets=(8, 32)).prepare()
    assert graphed.capture is CAPTURED and graphed.verify() < 1e-3
    rng = np.random.default_rng(6)
    frames = differ = 0
    for seconds in (2.0, 1.3, 1.0, 0.5, 0.3, 0.01):  # longest first: padding holds stale frames
        samples = rng.standard_normal(int(16000 * seconds)).astype(np.float32)
        got, want = graphed.encode(samples), tokenizer.encode(samples)
        assert got.shape == want.shape, seconds
        frames += len(want)
        differ += int((got != want).sum())
    # On a GPU the masked (graphed) and unmasked attention may take different kernels, so a unit
    # whose two nearest centroids are all but tied may flip (test_groupformer.py checks the mask
    # itself, with attention strong enough to show a wrong one).
    assert frames > 100 and differ <= (1 if CAPTURED else 0)


def test_system_on_the_device_replies_alike_with_both_engines():
    from ivbench.systems.groupformer import GroupFormerSystem
    from ivbench.types import Audio, Mode, TurnInput
    from test_groupformer import _events

    def turn(mode, index):
        mode = Mode.parse(mode)
        t = np.arange(24000) / 16000  # 16 kHz: no resampling (GPU machines may lack soxr)
        audio = Audio((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000) if mode.speech_in else None
        return TurnInput(mode=mode, text="hello", audio=audio, turn_index=index)

    replies = {}
    for engine in ("dynamic", "graphs"):
        system = GroupFormerSystem(init="random", size="tiny", max_groups=4, max_new_tokens=5, engine=engine,
                                   device=DEVICE, dtype="float32", max_positions=500)
        system.load(DEVICE)
        if engine == "graphs":  # the tokenizer's layers and the vocoder are graphed too
            assert system.unit_tokenizer.capture is CAPTURED and system.unit_vocoder.capture is CAPTURED
        session = system.new_session()
        out = [_events(session, turn(mode, i)) for i, mode in enumerate(("s2s", "t2t", "s2s"))]
        replies[engine] = [m.content for m in session.messages]
        assert sum(len(a) for a in out[0]["audio"]) == 4 * G * 640
        assert session.last_stats["cached_tokens"] > 0
        system.close()
    assert replies["graphs"] == replies["dynamic"]
