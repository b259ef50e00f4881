"""Constraints on sampled names: each one holds, the names kept follow the model's distribution given
the constraint (not a masked one), a constraint too rare is one line with what was found, and bad
constraints are refused before anything is drawn."""

import math
from collections import Counter

import pytest
import torch

from wavenet_names.choosing import SampleConfig, Sampled
from wavenet_names.cli import main
from wavenet_names.constraints import Constraints, TooRare
from wavenet_names.draws import NameRequest, draw
from wavenet_names.loading import LoadedModel
from wavenet_names.models import ModelConfig, build_model
from wavenet_names.sampling import stream_sampled
from wavenet_names.words import Seen

from helpers import TINY

NOBODY = Seen(frozenset(), frozenset())


@pytest.fixture(scope="module")
def model():
    """An untrained ConvWaveNet: each character about equally likely, the end token among them, so
    that names run long (about 26 characters) and a length range keeps about one in eight."""
    torch.manual_seed(0)
    return build_model(ModelConfig.of("conv", n_embd=8, n_hidden=16, n_layers=2)).eval()


@pytest.fixture(scope="module")
def memorised(tmp_path_factory):
    """A run that has learnt eight short names, which it samples again and again."""
    data = tmp_path_factory.mktemp("data") / "names.txt"
    data.write_text("".join(f"{name}\n" for name in ["anna", "bob", "eve", "ida", "amy", "zoe", "liv", "max"] * 4))
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "--data", str(data), "--out", str(out), "--steps", "150", *TINY, "--lr", "0.03"]) == 0
    return out


def loaded(model, vocab, seen: Seen = NOBODY) -> LoadedModel:
    """`model` as `sample` loads a checkpoint, trained on the names of `seen`."""
    checkpoint = {"train_words": "\n".join(seen.train), "held_out_words": "\n".join(seen.held_out)}
    return LoadedModel(model, vocab, checkpoint, "a test's model")


def stream_constrained(model, vocab, config: SampleConfig, constraints: Constraints, seen: Seen = NOBODY):
    return draw(loaded(model, vocab, seen), NameRequest(config, constraints))


def constrained(model, vocab, n, seed=0, seen=NOBODY, **constraints):
    config = SampleConfig(n=n, seed=seed)
    return [s.name for s in stream_constrained(model, vocab, config, Constraints(**constraints), seen)]


def masked(model, vocab, n: int, lowest: int, highest: int, seed: int) -> list[str]:
    """What the constraint must not be: the end token forbidden before `lowest` characters, and forced
    at `highest`. Every name meets the range, but the short names' mass goes to their continuations."""
    generator = torch.Generator().manual_seed(seed)
    state = model.init_state(n)
    logits, state = model.step(torch.zeros(n, dtype=torch.long), state)
    names = [[] for _ in range(n)]
    done = torch.zeros(n, dtype=torch.bool)
    with torch.no_grad():
        for length in range(highest + 1):
            if length < lowest:
                logits[:, 0] = float("-inf")
            elif length == highest:
                logits[:, 1:] = float("-inf")
            ix = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator).squeeze(1)
            done |= ix == 0
            for row in (~done).nonzero().flatten().tolist():
                names[row].append(int(ix[row]))
            logits, state = model.step(ix, state)
    return [vocab.decode(name) for name in names]


def same_distribution(a: Counter, b: Counter) -> bool:
    """A two-sample chi-square test of homogeneity at p = 1e-4 (Wilson-Hilferty's critical value)."""
    total_a, total_b = sum(a.values()), sum(b.values())
    cells = [k for k in set(a) | set(b) if (a[k] + b[k]) >= 10]  # the rare cells have no power
    stat = 0.0
    for k in cells:
        pooled = (a[k] + b[k]) / (total_a + total_b)
        for count, total in ((a[k], total_a), (b[k], total_b)):
            stat += (count - pooled * total) ** 2 / (pooled * total)
    df = len(cells) - 1
    critical = df * (1 - 2 / (9 * df) + 3.719 * math.sqrt(2 / (9 * df))) ** 3
    return stat < critical


def test_kept_names_follow_the_models_distribution_given_the_constraint(model, vocab):
    """Against rejection done by hand, from draws with another seed: the same distribution of lengths
    and of first characters. Masking meets the same constraint with another distribution, and the
    test tells it apart: it is not blind."""
    lowest, highest, n = 3, 6, 2000
    ours = constrained(model, vocab, n, seed=1, min_len=lowest, max_len=highest)
    assert len(ours) == n and all(lowest <= len(name) <= highest for name in ours)
    config = SampleConfig(n=20_000, seed=2, cut_at=highest + 1)  # a name cut at 7 is longer than 6 anyway
    by_hand = [s.name for s in stream_sampled(model, vocab, config) if s.ended and lowest <= len(s.name) <= highest]
    assert len(by_hand) > 1500
    mask = masked(model, vocab, n, lowest, highest, seed=3)
    for feature in (len, lambda name: name[0]):
        assert same_distribution(Counter(map(feature, ours)), Counter(map(feature, by_hand)))
    assert not same_distribution(Counter(map(len, mask)), Counter(map(len, by_hand)))


