"""A :class:`~slimkit.serve.llm.engine.DecodeEngine` for a Hugging Face causal LM in PyTorch.

The batch's KV cache is one transformers ``DynamicCache`` whose rows are the sequences,
**left-padded** to a common length: every sequence writes its next token in the same cache
column, so one forward pass of ``(batch, 1)`` tokens decodes them all. The 2-D attention mask
marks each row's real positions and ``position_ids`` carry each sequence's own positions, so a
sequence's logits do not depend on who shares its batch (the tests check this against the
sequence run alone).

- Prefill: the newcomers' prompts run as one left-padded batch into a fresh cache, which is
  then joined to the running one (the shorter of the two padded on the left).
- Decode: one token per row; the mask grows by one column.
- Drop: the row is removed; columns that are padding in every remaining row are cut off, so
  the cache is never longer than its longest sequence.

Why by hand: transformers' own continuous batching (``generate_batch``) is built on its paged
attention cache and owns the whole loop; the server needs an engine behind a small Protocol
that an ONNX Runtime engine can implement as well, with the scheduler (admission, streaming,
cancellation) outside it. Only the cache tensors are handled here; the model, its masks and
rotary positions are transformers' own.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from slimkit.errors import InputError

logger = logging.getLogger(__name__)


class TorchDecodeEngine:
    """Continuous-batching engine over a transformers ``*ForCausalLM`` module in PyTorch.

    Example:
        >>> import transformers
        >>> cfg = transformers.LlamaConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1,
        ...     num_attention_heads=2, num_key_value_heads=1, intermediate_size=32,
        ...     max_position_embeddings=64)
        >>> engine = TorchDecodeEngine(transformers.LlamaForCausalLM(cfg))
        >>> engine.prefill({7: [1, 2, 3], 8: [4]}).shape
        (2, 32)
        >>> engine.decode({7: 5, 8: 6}).shape, engine.cached_tokens()
        ((2, 32), 8)
        >>> engine.drop(7); engine.drop(8); engine.sequences, engine.cached_tokens()
        ((), 0)
    """

    def __init__(self, model: Any, threads: int = 1, pad_token_id: int = 0) -> None:
        import torch

        if threads < 1:
            raise InputError(f"threads must be >= 1, got {threads}")
        self.model = model.eval()
        self.threads = threads
        self.pad_token_id = pad_token_id
        params = inspect.signature(model.forward).parameters
        # transformers 5.x names the cache argument `cache`; 4.x `past_key_values`
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._ids: list[int] = []
        self._cache: Any = None
        self._mask = torch.zeros((0, 0), dtype=torch.long)
        self._next_position = torch.zeros(0, dtype=torch.long)  # real tokens per row

    @property
    def context_length(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048))

    @property
    def sequences(self) -> tuple[int, ...]:
        return tuple(self._ids)

    def cached_tokens(self) -> int:
        return int(self._mask.numel()) if self._cache is not None else 0

    @contextlib.contextmanager
    def pinned(self) -> Iterator[None]:
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def prefill(self, prompts: Mapping[int, Sequence[int]]) -> np.ndarray:

        ids = list(prompts)
        clash = set(ids) & set(self._ids)
        if clash or not ids or any(not 0 < len(p) <= self.context_length
                                   for p in prompts.values()):
            raise ValueError(f"prefill needs new ids and prompts of 1..{self.context_length} "
                             f"tokens (ids already held: {sorted(clash)})")
        tokens, mask = _left_pad([list(prompts[i]) for i in ids], self.pad_token_id)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = _new_cache()
        logits = self._forward(tokens, mask, positions, cache)
        self._join(ids, cache, mask)
        return logits

    def decode(self, tokens: Mapping[int, int]) -> np.ndarray:
        import torch

        if set(tokens) != set(self._ids) or len(tokens) != len(self._ids):
            raise ValueError(f"decode needs one token for each of the sequences {self._ids}, "
                             f"got ids {list(tokens)}")
        if int(self._next_position.max()) >= self.context_length:
            raise ValueError(f"a sequence is at the context length ({self.context_length})")
        step = torch.tensor([[tokens[i]] for i in self._ids], dtype=torch.long)
        self._mask = torch.cat([self._mask, torch.ones((len(self._ids), 1), dtype=torch.long)],
                               dim=1)
        logits = self._forward(step, self._mask, self._next_position[:, None], self._cache)
        self._next_position += 1
        rows = [self._ids.index(i) for i in tokens]
        return logits if rows == list(range(len(rows))) else logits[rows]

    def drop(self, seq_id: int) -> None:
        import torch

        if seq_id not in self._ids:
            return
        keep = [row for row, i in enumerate(self._ids) if i != seq_id]
        self._ids = [self._ids[row] for row in keep]
        if not keep:
            self._cache, self._mask = None, torch.zeros((0, 0), dtype=torch.long)
            self._next_position = torch.zeros(0, dtype=torch.long)
            return
        index = torch.tensor(keep, dtype=torch.long)
        self._mask, self._next_position = self._mask[index], self._next_position[index]
        first = int(self._mask.any(0).nonzero()[0])  # columns before it are padding everywhere
        self._mask = self._mask[:, first:]
        self._cache = _rebuild(self._cache, lambda t: t[index, :, first:])

    def _forward(self, tokens: Any, mask: Any, positions: Any, cache: Any) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.model(input_ids=tokens, attention_mask=mask, position_ids=positions,
                             use_cache=True, logits_to_keep=1, **{self._cache_arg: cache})
        return out.logits[:, -1].float().numpy()

    def _join(self, ids: list[int], cache: Any, mask: Any) -> None:
        """Append ``cache``'s rows to the batch, left-padding the shorter side."""
        import torch

        rows = mask.sum(-1)
        if self._cache is None:
            self._ids, self._cache, self._mask, self._next_position = ids, cache, mask, rows
            return
        length = max(self._mask.shape[1], mask.shape[1])
        old, new = self._mask.shape[1], mask.shape[1]
        self._cache = _rebuild(self._cache, lambda t: _pad_left(t, length - old), cache,
                               lambda t: _pad_left(t, length - new))
        self._mask = torch.cat([_pad_left(self._mask, length - old, dim=1),
                                _pad_left(mask, length - new, dim=1)])
        self._next_position = torch.cat([self._next_position, rows])
        self._ids = self._ids + ids


