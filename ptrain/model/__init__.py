"""Models and tokenizers from a folder, an installed package, the Hub or a scratch config; tokenizer training."""
