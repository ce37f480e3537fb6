"""ivbench: benchmark voice-interaction LLMs through multi-turn spoken dialogues.

Importing ivbench imports nothing heavy; models load inside plugins' `load()`.
"""
__version__ = "0.1.0"
