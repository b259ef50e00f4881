import numpy as np
import pytest
import torch

from wavenet_names import ConvWaveNet, HierarchicalMLP, encode_names, pad_batch, tree_from_conv
from wavenet_names.choosing import SampleConfig, nucleus
from wavenet_names.sampling import generate, stream

from helpers import both_views, cycled_labels, sgd_steps

LABEL_SIZES = (3, 15)  # a conditional model's two label columns, like sex and decade
LABELLED = pytest.mark.parametrize("labelled", [False, True], ids=["unlabelled", "labelled"])


def a_little_trained(model_cls, words, vocab, n_layers, labelled=False):
    _, _, idx, targets = both_views(words, vocab, 2**n_layers)
    sizes = dict(label_sizes=LABEL_SIZES) if labelled else {}
    model = ConvWaveNet(len(vocab), 10, 32, n_layers, **sizes)
    sgd_steps(model, idx, targets, labels=cycled_labels(len(words), LABEL_SIZES) if labelled else None)
    return model.eval() if model_cls is ConvWaveNet else tree_from_conv(model).eval()


@LABELLED
@pytest.mark.parametrize("n_layers", [1, 2, 3, 5, 8])
def test_cached_generation_gives_the_full_forward_logits(n_layers, labelled, words, vocab):
    model = a_little_trained(ConvWaveNet, words, vocab, n_layers, labelled)
    batch = words[:8]
    labels = cycled_labels(len(batch), LABEL_SIZES) if labelled else None
    idx, targets = pad_batch(*encode_names(batch, vocab), model.block_size)
    full, _ = model(idx, labels=labels)  # (B, T, vocab): every position at once
    state = model.init_state(len(batch), labels)
    for j in range(targets.shape[1]):  # feed '.', then each character: output j sees idx[:, j + block - 1]
        logits, state = model.step(idx[:, j + model.block_size - 1], state)
        assert (logits - full[:, j]).abs().max() <= 1e-5
    assert state.t == targets.shape[1]


@LABELLED
@pytest.mark.parametrize("n_layers", [1, 3, 6])
def test_cached_and_recomputed_generation_give_the_same_names(n_layers, labelled, words, vocab):
    model = a_little_trained(ConvWaveNet, words, vocab, n_layers, labelled)
    config = SampleConfig(n=30, seed=7)
    labels = torch.tensor([2, 9]) if labelled else None  # (K,): the same labels for every name
    cached = generate(model, vocab, config, use_cache=True, labels=labels)
    assert cached == generate(model, vocab, config, use_cache=False, labels=labels)
    assert cached == generate(model, vocab, config, labels=labels)  # the same seed, the same names
    assert cached != generate(model, vocab, SampleConfig(n=30, seed=8), labels=labels)
    assert generate(tree_from_conv(model), vocab, config, labels=labels) == cached  # the tree samples alike
    if labelled:  # other labels, other names
        assert cached != generate(model, vocab, config, labels=torch.tensor([1, 3]))


def test_prefix_top_k_and_temperature(words, vocab):
    model = a_little_trained(ConvWaveNet, words, vocab, 3)
    names = generate(model, vocab, SampleConfig(n=10, seed=0, prefix="ka"))
    assert all(name.startswith("ka") for name in names)
    top1 = generate(model, vocab, SampleConfig(n=5, seed=0, top_k=1))
    assert len(set(top1)) == 1  # greedy: every row the same name
    clamped = generate(model, vocab, SampleConfig(n=10, seed=0, top_k=1000))  # larger than the vocabulary
    assert clamped == generate(model, vocab, SampleConfig(n=10, seed=0))
    cold = generate(model, vocab, SampleConfig(n=5, seed=0, temperature=1e-4))
    assert cold == top1
    assert generate(model, vocab, SampleConfig(n=5, seed=0, top_p=1e-6)) == top1  # a nucleus of one
    assert generate(model, vocab, SampleConfig(n=10, seed=0, top_p=1.0)) == clamped  # every character


def test_the_nucleus_is_the_fewest_most_likely_characters_that_reach_p():
    probs = np.array([[0.1, 0.5, 0.15, 0.25], [0.97, 0.01, 0.01, 0.01]])
    kept = lambda p: (nucleus(probs, p) > 0).astype(int).tolist()  # noqa: E731
    assert kept(0.7) == [[0, 1, 0, 1], [1, 0, 0, 0]]  # 0.5 + 0.25 reach 0.7
    assert kept(0.76) == [[0, 1, 1, 1], [1, 0, 0, 0]]
    assert kept(0.975) == [[1, 1, 1, 1], [1, 1, 0, 0]]  # 0.9 is short of it; of equals, the first
    assert nucleus(probs, 0.7)[0].tolist() == [0.0, 0.5, 0.0, 0.25]  # kept as they were


@pytest.mark.parametrize("use_cache", [True, False])
def test_names_come_in_batches_from_one_seeded_stream(use_cache, words, vocab):
    model = a_little_trained(ConvWaveNet, words, vocab, 2)
    config = SampleConfig(n=10, seed=3, batch_size=4)  # batches of 4, 4 and 2
    names = generate(model, vocab, config, use_cache)
    assert len(names) == 10
    assert names[:4] == generate(model, vocab, SampleConfig(n=4, seed=3), use_cache)  # the first batch: -n 4
    assert names[4:8] != names[:4]  # the next batch goes on drawing from the same generator
    batches = stream(model, vocab, config, use_cache)
    assert next(batches) == names[0]  # a name before the last batch is made
    assert list(batches) == names[1:]


@pytest.mark.parametrize("model_cls", [ConvWaveNet, HierarchicalMLP])
def test_sampling_in_a_training_loop_samples_in_eval_mode_and_leaves_it_training(model_cls, words, vocab):
    """A training loop may sample to see how it goes: the names are those of eval mode (BatchNorm's
    running statistics), and the model comes back in training mode, for the loop's next step."""
    model = a_little_trained(model_cls, words, vocab, 2)
    config = SampleConfig(n=8, seed=5)
    expected = generate(model, vocab, config)  # the model is in eval mode here
    assert generate(model.train(), vocab, config) == expected
    assert model.training


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("temperature", 0.0, "temperature"),
        ("temperature", -1.0, "temperature"),
        ("top_k", 0, "top_k must be at least 1"),
        ("top_p", 0.0, r"top_p must be in \(0, 1\]"),
        ("top_p", 1.5, r"top_p must be in \(0, 1\]"),
        ("top_p", float("nan"), r"top_p must be in \(0, 1\]"),
        ("n", 0, "n must be at least 1"),
        ("batch_size", 0, "batch_size must be at least 1"),
    ],
)
def test_bad_sample_configs_are_refused(field, value, message):
    with pytest.raises(ValueError, match=message):
        SampleConfig(**{field: value})
