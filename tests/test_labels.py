"""Global conditioning end to end: tables of items and labels, the conditional models' training,
sampling, evaluation and scoring, and every bad label a user can give."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wavenet_names import ConvWaveNet, FlatMLP, HierarchicalMLP
from wavenet_names.checkpoint import label_columns, load_checkpoint, load_model, save_checkpoint
from wavenet_names.choosing import SampleConfig
from wavenet_names.cli import main
from wavenet_names.configuration import settings
from wavenet_names.data import split_words
from wavenet_names.labels import LabelColumns, parse_table, read_items
from wavenet_names.layers import LabelEmbedding
from wavenet_names.models import batches_for
from wavenet_names.options import OptionError
from wavenet_names.sampling import generate
from wavenet_names.scoring import evaluate
from wavenet_names.splits import Facts, Splits
from wavenet_names.training import Trainer
from wavenet_names.words import DataError

from helpers import TINY, tiny

TABLE = b"name\tsex\tdecade\nmary\tF\t1880\njohn\tM\t1880\nalex\t\t1990\nalex\tM\t1990\n"


@pytest.fixture(scope="module")
def table_file(small_table_file) -> Path:
    return small_table_file


@pytest.fixture(scope="module")
def labelled_run(tmp_path_factory, table_file) -> Path:
    """A conditional model of 30 steps; tests must not modify it."""
    out = tmp_path_factory.mktemp("labelled")
    args = ["train", "--data", str(table_file), "--out", str(out), "--steps", "30", "--eval-every", "10", *TINY]
    assert main(args) == 0
    return out


def test_a_table_has_items_then_label_columns_and_an_empty_field_is_unknown():
    table = parse_table(TABLE, "t.tsv")
    assert table.items == ["mary", "john", "alex", "alex"] and table.columns == ("sex", "decade")
    columns = LabelColumns.of(table)
    assert columns.values == (("F", "M"), ("1880", "1990")) and columns.sizes == (3, 3)
    assert columns.encode(table, "t.tsv").tolist() == [[1, 1], [2, 1], [0, 2], [2, 2]]  # 0: unknown


def test_a_file_is_a_table_by_its_tsv_or_csv_suffix(tmp_path):
    (tmp_path / "a.tsv").write_bytes(TABLE)
    (tmp_path / "a.txt").write_bytes(TABLE)
    (tmp_path / "a.CSV").write_bytes(TABLE.replace(b"\t", b","))
    table = read_items(tmp_path / "a.tsv")
    assert table.items == ["mary", "john", "alex", "alex"]
    assert read_items(tmp_path / "a.CSV") == table  # a .csv trained as lines, its header an item
    assert read_items(tmp_path / "a.txt")[0] == "name\tsex\tdecade"  # a list: one item per line, as ever
    (tmp_path / "q.csv").write_bytes(b'name,note\n"mary, jane",x\nbo,"a ""b"""\n')  # the csv module's quoting
    quoted = read_items(tmp_path / "q.csv")
    assert quoted.items == ["mary, jane", "bo"] and quoted.fields == [("x",), ('a "b"',)]
    with pytest.raises(DataError, match="q2.csv line 2: 3 fields, expected 2"):
        parse_table(b"name,sex\nmary,F,extra\n", "q2.csv", ",")


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"name\tsex\nmary\tF\textra\n", "t.tsv line 2: 3 fields, expected 2 (name, sex)"),
        (b"name\tsex\nmary\n", "t.tsv line 2: 1 fields, expected 2 (name, sex)"),
        (b"name\tsex\n\tF\n", "t.tsv line 2: the name field is empty"),
        (b"name\tsex\tsex\nmary\tF\tF\n", "the header row must name every column once"),
        (b"name\tsex\n", "a header row and no items"),
        (b"name\tsex\n\nann\tF\n\n\nbo\n", "t.tsv line 6: 1 fields"),  # lines counted as the file has them
        (b"\n \n", "t.tsv: empty"),
    ],
    ids=["too-many-fields", "too-few-fields", "empty-item", "repeated-column", "no-rows", "blank-lines", "empty"],
)
def test_a_bad_table_is_one_error_naming_the_line(raw, message):
    with pytest.raises(DataError, match="^t.tsv") as e:
        parse_table(raw, "t.tsv")
    assert message in str(e.value)