def test_each_constraint_holds(model, vocab):
    exclude = tuple(constrained(model, vocab, 30, seed=5, max_len=3))  # short names, likely to come again
    kept = constrained(model, vocab, 60, seed=5, max_len=5, ends_with="a", exclude=exclude, unique=True)
    assert len(kept) == len(set(kept)) == 60
    assert all(len(name) <= 5 and name.endswith("a") and name not in exclude for name in kept)
    seen = Seen(frozenset(kept[:20]), frozenset(kept[20:40]))
    again = constrained(model, vocab, 60, seed=5, max_len=5, ends_with="a", new=True, seen=seen)
    assert not set(again) & set(kept[:40])


def test_a_constraint_keeps_the_names_of_the_same_seed_that_meet_it(model, vocab):
    """The first draw is the unconstrained draw of the same seed: its names that meet a loose
    constraint come first, in order (the cut ones are drawn again)."""
    config = SampleConfig(n=50, seed=7)
    plain = list(stream_sampled(model, vocab, config))
    ended = [s for s in plain if s.ended]
    assert 0 < len(ended) < len(plain)
    loose = list(stream_constrained(model, vocab, config, Constraints(exclude=("nobody",)), NOBODY))
    assert loose[: len(ended)] == ended and len(loose) == 50


def test_max_len_redraws_a_long_name_where_cut_at_cuts_it(model, vocab):
    cut = list(stream_sampled(model, vocab, SampleConfig(n=200, seed=0, cut_at=5)))
    assert any(not s.ended and len(s.name) == 5 for s in cut)
    kept = list(stream_constrained(model, vocab, SampleConfig(n=200, seed=0), Constraints(max_len=5), NOBODY))
    assert len(kept) == 200 and all(s.ended and len(s.name) <= 5 for s in kept)


def test_the_accepted_test_rejects_a_cut_name():
    accepts = Constraints(min_len=1).accepts(NOBODY)
    assert accepts(Sampled("anna", True)) and not accepts(Sampled("anna", False)) and not accepts(Sampled("", True))


def test_a_constraint_too_rare_yields_what_it_found_then_says_so(model, vocab):
    found = []
    with pytest.raises(TooRare) as caught:
        for sampled in stream_constrained(
            model, vocab, SampleConfig(n=20, seed=0), Constraints(max_len=3, ends_with="qq", tries=2000), NOBODY
        ):
            found.append(sampled.name)
    assert caught.value.found == len(found) < 20 and caught.value.tries == 2000
    assert all(name.endswith("qq") for name in found)


def test_sample_prints_what_it_found_and_one_line_with_the_count(memorised, capsys):
    args = ["sample", "--checkpoint", str(memorised), "-n", "5", "--seed", "0"]
    assert main([*args, "--ends-with", "zzz", "--tries", "500"]) == 1
    captured = capsys.readouterr()
    found = captured.out.splitlines()
    assert all(name.split()[0].endswith("zzz") for name in found)
    assert captured.err.splitlines() == [
        f"wavenet-names sample: found {len(found)} of 5 names that meet the constraints in 500 tries; "
        "loosen them, or allow more with --tries"
    ]


def test_sample_new_unique_and_exclude_from_the_command_line(memorised, tmp_path, capsys):
    args = ["sample", "--checkpoint", str(memorised), "-n", "40", "--seed", "0", "--min-len", "3", "--max-len", "6"]
    assert main(args) == 0
    first = capsys.readouterr().out.splitlines()
    assert any(line.endswith(" *") for line in first)  # it has learnt its eight names
    avoid = tmp_path / "avoid.txt"
    avoid.write_text("\n".join(line.split()[0] for line in first[:20]) + "\n")
    assert main([*args, "--new", "--unique", "--exclude", str(avoid)]) == 0
    names = capsys.readouterr().out.splitlines()
    assert len(names) == len(set(names)) == 40
    assert all(not line.endswith(("*", "+")) and 3 <= len(line) <= 6 for line in names)
    assert not set(names) & set(avoid.read_text().split())


@pytest.mark.parametrize(
    "extra, problem",
    [
        (["--min-len", "5", "--max-len", "4"], "--min-len and --max-len leave no length: 5 > 4"),
        (["--max-len", "0"], "--max-len must be at least 1, got 0"),
        (["--prefix", "anna", "--max-len", "3"], "--max-len is 3, shorter than the prefix 'anna'"),
        (["--ends-with", "a1"], "'1'"),
        (["--exclude", "no-such-file.txt"], "no-such-file.txt: no such file"),
        (["--tries", "0"], "--tries must be at least 1, got 0"),
    ],
)
def test_bad_constraints_are_one_line_before_any_name(extra, problem, memorised, capsys):
    assert main(["sample", "--checkpoint", str(memorised), *extra]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and problem in err[0], err
