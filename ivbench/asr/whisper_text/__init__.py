"""openai-whisper's text normalisers, copied unchanged (MIT licence, see LICENSE here).

WER in ivbench is computed on text normalised exactly as openai-whisper's
`EnglishTextNormalizer` normalises it (the protocol of the Whisper paper, LLaMA-Omni and
URO-Bench). A copy, rather than `import whisper`, because importing openai-whisper imports
torch; tests/test_asr.py checks the copy against openai-whisper itself where it is installed.
"""
from .basic import BasicTextNormalizer as BasicTextNormalizer
from .english import EnglishTextNormalizer as EnglishTextNormalizer

SOURCE = "openai-whisper 20250625"
