"""ptrain: a readable, plain-PyTorch training loop for Hugging Face models, driven by YAML configs."""

__version__ = "0.1.0"
