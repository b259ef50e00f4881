"""The lecture's layers, and regressions for its two batch-norm bugs."""

import pytest
import torch

from wavenet_names import BatchNorm, ConvWaveNet, FlatMLP, FlattenConsecutive, HierarchicalMLP, conv_from_tree


def test_flatten_consecutive_fuses_neighbours():
    x = torch.arange(2 * 8 * 3).reshape(2, 8, 3)
    y = FlattenConsecutive(2)(x)
    assert y.shape == (2, 4, 6)
    assert torch.equal(y[1, 2], torch.cat([x[1, 4], x[1, 5]]))
    assert FlattenConsecutive(8)(x).shape == (2, 24)  # the top of the tree squeezes to (B, C)
    with pytest.raises(ValueError, match="divisible"):
        FlattenConsecutive(3)(x)


def test_batchnorm_normalises_3d_input_over_batch_and_position():
    """The lecture's second bug normalised (B, T, C) over B only, giving T separate statistics."""
    x = torch.randn(16, 4, 5, dtype=torch.float64) + torch.arange(4, dtype=torch.float64)[:, None] * 3
    norm = BatchNorm(5).double()
    y = norm(x)
    flat = x.reshape(-1, 5)
    expected = (x - flat.mean(0)) / torch.sqrt(flat.var(0) + norm.eps)  # the lecture's formula
    torch.testing.assert_close(y, expected)
    assert y[:, 0].mean(0).abs().min() > 1.0  # positions keep their offsets: not per-position stats
    torch.testing.assert_close(norm.running_mean, 0.1 * flat.mean(0))
    torch.testing.assert_close(norm.running_var, 0.9 + 0.1 * flat.var(0))


def test_batchnorm_eval_mode_uses_the_running_statistics():
    norm = BatchNorm(3).double().eval()
    norm.running_mean.fill_(2.0)
    norm.running_var.fill_(4.0)
    x = torch.full((1, 3), 4.0, dtype=torch.float64)
    torch.testing.assert_close(norm(x), torch.full((1, 3), 2.0 / (4.0 + 1e-5) ** 0.5, dtype=torch.float64))


@pytest.mark.parametrize(
    "model",
    [FlatMLP(27, 10, 64, 8), HierarchicalMLP(27, 10, 64, 3), ConvWaveNet(27, 10, 64, 3)],
    ids=["flat", "hierarchical", "conv"],
)
def test_eval_mode_with_a_batch_of_one_is_finite(model):
    """The lecture's first bug: sampling one name in training mode divides by a variance of nothing."""
    model.train()
    model.forward_full(torch.randint(0, 27, (32, 8)))  # move the running statistics
    model.eval()
    logits = model.forward_full(torch.zeros(1, 8, dtype=torch.long))
    assert torch.isfinite(logits).all()


def test_the_lectures_batch_norm_bug_keeps_per_position_statistics():
    """Preset 3 of the lecture's table: (B, T, C) normalised over B alone, one statistic per position."""
    from wavenet_names.layers import BatchDimOnlyBatchNorm

    x = torch.randn(16, 4, 5, dtype=torch.float64) + torch.arange(4, dtype=torch.float64)[:, None] * 3
    norm = BatchDimOnlyBatchNorm(5, positions=4).double()
    y = norm(x)
    torch.testing.assert_close(y, (x - x.mean(0)) / torch.sqrt(x.var(0) + norm.eps))
    assert y.mean(0).abs().max() < 1e-12  # every position centred on its own
    torch.testing.assert_close(norm.running_mean, 0.1 * x.mean(0))  # (T, C) running estimates
    norm.eval()
    torch.testing.assert_close(norm(x), (x - norm.running_mean) / torch.sqrt(norm.running_var + norm.eps))
    model = HierarchicalMLP(27, 10, 68, 3, batchnorm_bug=True)
    assert sum(p.numel() for p in model.parameters()) == 22397  # the lecture's row 3
    assert model(torch.zeros(2, 8, dtype=torch.long))[0].shape == (2, 27)
    with pytest.raises(ValueError, match="no conv equivalent"):
        conv_from_tree(model)


@pytest.mark.parametrize("path", ["fused", "compiled", "synced", "counted", "per-position"])
def test_batchnorm_under_bf16_autocast_keeps_float32_statistics(path, tmp_path, monkeypatch):
    """Under bf16 autocast a layer's input is bf16. Each way of computing the statistics (the fused
    kernel; the formula written out, under torch.compile, across ranks or over the rows counted; the
    lecture's per-position bug) keeps float32 running estimates, close to those of the float32 input,
    and gives bf16 back."""
    import torch.distributed as dist

    from wavenet_names.layers import BatchDimOnlyBatchNorm

    torch.manual_seed(0)
    x = torch.randn(64, 4, 16) * 3 + 1  # (B, T, C)
    make = (lambda: BatchDimOnlyBatchNorm(16, positions=4)) if path == "per-position" else (lambda: BatchNorm(16))
    exact, mixed = make(), make()
    exact(x)
    if path == "compiled":
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    if path == "synced":
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
        mixed.synced = True
    try:
        counted = {"counted": torch.ones(64, 4, dtype=torch.bool)} if path == "counted" else {}
        out = mixed(x.bfloat16(), **counted)
    finally:
        if path == "synced":
            dist.destroy_process_group()
    assert out.dtype == torch.bfloat16 and mixed.running_var.dtype == torch.float32
    torch.testing.assert_close(mixed.running_mean, exact.running_mean, rtol=0.02, atol=0.002)
    torch.testing.assert_close(mixed.running_var, exact.running_var, rtol=0.02, atol=0.002)


@pytest.mark.parametrize("rank", [0, 1])
def test_batchnorm_statistics_leave_out_the_rows_not_counted(rank, tmp_path, monkeypatch):
    """A fixed-shape step's empty rows count in no statistic: the rows counted are normalised, and
    move the running estimates, exactly as they would alone. Across ranks, a rank other than 0 also
    leaves out row 0, the node every rank computes."""
    import torch.distributed as dist

    x = torch.randn(40, 16, dtype=torch.float64) * 3 + 1
    counted = torch.rand(40) > 0.3
    counted[0] = True
    masked, alone = BatchNorm(16).double(), BatchNorm(16).double()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        monkeypatch.setattr(dist, "get_rank", lambda *args: rank)
        masked.synced = True
        out = masked(x, shared_first_row=True, counted=counted)
    finally:
        dist.destroy_process_group()
    keep = counted.clone()
    keep[0] = rank == 0
    torch.testing.assert_close(out[keep], alone(x[keep]))
    torch.testing.assert_close(masked.running_mean, alone.running_mean)
    torch.testing.assert_close(masked.running_var, alone.running_var)
    unsynced, alone = BatchNorm(16).double(), BatchNorm(16).double()  # one process: every counted row
    torch.testing.assert_close(unsynced(x, counted=counted)[counted], alone(x[counted]))
    torch.testing.assert_close(unsynced.running_var, alone.running_var)
