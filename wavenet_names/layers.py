"""The lecture's hand-written layers and its initialisation, as torch.nn code with the lecture's exact
semantics; and BatchNorm's statistics over all ranks in distributed training."""

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .distributed import all_reduce_sum


class FlattenConsecutive(nn.Module):
    """Fuse n consecutive positions into one: (B, T, C) -> (B, T/n, n*C), and (B, n*C) when T == n.

    The squeeze at T == n is the lecture's: the tree's top node comes out as a plain (B, C) batch.
    """

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] % self.n:
            raise ValueError(f"FlattenConsecutive({self.n}) needs a length divisible by {self.n}, got {x.shape[1]}")
        x = rearrange(x, "b (t n) c -> b t (n c)", n=self.n)
        return x.squeeze(1) if x.shape[1] == 1 else x


class BatchNorm(nn.Module):
    """The lecture's BatchNorm1d: normalise every feature (the last dimension) over all other dimensions.

    For 3-D input (B, T, C) that is over batch AND position: the fix of the lecture's second batch-norm
    bug, where only the batch dimension was used. As in the lecture, the variance is the unbiased one (torch.var's
    default) both to normalise and in the running estimate, which moves with momentum 0.1; eval mode
    uses the running estimates, so a batch of one is fine there (the lecture's first bug was sampling
    in training mode, where one example has no variance).
    """

    def __init__(self, dim: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(dim))  # the lecture's gamma
        self.bias = nn.Parameter(torch.zeros(dim))  # the lecture's beta
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))

    synced = False  # set by sync_batchnorm: training statistics over all ranks

    def forward(self, x: torch.Tensor, shared_first_row: bool = False, counted: torch.Tensor | None = None):
        """x (..., C). shared_first_row: x[0] is a node that every rank computes (ConvWaveNet's all-'.'
        node), so in distributed training only rank 0 counts it, as one process would. counted
        (x.shape[:-1]) bool: in training, only these rows enter the statistics (None: all rows); the
        others, a bucket's empty rows, are normalised all the same, and feed nothing that counts."""
        flat = x.reshape(-1, x.shape[-1])  # (N, C): every dimension but the last is the batch
        synced = self.synced and dist.is_initialized()
        if self.training and (synced or counted is not None):
            weights = torch.ones(len(flat), device=x.device) if counted is None else counted.reshape(-1).float()
            if synced and shared_first_row and dist.get_rank() != 0:
                weights = weights * (torch.arange(len(flat), device=x.device) > 0)  # (N,): row 0 not counted
            return self._normalised(flat, *self._statistics(flat, weights, synced)).view_as(x)
        if self.training and torch.compiler.is_compiling():
            # the formula as written, which the compiler fuses; the rescaled eps below is a float made
            # from the batch size, which would make it compile again for every new size
            var, mean = torch.var_mean(self._widened(flat), dim=0)  # (C,) each, the variance unbiased
            return self._normalised(flat, mean, var).view_as(x)
        weight, eps = self.weight, self.eps
        if self.training:
            # torch's fused batch_norm divides by the biased variance v_b = v_u (N-1)/N; the lecture
            # divides by the unbiased v_u. (x - m) / sqrt(v_u + eps) equals
            # sqrt((N-1)/N) (x - m) / sqrt(v_b + eps (N-1)/N), so rescaling the weight and eps gives
            # the lecture's output exactly, and the fused kernel already keeps v_u as running_var.
            shrink = (flat.shape[0] - 1) / flat.shape[0]
            weight, eps = weight * shrink**0.5, eps * shrink
        out = F.batch_norm(
            flat, self.running_mean, self.running_var, weight, self.bias, self.training, self.momentum, eps
        )
        return out.view_as(x)

    def _statistics(self, flat: torch.Tensor, weights: torch.Tensor, synced: bool):
        """The mean and unbiased variance (C,) of the rows of flat (N, C) that weights (N,) marks with
        1, in two passes for accuracy; with `synced`, of those rows on all ranks together. The sums go
        through a differentiable all-reduce, so gradients flow to every rank's rows, as in torch's
        SyncBatchNorm. Nothing is read to the host: the count stays a tensor."""
        flat, weights = self._widened(flat), weights.to(self.running_var.dtype)[:, None]  # (N, C), (N, 1)
        reduce = all_reduce_sum if synced else (lambda t: t)
        n = reduce(weights.sum(0))  # (1,)
        mean = reduce((flat * weights).sum(0)) / n  # (C,)
        var = reduce((((flat - mean) ** 2) * weights).sum(0)) / (n - 1)  # (C,), unbiased
        return mean, var

    def _widened(self, x: torch.Tensor) -> torch.Tensor:
        """x in the running estimates' dtype (float32, or float64), for its statistics: bf16 activations
        under autocast would sum many rows at 8 bits of mantissa, and not fit the buffers."""
        return x.to(self.running_var.dtype)

    def _normalised(self, x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        """The lecture's formula, with the statistics given (var unbiased, in the buffers' dtype); in
        training, they also move the running estimates. The output has x's dtype, as F.batch_norm's."""
        if self.training:
            with torch.no_grad():
                self.running_mean.lerp_(mean.view_as(self.running_mean), self.momentum)
                self.running_var.lerp_(var.view_as(self.running_var), self.momentum)
        return ((x - mean) * (self.weight * torch.rsqrt(var + self.eps)) + self.bias).to(x.dtype)


class BatchDimOnlyBatchNorm(BatchNorm):
    """The lecture's second batch-norm bug, kept only to reproduce its results table: a (B, T, C)
    input is normalised over the batch dimension alone, so each of the T positions has statistics of
    its own, and (as in the lecture, whose buffers broadcast to (1, T, C)) running estimates of its own.
    """

    def __init__(self, dim: int, positions: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__(dim, eps, momentum)
        self.register_buffer("running_mean", torch.zeros(positions, dim))
        self.register_buffer("running_var", torch.ones(positions, dim))

    def forward(self, x: torch.Tensor, shared_first_row: bool = False) -> torch.Tensor:
        if self.training:
            var, mean = torch.var_mean(self._widened(x), dim=0)  # (T, C), or (C,) for the tree's top (B, C)
        else:
            mean, var = self.running_mean, self.running_var
        return self._normalised(x, mean, var)


def sync_batchnorm(model: nn.Module) -> nn.Module:
    """Make every BatchNorm of `model` reduce its training statistics over all ranks."""
    for module in model.modules():
        if isinstance(module, BatchNorm):
            module.synced = True
    return model


def init_lecture(model: nn.Module) -> None:
    """The lecture's initialisation: N(0, 1) embeddings, N(0, 1/fan_in) weights, zero biases, and the
    output layer (model.lm_head) scaled by 0.1 so that the first predictions are nearly uniform."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight)
            elif isinstance(m, (nn.Linear, nn.Conv1d)):
                fan_in = m.weight[0].numel()  # in_features, or in_channels * kernel_size
                nn.init.normal_(m.weight, std=fan_in**-0.5)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        model.lm_head.weight *= 0.1


class LabelEmbedding(nn.Module):
    """WaveNet's global conditioning input (arXiv:1609.03499, section 2.5): an embedding per label
    column, concatenated into the label vector h (B, columns * dim). Each layer of a conditional model
    adds its own projection V h to its pre-activation, so the label shapes every position.

    In training, each label is replaced by its column's unknown value (0) with probability `dropout`,
    so that the model also learns to predict with a label left out, as `sample` may leave it."""

    def __init__(self, sizes: tuple[int, ...], dim: int, dropout: float = 0.0):
        super().__init__()
        self.columns = nn.ModuleList(nn.Embedding(n, dim) for n in sizes)  # n: a column's values and unknown
        self.dropout = dropout
        self.dim = len(sizes) * dim

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        """labels (..., columns) long, 0 for unknown -> h (..., columns * dim)."""
        if labels.shape[-1] != len(self.columns):
            raise ValueError(f"labels must have {len(self.columns)} columns, got {labels.shape[-1]}")
        if self.training and self.dropout > 0:
            dropped = torch.rand(labels.shape, device=labels.device) < self.dropout
            labels = labels.masked_fill(dropped, 0)
        return torch.cat([embedding(labels[..., k]) for k, embedding in enumerate(self.columns)], dim=-1)


def label_vectors(
    embedding: LabelEmbedding | None, labels: torch.Tensor | None, batch_size: int, device: torch.device
) -> torch.Tensor | None:
    """A model's label vectors h (batch_size, embedding.dim) for labels (batch_size, columns), all
    unknown when labels is None; None for a model without labels, which refuses any."""
    if embedding is None:
        if labels is not None:
            raise ValueError("this model was trained without labels: it takes none")
        return None
    if labels is None:
        labels = torch.zeros(batch_size, len(embedding.columns), dtype=torch.long, device=device)
    return embedding(labels)