def _new_cache() -> Any:
    from transformers import DynamicCache

    return DynamicCache()


def _rebuild(cache: Any, edit: Any, other: Any = None, edit_other: Any = None) -> Any:
    """A new ``DynamicCache`` with ``edit`` applied to every key/value tensor of ``cache``;
    with ``other``, its edited tensors are appended along the batch axis."""
    import torch
    from transformers import DynamicCache

    def layers(c: Any) -> list[tuple[Any, Any]]:
        return [(layer.keys, layer.values) for layer in c.layers]

    if other is None:
        data = [(edit(k), edit(v)) for k, v in layers(cache)]
    else:
        data = [(torch.cat([edit(k), edit_other(k2)]), torch.cat([edit(v), edit_other(v2)]))
                for (k, v), (k2, v2) in zip(layers(cache), layers(other), strict=True)]
    return DynamicCache(ddp_cache_data=data)


def _pad_left(t: Any, n: int, dim: int = 2) -> Any:
    """``t`` with ``n`` zeros before its entries along ``dim`` (2: a cache's position axis)."""
    import torch

    if n == 0:
        return t
    shape = list(t.shape)
    shape[dim] = n
    return torch.cat([t.new_zeros(shape), t], dim=dim)


def _left_pad(prompts: list[list[int]], pad: int) -> tuple[Any, Any]:
    """(token ids, attention mask), both ``(len(prompts), longest)``, padded on the left."""
    import torch

    longest = max(len(p) for p in prompts)
    tokens = torch.full((len(prompts), longest), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), longest), dtype=torch.long)
    for row, p in enumerate(prompts):
        tokens[row, longest - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[row, longest - len(p):] = 1
    return tokens, mask
