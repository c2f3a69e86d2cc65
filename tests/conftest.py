from __future__ import annotations

import os
import string
from pathlib import Path

import pytest
import torch

COMMON_WORDS = sorted(
    set(
        [
            "a",
            "an",
            "the",
            "is",
            "are",
            "was",
            "on",
            "in",
            "at",
            "of",
            "to",
            "for",
            "with",
            "and",
            "or",
            "but",
            "he",
            "she",
            "it",
            "they",
            "we",
            "you",
            "man",
            "woman",
            "men",
            "women",
            "child",
            "children",
            "dog",
            "dogs",
            "cat",
            "cats",
            "car",
            "train",
            "book",
            "field",
            "lake",
            "dinner",
            "pasta",
            "guitar",
            "mat",
            "monday",
            "noon",
            "history",
            "stocks",
            "playing",
            "sits",
            "fell",
            "sharply",
            "cooking",
            "run",
            "runs",
            "across",
            "arrives",
            "swimming",
            "reads",
            "about",
            "two",
            "one",
            "three",
            "people",
            "street",
            "water",
            "red",
            "blue",
            "green",
            "big",
            "small",
            "old",
            "young",
            "walks",
            "eating",
            "sleeping",
        ]
    )
)


def _build_tiny_model(folder: Path, hidden: int = 32, seed: int = 0) -> Path:
    """A 2-layer BERT with random weights; WordPiece over common words plus single characters (any text tokenizes)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    pieces = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *COMMON_WORDS,
        *pieces,
        *[f"##{p}" for p in pieces],
    ]
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True)
    if tokenizer.tokenize("the cat") != ["the", "cat"]:  # guards against a silently all-[UNK] tokenizer
        raise RuntimeError(f"tiny tokenizer is broken: {tokenizer.tokenize('the cat')}")
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=128,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    return _build_tiny_model(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture
def tiny_model(tiny_model_path):
    """A fresh SentenceTransformer (Transformer + mean pooling) on the tiny random BERT."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    transformer = Transformer(str(tiny_model_path), max_seq_length=32)
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    return SentenceTransformer(modules=[transformer, pooling], device="cpu")


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The offline mirror root from TEMPNLP_MIRROR: skipped on a laptop without it, a failure in CI."""
    value = os.environ.get("TEMPNLP_MIRROR")
    if not value or not Path(value).is_dir():
        message = f"TEMPNLP_MIRROR is not set to the offline mirror (got {value!r})"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run with ../shared/mirror beside the clone.")
        pytest.skip(message)
    return Path(value)


@pytest.fixture(scope="session")
def minilm_path(mirror) -> Path:
    path = mirror / "models" / "sentence-transformers" / "all-MiniLM-L6-v2"
    if not (path / "modules.json").is_file():
        pytest.fail(f"the mirror at {mirror} has no all-MiniLM-L6-v2 ({path} is missing)")
    return path


@pytest.fixture
def static_model(tiny_model_path):
    """A random bag-of-words StaticEmbedding model: tiny and fast like the BERT, but its embeddings are spread
    out (a random BERT maps every sentence to nearly the same direction), so rankings are not near-ties."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    from tokenizers import Tokenizer

    torch.manual_seed(0)
    tokenizer = Tokenizer.from_file(str(tiny_model_path / "tokenizer.json"))
    weights = torch.randn(tokenizer.get_vocab_size(), 32)
    return SentenceTransformer(modules=[StaticEmbedding(tokenizer, embedding_weights=weights)], device="cpu")
