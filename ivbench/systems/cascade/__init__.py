"""`cascade`: Whisper ASR → LLM → streaming TTS (see `system`). Importing this package
imports no model code; `Cascade.load()` does."""
from .chunker import Chunker, speakable
from .llm import LLMError, OpenAILLM, TransformersLLM, bundled_smollm2
from .system import (DEFAULT_SYSTEM_PROMPT, STAGES, Cascade, CascadeError, CascadeOpenAI,
                     CascadeSession, EmptyTranscriptError, TurnLog)

__all__ = ["Cascade", "CascadeOpenAI", "CascadeSession", "CascadeError", "EmptyTranscriptError",
           "LLMError", "TurnLog", "Chunker", "speakable", "TransformersLLM", "OpenAILLM",
           "bundled_smollm2", "DEFAULT_SYSTEM_PROMPT", "STAGES"]
