"""tempnlp: contrastive fine-tuning of sentence encoders with a swappable temperature."""

__version__ = "0.1.0"
