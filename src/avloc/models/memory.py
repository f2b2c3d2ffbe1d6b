"""The spatio-temporal memory layer of STM (Algorithm 1, equations 1-2).

Space-Time Memory Network for Sounding Object Localization in Videos, BMVC 2021, section 3.2.

The memory of a step t is a window of feature maps of the other steps of the same clip. For a
whole clip every step is computed at once: the window is an attention mask over the T steps
(:func:`window_mask`), so steps that fall outside the clip are simply absent (no wrap-around).
For streaming, :class:`MemoryBank` holds the maps of the last K steps and the same code runs
with the bank's steps prepended as extra keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from avloc.models.blocks import POOLS, check_choice, check_positive, cross_modal_attention, spatial_pool
from avloc.types import AvlocError

VARIANTS = ("c+u", "u", "none")


def window_mask(
    num_queries: int, num_keys: int, memory_size: int, *, causal: bool = True, device: torch.device | None = None
) -> torch.Tensor:
    """Which steps every query step may attend to: ``(Tq, Tk)`` bool, True = in the window.

    The keys are consecutive steps ``0..Tk-1`` and the queries are the last ``Tq`` of them.
    Causal: step t sees ``t-K..t`` (K = ``memory_size``). Symmetric: ``t-K//2..t+K//2``.
    Steps before the first or after the last key are not in the window (never wrapped around).
    """
    t = torch.arange(num_keys - num_queries, num_keys, device=device).unsqueeze(1)  # (Tq, 1) step of each query
    s = torch.arange(num_keys, device=device).unsqueeze(0)  # (1, Tk) step of each key
    if causal:
        return (s <= t) & (s >= t - memory_size)
    return (s - t).abs() <= memory_size // 2


class TemporalAttention(nn.Module):
    """Multi-modal temporal attention g (STM eq. 2) and the propagation of the memory.

    ``beta[t, k] = 1/L sum_l softmax_k(phi(x^t) W_q^l . phi(x^k) W_k^l / sqrt(C/L))`` over the
    current step and its memory steps, then ``x^t <- sum_k beta[t, k] x^k`` (current step
    included): a weighted sum of the feature maps themselves (no value projection).

    Args:
        channels: C of the maps.
        heads: L (default 1). Each head has C/L dims and is scaled by sqrt(C/L), the layout of
            ``nn.MultiheadAttention`` that the authors' code uses; for L = 1 this is the paper's
            sqrt(C).
        pool: phi, "max" (authors' code, default) or "mean".

    Query and key projections have no bias: a key bias adds the same score to every key of a
    query, which the softmax cancels, so it would never be trained.
    """

    def __init__(self, channels: int, *, heads: int = 1, pool: str = "max") -> None:
        super().__init__()
        if heads < 1 or channels % heads:
            raise AvlocError(f"heads must divide channels, got heads={heads}, channels={channels}")
        check_choice("pool", pool, POOLS)
        self.heads = heads
        self.pool = pool
        self.query = nn.Linear(channels, channels, bias=False)
        self.key = nn.Linear(channels, channels, bias=False)

    def forward(
        self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Propagate the memory onto every query step.

        Args:
            query: ``(B, Tq, C, h, w)`` maps of the current steps.
            keys: ``(B, Tk, C, h, w)`` maps of every step a query may attend to (keys and values).
            mask: ``(Tq, Tk)`` bool (or broadcasting to ``(B, L, Tq, Tk)``: one per stream), True
                where query step t may attend to key step k; every row
                must allow at least one key.

        Returns:
            ``(propagated, beta)``: ``(B, Tq, C, h, w)`` maps and ``(B, Tq, Tk)`` weights.
        """
        (b, tq, c), tk, heads = query.shape[:3], keys.shape[1], self.heads
        q = self.query(spatial_pool(query, self.pool))  # (B, Tq, C, h, w) -> (B, Tq, C)
        k = self.key(spatial_pool(keys, self.pool))  # (B, Tk, C, h, w) -> (B, Tk, C)
        q = q.view(b, tq, heads, c // heads).transpose(1, 2)  # (B, Tq, C) -> (B, L, Tq, C/L)
        k = k.view(b, tk, heads, c // heads).transpose(1, 2)  # (B, Tk, C) -> (B, L, Tk, C/L)
        scores = q @ k.transpose(-2, -1) / math.sqrt(c // heads)  # (B, L, Tq, Tk)
        scores = scores.masked_fill(~mask, float("-inf"))
        beta = scores.softmax(dim=-1).mean(dim=1)  # (B, L, Tq, Tk) -> (B, Tq, Tk): heads averaged
        propagated = torch.einsum("bts,bschw->btchw", beta, keys)  # (B, Tq, Tk), (B, Tk, C, h, w)
        return propagated, beta


@dataclass(frozen=True)
class MemoryBank:
    """The streaming memory: maps of the last K steps, oldest first; None before the first step.

    Attributes:
        audio: ``(B, k, C, m, n)`` projected audio maps x_a (Algorithm 1 input).
        visual: ``(B, k, C, h, w)`` projected visual maps x_v (Algorithm 1 input).
        audio_visual: ``(B, k, C, h, w)`` cross-modal maps of line 4, before line 5.
    """

    audio: torch.Tensor | None = None
    visual: torch.Tensor | None = None
    audio_visual: torch.Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.audio is None else self.audio.shape[1]

    def push(
        self, audio: torch.Tensor, visual: torch.Tensor, audio_visual: torch.Tensor, memory_size: int
    ) -> MemoryBank:
        """A new bank with the steps ``(B, T, ...)`` appended, keeping the last ``memory_size``."""

        def append(old: torch.Tensor | None, new: torch.Tensor) -> torch.Tensor:
            both = new if old is None else torch.cat([old, new], dim=1)  # (B, k + T, C, h, w)
            return both[:, max(both.shape[1] - memory_size, 0) :]

        return MemoryBank(append(self.audio, audio), append(self.visual, visual),
                          append(self.audio_visual, audio_visual))


@dataclass
class MemoryOutput:
    """What the memory layer returns for T steps (shapes ``(B, T, ...)``).

    Attributes:
        audio: hat x_a, line 2 (the input itself without uni-modal memory).
        audio_visual: hat x_av, line 5 (line 4 without cross-modal memory).
        cross_modal: x_av of line 4, f(hat x_a, hat x_v), what the memory stores for av.
        alpha: ``(B, T, h, w)`` the spatial attention of line 4.
        visual: hat x_v, line 3 (the input itself without uni-modal memory), what line 4 attends over.
    """

    audio: torch.Tensor
    audio_visual: torch.Tensor
    cross_modal: torch.Tensor
    alpha: torch.Tensor
    visual: torch.Tensor


class SpaceTimeMemory(nn.Module):
    """Spatio-temporal memory layer (Algorithm 1) over the steps of a clip.

    Line 2-3: temporal attention g on the audio and on the visual maps; line 4: spatial attention
    f(hat x_a, hat x_v) -> x_av; line 5: temporal attention g on x_av. The memory of a step holds
    the *inputs* of the layer at the other steps (x_a, x_v) and their line-4 maps x_av, so the
    whole clip is one masked attention and never a recurrence. Line 5 reads x_av of steps that
    themselves read K steps (lines 2-3), so with "c+u" an output depends on up to 2K earlier
    steps (2*(K//2) on either side when symmetric), with "u" on K.

    Args:
        channels: C of the projected maps.
        variant: "c+u" all of Algorithm 1 (default); "u" without line 5 (uni-modal memory
            only); "none" without lines 2, 3 and 5 (every step on its own). The modules of the
            skipped lines are not built.
        memory_size: K, the number of other steps in the window (default 3).
        heads: L of every temporal attention (default 1).
        causal: True (default): the K previous steps; False: the symmetric window
            t-K//2..t+K//2 of the authors' code (past and future).
        pool: phi of the temporal and spatial attention, "max" (default) or "mean".
        spatial_temperature: divides the similarities of the spatial attention (line 4).
        spatial_similarity: "dot" (eq. 1) or "cosine" for the spatial attention.
    """

    def __init__(
        self,
        channels: int = 256,
        *,
        variant: str = "c+u",
        memory_size: int = 3,
        heads: int = 1,
        causal: bool = True,
        pool: str = "max",
        spatial_temperature: float = 1.0,
        spatial_similarity: str = "dot",
    ) -> None:
        super().__init__()
        check_choice("variant", variant, VARIANTS)
        check_choice("pool", pool, POOLS)
        check_positive(memory_size=memory_size)
        self.variant = variant
        self.memory_size = memory_size
        self.causal = causal
        self.pool = pool
        self.spatial_temperature = spatial_temperature
        self.spatial_similarity = spatial_similarity

        def build(used: bool) -> TemporalAttention | None:
            return TemporalAttention(channels, heads=heads, pool=pool) if used else None

        self.audio_memory = build(variant != "none")
        self.visual_memory = build(variant != "none")
        self.audio_visual_memory = build(variant == "c+u")

    def forward(self, audio: torch.Tensor, visual: torch.Tensor, bank: MemoryBank | None = None) -> MemoryOutput:
        """Algorithm 1 for T steps at once.

        Args:
            audio: ``(B, T, C, m, n)`` projected audio maps.
            visual: ``(B, T, C, h, w)`` projected visual maps.
            bank: the steps just before these (streaming); None for a whole clip.
        """
        bank = bank if bank is not None else MemoryBank()
        steps = audio.shape[1]
        window = window_mask(steps, len(bank) + steps, self.memory_size, causal=self.causal, device=audio.device)
        return self.attend(audio, visual, bank, window)

    def attend(self, audio: torch.Tensor, visual: torch.Tensor, bank: MemoryBank, window: torch.Tensor
               ) -> MemoryOutput:
        """Algorithm 1, lines 2-5, of the steps ``audio (B, T, C, m, n)``, ``visual (B, T, C, h, w)``
        over ``bank``'s k steps and themselves, each query attending to the keys ``window`` allows:
        ``(T, k + T)`` bool (:func:`window_mask`), or any shape that broadcasts to the attention's
        ``(B, L, T, k + T)`` scores (a fixed-size export masks each stream's empty slots so)."""
        audio_hat = self._propagate(self.audio_memory, audio, bank.audio, window)  # line 2
        visual_hat = self._propagate(self.visual_memory, visual, bank.visual, window)  # line 3
        audio_vector = spatial_pool(audio_hat, self.pool)  # (B, T, C, m, n) -> (B, T, C)
        cross_modal, alpha = cross_modal_attention(
            visual_hat, audio_vector, self.spatial_temperature, self.spatial_similarity
        )  # line 4
        audio_visual = self._propagate(self.audio_visual_memory, cross_modal, bank.audio_visual, window)  # line 5
        return MemoryOutput(audio_hat, audio_visual, cross_modal, alpha, visual_hat)

    def step(self, audio: torch.Tensor, visual: torch.Tensor, bank: MemoryBank) -> tuple[MemoryOutput, MemoryBank]:
        """One streaming step ``(B, 1, C, ...)``: its output and the bank with the step pushed."""
        if not self.causal:
            raise AvlocError("streaming needs a causal memory (causal=True); this one reads the future")
        out = self.forward(audio, visual, bank)
        return out, bank.push(audio, visual, out.cross_modal, self.memory_size)

    @staticmethod
    def _propagate(
        attention: TemporalAttention | None, x: torch.Tensor, memory: torch.Tensor | None, window: torch.Tensor
    ) -> torch.Tensor:
        """Temporal attention of ``x`` (B, T, C, h, w) over ``memory``'s steps and its own, as ``window`` allows."""
        if attention is None:  # this variant skips the line
            return x
        keys = x if memory is None else torch.cat([memory, x], dim=1)  # (B, k + T, C, h, w)
        return attention(x, keys, window)[0]