def test_a_trained_models_columns_encode_another_table_by_column_name():
    columns = LabelColumns.of(parse_table(TABLE, "t.tsv"))
    reordered = parse_table(b"name\tdecade\nann\t1990\n", "u.tsv")  # no sex column: unknown
    assert columns.encode(reordered, "u.tsv").tolist() == [[0, 2]]
    with pytest.raises(DataError, match="u.tsv: column 'year' is not a label of this model .its labels are sex, dec"):
        columns.encode(parse_table(b"name\tyear\nann\t1990\n", "u.tsv"), "u.tsv")
    with pytest.raises(DataError, match="u.tsv line 4: decade '1900' is not a value .* .decade takes 1880, 1990."):
        columns.encode(parse_table(b"name\tdecade\nann\t1990\n\nann\t1900\n", "u.tsv"), "u.tsv")


@pytest.mark.parametrize(
    "given, expected",
    [
        ([], [0, 0]),
        (["sex=M"], [2, 0]),
        (["decade=1990", "sex=F"], [1, 2]),
        (["sex="], [0, 0]),  # said to be unknown
        (["sexM"], "expected COLUMN=VALUE, e.g. --label sex=F"),
        (["age=3"], "'age' is not a label of this model (its labels are sex, decade)"),
        (["sex=X"], "'X' is not a value of sex (sex takes F, M)"),
        (["sex=F", "sex=M"], "--label sex is given twice"),
    ],
)
def test_sample_labels_are_column_value_pairs(given, expected):
    columns = LabelColumns.of(parse_table(TABLE, "t.tsv"))
    if isinstance(expected, list):
        assert columns.parse(given).tolist() == expected
    else:
        with pytest.raises(DataError) as e:
            columns.parse(given)
        assert expected in str(e.value)


def test_a_tables_split_is_the_lists_and_keeps_each_item_with_its_labels(tmp_path):
    """The rows are shuffled as the items alone would be; each item keeps its own labels (here its
    first letter, as a label), and hiding the labels leaves the same items."""
    words = [f"{chr(97 + i % 26)}{'x' * (i % 7)}" for i in range(182)]  # each once (26 * 7 = 182)
    path = tmp_path / "first.tsv"
    path.write_text("item\tfirst\n" + "".join(f"{w}\t{w[0]}\n" for w in words))
    splits = Splits.read(path)
    assert (splits.train, splits.val, splits.test) == split_words(words)
    for split in ("train", "val", "test", "all"):
        firsts = [splits.label_columns.values[0][k - 1] for k in splits.labels(split)[:, 0].tolist()]
        assert firsts == [w[0] for w in splits.words(split)]
    hidden = Splits.read(path, use_labels=False)
    assert hidden.train == splits.train and hidden.labels("train") is None and hidden.label_sizes == ()
    assert hidden.fingerprint != splits.fingerprint  # a resumed run must see the same labels, not only items


def test_label_dropout_hides_labels_in_training_only():
    embedding = LabelEmbedding((3, 5), 4, dropout=0.25)
    labels = torch.ones(20_000, 2, dtype=torch.long)
    unknown = embedding(torch.zeros(1, 2, dtype=torch.long))[0]
    embedding.train()
    hidden = (embedding(labels).view(-1, 2, 4) == unknown.view(2, 4)).all(-1).float().mean().item()
    assert 0.23 < hidden < 0.27  # each label on its own (20,000 rows: the seed makes it exact)
    embedding.eval()
    assert not (embedding(labels).view(-1, 2, 4) == unknown.view(2, 4)).all(-1).any()


@pytest.mark.parametrize("model", [ConvWaveNet(27, 8, 16, 2), HierarchicalMLP(27, 8, 16, 2), FlatMLP(27, 8, 16, 3)])
def test_a_model_without_labels_refuses_them(model):
    idx = torch.zeros(2, model.block_size, dtype=torch.long)
    with pytest.raises(ValueError, match="trained without labels"):
        model(idx, labels=torch.zeros(2, 1, dtype=torch.long))


@pytest.mark.parametrize("kind", ["conv", "hierarchical"])
def test_a_conditional_trainer_trains_saves_and_resumes_its_labels(kind, table_file):
    splits = Splits.read(table_file)
    options = {"model": kind, "n_embd": 8, "n_hidden": 16, "n_layers": 2, "steps": 6, "batch_size": 16}
    trainer = Trainer(*settings(options, splits.facts), splits)
    for _ in range(6):
        trainer.train_step()
    checkpoint = trainer.checkpoint()
    assert LabelColumns.from_saved(checkpoint["labels"]) == splits.label_columns
    assert checkpoint["model_config"]["label_sizes"] == (3, 15)  # F, M and unknown; 14 decades and unknown
    val = batches_for(trainer.model, trainer.splits, "val")
    loss = evaluate(trainer.model, val)
    hidden = Splits.read(table_file, use_labels=False)
    assert evaluate(trainer.model, batches_for(trainer.model, hidden, "val")) != loss  # the labels are read
    same = Splits.read(table_file, splits.vocab, splits.label_columns)
    again = Trainer.from_checkpoint(checkpoint, same, torch.device("cpu"))
    assert evaluate(again.model, val) == loss


