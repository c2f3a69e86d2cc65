"""Load a sentence-transformers model by Hub id or path, through the mirror when one is configured."""

from __future__ import annotations

from pathlib import Path

from sentence_transformers import SentenceTransformer

from tempnlp.data.hub import mirror_root, resolve_model


def load_model(
    name_or_path: str,
    *,
    device: str | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
) -> SentenceTransformer:
    """A SentenceTransformer from a local folder, the mirror (``TEMPNLP_MIRROR``) or the Hub, else a clear error.
    ``revision`` is the Hub commit to load, for a model read from the Hub."""
    resolved = resolve_model(name_or_path)
    try:
        return SentenceTransformer(resolved, device=device, trust_remote_code=trust_remote_code, revision=revision)
    except OSError as error:
        raise model_not_found(name_or_path, error) from error


def model_not_found(name_or_path: str, error: OSError) -> FileNotFoundError:
    """The error for a model that is in none of the places it is looked for, each named."""
    root = mirror_root()
    places = [f"a local folder ({Path(name_or_path).expanduser()} does not exist)"]
    if root is not None:
        places.append(f"in the mirror ({root / 'models' / name_or_path} does not exist)")
    places.append("loadable from the Hugging Face Hub")
    return FileNotFoundError(
        f"Model {name_or_path!r} is not " + ", nor ".join(places) + ". Check the name or path, set TEMPNLP_MIRROR "
        f"to a mirror that holds it, or download it while online. ({' '.join(str(error).split())[:300]})"
    )
