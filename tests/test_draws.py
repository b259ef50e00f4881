"""Names drawn for a request (draws.py): the one path of `sample` and the server. A request from
options, checked against the model; names from one seeded stream, constrained or not, with their
marks; and the batching key of the server, derived from the request's own fields."""

import json

from wavenet_names.checkpoint import load_checkpoint
from wavenet_names.choosing import SampleConfig
from wavenet_names.cli import main
from wavenet_names.draws import NameRequest, draw
from wavenet_names.loading import LoadedModel
from wavenet_names.printing import print_names
from wavenet_names.sampling import generate

from helpers import TINY, one_error


def test_cut_at_counts_the_prefix_and_a_name_cut_there_is_marked(trained, capsys):
    """--prefix abcdefghij with a limit of 3 gave 'abcdefghijoug'; a name cut at the limit could get a *."""
    assert main(["sample", "--checkpoint", str(trained), "--prefix", "abcdefghij", "--cut-at", "3"]) == 2
    assert "--prefix has 10 characters, past the 3 where a name is cut" in one_error(capsys)
    assert (
        main(["sample", "--checkpoint", str(trained), "-n", "200", "--seed", "0", "--prefix", "ka", "--cut-at", "4"])
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    cut = [line for line in lines if line.endswith("  (cut at --cut-at 4)")]
    ended = [line.removesuffix(" *") for line in lines if line not in cut]
    assert cut and ended  # an untrained model ends some names within 4 characters, not all
    assert all(len(line.split()[0]) == 4 and "*" not in line for line in cut)
    assert all(name.startswith("ka") and len(name) <= 4 for name in ended)


def test_sample_is_reproducible_and_marks_seen_names(trained, capsys):
    assert main(["sample", "--checkpoint", str(trained / "model.pt"), "-n", "12", "--seed", "3"]) == 0
    first = capsys.readouterr().out
    assert main(["sample", "--checkpoint", str(trained / "model.pt"), "-n", "12", "--seed", "3"]) == 0
    assert capsys.readouterr().out == first
    assert len(first.splitlines()) == 12
    assert (
        main(["sample", "--checkpoint", str(trained / "model.pt"), "--prefix", "an", "-n", "3", "--top-k", "500"]) == 0
    )
    assert all(line.startswith("an") for line in capsys.readouterr().out.splitlines())


def test_seen_names_are_marked(vocab, capsys):
    from wavenet_names import ConvWaveNet

    model = ConvWaveNet(len(vocab), 8, 16, 2).eval()
    config = SampleConfig(n=6, seed=1)
    names = generate(model, vocab, config)  # ['', 'h', 'zldoqm', ...]: an empty name is no item of any split
    checkpoint = {"train_words": f"{names[1]}\n{names[3]}", "held_out_words": names[5]}
    loaded = LoadedModel(model, vocab, checkpoint, "a test's model")
    print_names(draw(loaded, NameRequest(config)), loaded.mark, config.cut_at)
    lines = capsys.readouterr().out.splitlines()
    marks = [line.removeprefix(name or "(empty)") for line, name in zip(lines, names, strict=True)]
    assert marks == ["", " *", "", " *", "", " +"]


def test_items_with_dots_train_sample_and_evaluate(tmp_path, capsys):
    """Web addresses: '.' is a character of the data, and a line break the start/end token."""
    data = tmp_path / "sites.txt"
    data.write_text("".join(f"{w}.{tld}\n" for w in ("ann", "bob", "cyd", "dot", "eve") for tld in ("com", "org")))
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(out), "--steps", "10", "--eval-every", "5", *TINY]) == 0
    assert load_checkpoint(out / "model.pt")["vocab"][0] == "\n"
    assert main(["sample", "--checkpoint", str(out / "model.pt"), "-n", "50", "--prefix", "a.", "--seed", "0"]) == 0
    names = capsys.readouterr().out.splitlines()[-50:]
    assert len(names) == 50 and all(name.startswith("a.") and "\n" not in name for name in names)
    assert main(["evaluate", "--checkpoint", str(out / "model.pt"), "--split", "all"]) == 0
    assert float(capsys.readouterr().out.split()[1]) > 0


def test_samples_are_not_cut_shorter_than_the_training_items(tmp_path, capsys):
    """Items of 150 characters (product titles): by default a sample may run as long as the longest
    of them, not the 64 characters that suit names; --cut-at still caps it. A model one step from its
    random start rarely ends an item among 151 tokens, so most samples run long."""
    data = tmp_path / "titles.txt"
    data.write_text("".join("".join(chr(0x100 + (i + j) % 150) for j in range(150)) + "\n" for i in range(10)))
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(out), "--steps", "1", *TINY[:-2], "--samples", "0"]) == 0
    capsys.readouterr()
    lengths = {}
    for cut_at in (None, 64):
        extra = ["--cut-at", str(cut_at)] if cut_at else []
        assert main(["sample", "--checkpoint", str(out / "model.pt"), "-n", "20", "--seed", "0", *extra]) == 0
        lengths[cut_at] = [len(line.split("  (cut at")[0]) for line in capsys.readouterr().out.splitlines()]
    assert 64 < max(lengths[None]) <= 150
    assert max(lengths[64]) == 64


def test_the_library_loads_what_train_wrote(trained, capsys):
    """docs/library.md's example: load_model, then generate, as `sample` does."""
    from wavenet_names import SampleConfig, generate, load_model

    model, vocab, checkpoint = load_model(trained / "model.pt")
    assert not model.training and checkpoint["step"] == json.loads((trained / "metrics.json").read_text())["best_step"]
    names = generate(model, vocab, SampleConfig(n=5, seed=3))
    assert main(["sample", "--checkpoint", str(trained / "model.pt"), "-n", "5", "--seed", "3"]) == 0
    printed = [line.removesuffix(" *").split("  (cut at")[0] for line in capsys.readouterr().out.splitlines()]
    assert printed == [name or "(empty)" for name in names]  # (20 steps of training: some end at once)