def test_train_on_a_table_then_sample_by_label(labelled_run, capsys):
    checkpoint = load_checkpoint(labelled_run / "model.pt")
    assert label_columns(checkpoint).names == ("sex", "decade")
    capsys.readouterr()
    args = ["sample", "--checkpoint", str(labelled_run / "model.pt"), "-n", "40", "--seed", "1"]
    assert main([*args, "--label", "sex=F", "--label", "decade=1920"]) == 0
    girls_1920s = capsys.readouterr().out
    assert main([*args, "--label", "decade=1920", "--label", "sex=F"]) == 0  # in any order
    assert capsys.readouterr().out == girls_1920s
    assert main([*args, "--label", "sex=M", "--label", "decade=2000"]) == 0
    assert capsys.readouterr().out != girls_1920s
    assert main(args) == 0  # no label: every one unknown
    assert len(capsys.readouterr().out.splitlines()) == 40


def test_evaluate_and_score_read_the_labels_of_a_table(labelled_run, table_file, tmp_path, capsys):
    model, vocab, checkpoint = load_model(labelled_run / "model.pt")
    splits = Splits.read(table_file, vocab, label_columns(checkpoint))
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(labelled_run / "model.pt")]) == 0
    assert capsys.readouterr().out == f"val {evaluate(model, batches_for(model, splits, 'val')):.4f}\n"
    rows = tmp_path / "few.tsv"
    rows.write_text("name\tsex\tdecade\nmary\tF\t1900\nmary\tM\t1900\nmary\t\t\n")
    assert main(["score", str(rows), "--checkpoint", str(labelled_run / "model.pt")]) == 0
    lines = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [line[1:] for line in lines] == [["mary", "F", "1900"], ["mary", "M", "1900"], ["mary", "", ""]]
    assert len({line[0] for line in lines}) == 3  # a girl's name scores otherwise as a boy's, and unlabelled


def test_labels_hidden_train_a_model_of_the_items_alone(table_file, tmp_path):
    out = tmp_path / "hidden"
    assert main(["train", "--data", str(table_file), "--out", str(out), "--steps", "4", "--no-labels", *TINY]) == 0
    model, _, checkpoint = load_model(out / "model.pt")
    assert label_columns(checkpoint) is None and model.labels is None
    assert main(["sample", "--checkpoint", str(out / "model.pt"), "--label", "sex=F"]) == 2


def test_a_checkpoint_from_before_labels_loads_and_samples(labelled_run, tmp_path, capsys, all_words):
    """An earlier version wrote no labels, no label_sizes, no label_dropout, and trained on lists."""
    path = tmp_path / "names.txt"
    path.write_text("\n".join(all_words[:200]) + "\n")
    out = tmp_path / "old"
    assert main(["train", "--data", str(path), "--out", str(out), "--steps", "3", *TINY]) == 0
    checkpoint = load_checkpoint(out / "model.pt")
    del checkpoint["labels"], checkpoint["train_config"]["labels"]
    del checkpoint["model_config"]["label_sizes"], checkpoint["model_config"]["label_dropout"]
    save_checkpoint({k: v for k, v in checkpoint.items() if k != "format"}, out / "model.pt")
    assert main(["sample", "--checkpoint", str(out / "model.pt"), "-n", "3", "--seed", "0"]) == 0
    assert main(["train", "--out", str(out), "--resume", "--steps", "5"]) == 0  # last.pt, as written
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(out / "model.pt"), "--label", "sex=F"]) == 2
    assert "this model was trained without labels" in capsys.readouterr().err


