"""A key-value cache in which each row of a batch writes at its own end: jump-forward decoding without holes.

In jump-forward decoding a step feeds each row its chosen token and the text its grammar forces after it, so rows
feed different numbers of tokens. In transformers' own cache every row writes the same columns, so a row that feeds
fewer tokens than the widest one leaves masked holes, and each step grows the cache (and the attention over it) by
the widest chunk. Here each layer keeps one buffer, allocated once for the prompt and the token budget, and each row
writes its tokens at its own end; a step's shorter chunks are padded on the left (so every row's last token is the
step's last position and the output layer runs on that one position), and their padding is written to one spare
column that no token ever sees. The cache and the attention are then only as long as the longest row.

The attention mask is built here, one boolean per query and column (a float mask for eager attention), and given
to the model as a prepared 4D mask, which transformers passes on as it is; each row's positions continue its own.
Used where every layer of the model's cache is a plain full-attention layer (no sliding window) and the attention
is SDPA or eager; elsewhere jump-forward keeps transformers' cache and the holes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer


class RaggedLayer(DynamicLayer):  # type: ignore[misc]
    """One attention layer's keys and values, in a buffer each row writes at its own columns (``index``)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, capacity: int) -> None:
        super().__init__()
        batch, heads, prompt, dim = keys.shape
        self._keys = keys.new_zeros(batch, heads, capacity, dim)
        self._values = values.new_zeros(batch, heads, capacity, dim)
        self._keys[:, :, :prompt] = keys
        self._values[:, :, :prompt] = values
        self.device = keys.device
        self.is_initialized = True
        self.length = prompt  # columns any row has written: what the attention reads
        self.index: torch.Tensor | None = None  # (batch, width): the column of each of the step's tokens
        self.keys, self.values = self._keys[:, :, :prompt], self._values[:, :, :prompt]

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.index is not None, "RaggedRows.step sets each step's columns before the forward pass"
        batch, heads, width, dim = key_states.shape
        index = self.index[:, None, :, None].expand(batch, heads, width, dim)
        self._keys.scatter_(2, index, key_states)
        self._values.scatter_(2, index, value_states)
        self.keys, self.values = self._keys[:, :, : self.length], self._values[:, :, : self.length]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length


class RaggedRows:
    """Where each row writes next, which columns each of its tokens may see, and the positions it continues."""

    def __init__(
        self,
        layers: Sequence[RaggedLayer],
        prompt_mask: torch.Tensor,
        last_positions: torch.Tensor,
        capacity: int,
        additive_dtype: torch.dtype | None,
    ) -> None:
        batch, prompt = prompt_mask.shape
        device = prompt_mask.device
        self.layers = list(layers)
        self.capacity = capacity
        self.spare = capacity - 1  # where padding is written; beyond every row's end, so never seen
        self.ends = [prompt] * batch  # the next free column of each row
        self.seen = torch.zeros(batch, capacity, dtype=torch.bool, device=device)
        self.seen[:, :prompt] = prompt_mask.bool()  # a left-padded prompt's padding stays unseen
        self.last = last_positions  # (..., batch, 1): each row's last position, as the model was given it
        self.columns = torch.arange(capacity, device=device)
        self.additive_dtype = additive_dtype  # eager attention adds its mask: 0 or the dtype's lowest

    @classmethod
    def start(
        cls, model: Any, cache: Any, prompt_mask: torch.Tensor, positions: torch.Tensor | None, budget: int
    ) -> RaggedRows | None:
        """Take over ``cache`` after the prompt's forward pass, or ``None`` where this model cannot use it.

        ``positions`` are the prompt's position ids as the model was given them (its last column continues); room
        is made for ``budget`` more tokens a row and the spare column.
        """
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        attention = getattr(config, "_attn_implementation", None)
        if positions is None or attention not in ("sdpa", "eager"):
            return None
        if type(cache) is not DynamicCache or not all(type(layer) is DynamicLayer for layer in cache.layers):
            return None  # a sliding window, a linear-attention or a quantised layer keeps transformers' cache
        prompt = int(prompt_mask.shape[1])
        if any(layer.keys is None or int(layer.keys.shape[-2]) != prompt for layer in cache.layers):
            return None
        capacity = prompt + budget + 1
        layers = [RaggedLayer(layer.keys, layer.values, capacity) for layer in cache.layers]
        cache.layers = layers
        dtype = layers[0].keys.dtype if attention == "eager" else None
        return cls(layers, prompt_mask, positions[..., -1:], capacity, dtype)

    def step(self, chunks: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        """The next forward pass's 4D ``attention_mask`` and ``position_ids`` for these chunks, left-padded.

        ``chunks`` holds each row's tokens for this step (empty for a finished row); the cache's layers are told
        where each token goes. The columns and positions are counted in Python (a few rows, a few tokens) and sent
        as one tensor each: a step's bookkeeping stays a handful of tensor operations, not one per row and token.
        """
        device = self.seen.device
        counts = [len(chunk) for chunk in chunks]
        width = max(counts)
        columns: list[list[int]] = []  # each token's column; the spare one for padding
        steps: list[list[int]] = []  # each token's position after its row's last; 0 for padding
        ends = [end + count for end, count in zip(self.ends, counts, strict=True)]
        length = max(ends)
        if length >= self.capacity:  # checked before anything is written: the rows are left as they were
            raise RuntimeError(f"jump-forward wrote past its cache ({length} of {self.capacity} columns)")
        for end, count in zip(self.ends, counts, strict=True):
            columns.append([self.spare] * (width - count) + list(range(end, end + count)))
            steps.append([0] * (width - count) + list(range(1, count + 1)))
        self.ends = ends
        index = torch.tensor(columns, device=device)
        real = index != self.spare
        self.seen.scatter_(1, index, real)  # the padding writes False to the spare column
        if width == 1:
            # One token a row: it sees every column its row has written, itself included, and nothing else does.
            # A view of ``seen``, not a copy: this step's forward pass reads it before the next step's scatter
            # writes ``seen`` again (on a GPU both are queued in that order on the same stream).
            mask = self.seen[:, None, None, :length]
        else:
            # A token sees its row's columns up to its own; padding sees the row's earlier tokens (its output is
            # unused).
            limit = torch.tensor(
                [[end - count - 1] * (width - count) + cols[width - count :] for end, count, cols in
                 zip(self.ends, counts, columns, strict=True)],
                device=device,
            )  # fmt: skip
            mask = (self.seen[:, None, :length] & (self.columns[:length] <= limit[:, :, None]))[:, None]
        if self.additive_dtype is not None:
            mask = torch.zeros(mask.shape, dtype=self.additive_dtype, device=device).masked_fill_(
                ~mask, torch.finfo(self.additive_dtype).min
            )
        positions = self.last + torch.tensor(steps, dtype=self.last.dtype, device=device)
        self.last = positions[..., -1:]  # a row that fed nothing keeps its last position
        for layer in self.layers:
            layer.index = index
            layer.length = length
        return {"attention_mask": mask, "position_ids": positions}
