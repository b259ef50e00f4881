"""Several trained models as one: their next-character distributions averaged in probability.

An ensemble of models trained alike from different seeds predicts better than any one of them: each
errs in its own way, and the average of their distributions hedges where they disagree. Averaging
probabilities (a mixture), not logits, keeps every member's hedges; the mixture's loss is at most the
mean of the members' losses, by the concavity of log. Ensemble has every model's contract, so
evaluate, score and generate (cached, when its members have a cache) take it as any model.
"""

import math

import torch
from torch import nn

from .losses import language_model_loss, widened


class Ensemble(nn.Module):
    """members: trained models of one class and block size, over one vocabulary (the caller checks
    that). forward returns the mixture's log-probabilities as its logits: their softmax is the mean
    of the members' softmaxes."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one model")
        kinds = {type(m).__name__ for m in members}
        if len(kinds) > 1:
            raise ValueError(f"an ensemble's models must be of one kind, got {', '.join(sorted(kinds))}")
        sizes = {m.block_size for m in members}
        if len(sizes) > 1:
            raise ValueError(f"an ensemble's models must see as many characters, got block sizes {sorted(sizes)}")
        self.members = nn.ModuleList(members)
        self.block_size = members[0].block_size

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, labels: torch.Tensor | None = None):
        # each member's logits over the same positions (its loss is not needed), as log-probabilities
        logits = self._mixture([m(idx, targets, labels=labels)[0] for m in self.members])  # (..., vocab)
        return logits, language_model_loss(logits, targets)

    @torch.no_grad()
    def init_state(self, batch_size: int, labels: torch.Tensor | None = None) -> tuple:
        """One generation state per member (see ConvWaveNet.init_state)."""
        return tuple(m.init_state(batch_size, labels) for m in self.members)

    @torch.no_grad()
    def step(self, token: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        """Feed one character per row to every member; the mixture's next-character logits (B, vocab),
        and every member's state after it."""
        stepped = [m.step(token, s) for m, s in zip(self.members, state, strict=True)]
        return self._mixture([logits for logits, _ in stepped]), tuple(s for _, s in stepped)

    def forward_full(self, idx: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The mixture of the members' forward_full: logits over every column (see ConvWaveNet.forward_full)."""
        return self._mixture([m.forward_full(idx, labels) for m in self.members])

    def _mixture(self, logits: list[torch.Tensor]) -> torch.Tensor:
        """log(mean_m softmax(logits_m)), computed in log space: (M of (..., vocab)) -> (..., vocab)."""
        logp = torch.stack([widened(x).log_softmax(-1) for x in logits])  # (M, ..., vocab)
        return torch.logsumexp(logp, dim=0) - math.log(len(logits))
