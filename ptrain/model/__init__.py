"""Models and tokenizers from a folder, an installed package, the Hub or a scratch config; LoRA; tokenizer
training. Where a model comes from is resolved in config/sources.py; the speed paths live in fast_paths/."""