def bad_table(tmp_path, content: bytes) -> str:
    path = tmp_path / "bad.tsv"
    path.write_bytes(content)
    return str(path)


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda t, c: ["train", "--data", bad_table(t, b"name\tsex\nann\tF\nbo\n")], "bad.tsv line 3: 1 fields, expe"),
        (
            lambda t, c: ["train", "--data", bad_table(t, b"name\tsex\nann\tF\n" * 8), "--model", "flat"],
            "--model flat takes no labels (conv and hierarchical do): train it with --no-labels",
        ),
        (lambda t, c: ["sample", "--checkpoint", c, "--label", "sex=X"], "'X' is not a value of sex (sex takes F, M)"),
        (lambda t, c: ["sample", "--checkpoint", c, "--label", "era=1920"], "'era' is not a label of this model"),
        (lambda t, c: ["sample", "--checkpoint", c, "--label", "sex"], "expected COLUMN=VALUE"),
        (
            lambda t, c: ["evaluate", "--checkpoint", c, "--data", bad_table(t, b"name\tyear\nann\t1\n" * 8)],
            "bad.tsv: column 'year' is not a label of this model (its labels are sex, decade)",
        ),
        (
            lambda t, c: ["score", bad_table(t, b"name\tdecade\nann\t1870\n"), "--checkpoint", c],
            "bad.tsv line 2: decade '1870' is not a value this model knows (decade takes 1880, 1890, ",
        ),
    ],
    ids=[
        "wrong-field-count",
        "flat-model",
        "unknown-value",
        "unknown-column",
        "no-equals",
        "evaluate-column",
        "score-value",
    ],
)
def test_bad_labels_are_one_line_and_harm_nothing(make_args, message, tmp_path, labelled_run, capsys):
    before = {name: (labelled_run / name).read_bytes() for name in ("model.pt", "last.pt", "metrics.json")}
    args = make_args(tmp_path, str(labelled_run / "model.pt"))
    if args[0] == "train":  # even so, nothing in the earlier run is touched
        tiny_flags = tiny("flat") if "flat" in args else TINY
        args += ["--out", str(labelled_run), "--overwrite", *tiny_flags]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err, err
    for name, content in before.items():
        assert (labelled_run / name).read_bytes() == content, f"{name} changed"


@pytest.mark.slow  # starts processes
def test_a_label_for_a_model_without_labels_is_one_line(tmp_path, all_words):
    path = tmp_path / "names.txt"
    path.write_text("\n".join(all_words[:100]) + "\n")
    assert main(["train", "--data", str(path), "--out", str(tmp_path / "run"), "--steps", "2", *TINY]) == 0
    checkpoint = str(tmp_path / "run" / "model.pt")
    result = subprocess.run(
        [sys.executable, "-m", "wavenet_names", "sample", "--checkpoint", checkpoint, "--label", "sex=F"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        "wavenet-names sample: error: --label: this model was trained without labels (on a list "
        "of items, or with --no-labels)\n"
    )


def test_samples_follow_their_label(table_file):
    """A model that has learnt little still tells its labels apart: every label value samples its own
    names, and the same seed and labels give the same ones."""
    splits = Splits.read(table_file)
    trainer = Trainer(
        *settings({"n_embd": 8, "n_hidden": 16, "n_layers": 2, "steps": 1}, splits.facts),
        splits,
    )
    trainer.train_step()
    config = SampleConfig(n=20, seed=3)
    by_label = {sex: generate(trainer.model, splits.vocab, config, labels=torch.tensor([sex, 0])) for sex in (0, 1, 2)}
    assert len({tuple(names) for names in by_label.values()}) == 3
    assert generate(trainer.model, splits.vocab, config, labels=torch.tensor([1, 0])) == by_label[1]


def test_an_ensemble_of_conditional_models_samples_and_evaluates_by_label(table_file, tmp_path, capsys):
    out = tmp_path / "ensemble"
    args = ["train", "--data", str(table_file), "--out", str(out), "--steps", "4", "--members", "2", *TINY]
    assert main(args) == 0
    model, vocab, checkpoint = load_model(out / "model.pt")
    assert len(model.members) == 2 and label_columns(checkpoint).names == ("sex", "decade")
    capsys.readouterr()
    sample = ["sample", "--checkpoint", str(out / "model.pt"), "-n", "20", "--seed", "0"]
    assert main([*sample, "--label", "sex=F"]) == 0
    girls = capsys.readouterr().out
    assert main([*sample, "--label", "sex=M"]) == 0
    assert capsys.readouterr().out != girls
    with_a_member = ["--checkpoint", str(out / "model.pt"), "--checkpoint", str(out / "member-1" / "model.pt")]
    assert main(["evaluate", *with_a_member]) == 0  # an ensemble and a model of its own, as one


def test_a_trainer_refuses_labels_its_model_or_options_do_not_take(table_file):
    splits = Splits.read(table_file)
    with pytest.raises(OptionError, match="labels is off, but the data was read with its labels"):
        Trainer(*settings({"labels": False}, splits.facts), splits)
    with pytest.raises(ValueError, match=r"the model's label sizes \(\) are not the data's \(3, 15\)"):
        Trainer(*settings({}, Facts(len(splits.vocab))), splits)
