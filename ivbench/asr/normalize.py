"""English text normalisation for WER, and WER itself (jiwer on normalised words).

`normalize_english` is Whisper's English text normaliser, the one the Whisper paper and the
LLaMA-Omni evaluation compute WER on: lower case, bracketed and parenthesised text dropped,
fillers ("uh", "um") dropped, contractions expanded ("don't" -> "do not", "it's" -> "it is"),
spelled numbers and currencies written as digits ("twenty-five dollars" -> "$25"), British
spellings made American, punctuation removed. It is openai-whisper's own
`EnglishTextNormalizer`, run from the installed openai-whisper (its normalisers loaded alone,
without the torch that `import whisper` would bring), so a WER equals what a peer using
openai-whisper computes. (The `whisper-normalizer` package, used
before, adds rules of its own: "cause" -> "because", "kinda", "sorta", "dunno".)
`normalizer_identity()` names it, for cache keys and manifests.

Nothing is added to Whisper's rules, so a WER here is the WER a peer computes with
openai-whisper's normaliser and jiwer, quirks included: a typographic apostrophe is a symbol
to Whisper ("don’t" -> "don t", where "don't" -> "do not"), and a text of only "..." is ".".
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any
from collections.abc import Callable

from ..errors import MissingDependency


WHISPER_DIST = "openai-whisper"
INSTALL = "pip install --no-deps 'openai-whisper>=20240930'"  # the normaliser needs regex and more-itertools only


@lru_cache(maxsize=1)
def _normalizers() -> Any:
    """openai-whisper's `whisper.normalizers` package, from the installed distribution, loaded
    under a private name: `import whisper.normalizers` would first run `whisper/__init__.py`,
    which imports torch (seconds) for a text normaliser that needs none."""
    import importlib.util
    import sys

    spec = importlib.util.find_spec("whisper")  # finds the package without running it
    locations = spec.submodule_search_locations if spec else None
    folder = Path(locations[0]) / "normalizers" if locations else None
    if folder is None or not (folder / "english.py").is_file():
        raise MissingDependency(f"WER is computed on text normalised by openai-whisper's EnglishTextNormalizer, "
                                f"and openai-whisper is not installed: {INSTALL}")
    name = "_ivbench_whisper_normalizers"
    if name not in sys.modules:
        package = importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                         submodule_search_locations=[str(folder)])
        assert package is not None and package.loader is not None
        module = importlib.util.module_from_spec(package)
        sys.modules[name] = module
        try:
            package.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


@lru_cache(maxsize=1)
def _load() -> Callable[[str], str]:
    return _normalizers().EnglishTextNormalizer()


def normalizer_identity() -> dict[str, Any]:
    """Which normaliser (and version) WER is computed with."""
    from ..provenance import package_version

    return {"normalizer": "openai-whisper:EnglishTextNormalizer", "version": package_version(WHISPER_DIST)}


def normalize_english(text: str) -> str:
    """openai-whisper's `EnglishTextNormalizer(text)`, exactly (its words are separated by
    single spaces already)."""
    if not text:
        return ""
    return _load()(text)


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference words) after normalising both,
    the two sums a corpus WER divides."""
    ref = normalize_english(reference)
    hyp = normalize_english(hypothesis)
    if not ref:
        return len(hyp.split()), 0
    if not hyp:
        return len(ref.split()), len(ref.split())
    import jiwer

    out = jiwer.process_words(ref, hyp)
    return out.substitutions + out.deletions + out.insertions, len(ref.split())


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of `hypothesis` against `reference`, both normalised first.

    An empty reference gives 0.0 when the hypothesis is empty too and 1.0 otherwise (there
    is no count of reference words to divide by; `word_errors` gives the raw numbers).
    """
    errors, words = word_errors(reference, hypothesis)
    if words == 0:
        return 0.0 if errors == 0 else 1.0
    return errors / words
