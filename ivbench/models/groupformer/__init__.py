"""GroupFormer, the IntrinsicVoice reference model (arXiv 2410.08035).

Where each part of the paper lives:

- `config`: shapes and the checkpoint config (`groupformer.json`); no torch.
- `chat`: text tokenizer fallback, `<sosp>`/`<eosp>`/`<speech>`, chat rendering with speech groups.
- `speech_tokenizer`: mHuBERT (25 Hz, layer 11) features → k-means units (km500 loader).
- `model`: speech adaptor (group embedding), GroupModel (non-autoregressive group decoder),
  the LLM wrapper, `from_pretrained` / `save_pretrained` / `random`.
- `generation`: KV-cached streaming decoding; direct speech and the text-first chain.
- `vocoder`: unit HiFi-GAN (TWIST 25 Hz LJ format) and the streaming vocoder.
- `training`: the four cross-modal tasks, text + group cross-entropy, a minimal loop.

The `groupformer` and `groupformer-text-first` systems (the adapters, which import no torch)
are in `ivbench/systems/groupformer.py`. Only `config` may be imported without torch.
"""
