"""What a user with a list of their own trips over: repeats that leak from train into val, a
vocabulary of odd characters made silently, an --out that cannot be written, a list so large that
its checkpoints grew with it, a model chosen without a word, and constraints that ignore case."""

import shutil

import pytest

from wavenet_names import shipped
from wavenet_names import splits as splits_module
from wavenet_names.checkpoint import load_checkpoint
from wavenet_names.choosing import Sampled
from wavenet_names.cli import main
from wavenet_names.constraints import Constraints
from wavenet_names.splits import Splits
from wavenet_names.words import Seen

from conftest import NAMES_TXT
from helpers import TINY, one_error

ELVES = ["arwen", "elrond", "galadriel", "legolas", "celeborn", "thranduil", "gilgalad", "haldir", "luthien", "idril"]


def listed(path, words):
    path.write_text("\n".join(words) + "\n", encoding="utf-8")
    return path


def train(data, out, *flags):
    return main(["train", "--data", str(data), "--out", str(out), "--steps", "4", "--eval-every", "2", *TINY, *flags])


def test_a_repeated_line_is_dropped_before_the_split_and_the_run_says_so(tmp_path, capsys):
    """arwen three times put two in train and one in val: val scored the model on a name it trained on."""
    data = listed(tmp_path / "elves.txt", [*ELVES, "arwen", "arwen"])  # arwen three times
    splits = Splits.read(data)
    items = splits.train + splits.val + splits.test
    assert sorted(items) == sorted(ELVES) and splits.repeats == 2
    assert train(data, tmp_path / "run") == 0
    assert f"{data}: dropped 2 repeated lines before the split" in capsys.readouterr().out


def test_a_tables_line_is_its_item_with_its_labels(tmp_path):
    """The same name in two decades is two lines of the table, not a repeat; the same row twice is one."""
    rows = ["name\tdecade", *(f"{w}\t1920" for w in ELVES), "arwen\t1930", "arwen\t1920"]
    table = tmp_path / "elves.tsv"
    table.write_text("\n".join(rows) + "\n", encoding="utf-8")
    splits = Splits.read(table)
    assert splits.repeats == 1 and len(splits.words("all")) == len(ELVES) + 1
    assert Splits.read(table, use_labels=False).words("all") == splits.words("all")  # the same split, labels hidden


def test_the_shipped_names_txt_keeps_its_repeats_and_a_copy_does_not(tmp_path):
    """Every figure of data/names.txt (val 1.9771) is of its split with its 2,559 repeats in it."""
    as_shipped = Splits.read(NAMES_TXT)
    assert as_shipped.repeats == 0 and len(as_shipped.words("all")) == 32_469
    copy = Splits.read(shutil.copy(NAMES_TXT, tmp_path / "names.txt"))
    assert copy.repeats == 2_559 and len(copy.words("all")) == 32_469 - 2_559


def test_a_vocabulary_beyond_a_to_z_is_said_and_mixed_case_is_warned_of(tmp_path, capsys):
    data = listed(tmp_path / "odd.txt", [*ELVES, "Éowyn", "gil galad", "Arwen"])
    assert train(data, tmp_path / "run") == 0
    out, err = capsys.readouterr()
    assert f"{data}: " in out and "beyond a-z: ' ' 'A' 'É'" in out
    assert "warning: " in err and "mixes upper and lower case: 'A' and 'a'" in err
    plain = listed(tmp_path / "plain.txt", ELVES)
    assert train(plain, tmp_path / "plain") == 0
    out, err = capsys.readouterr()
    assert str(plain) not in out and "warning" not in err


@pytest.mark.parametrize(
    ("out", "expected"),
    [
        ("/", "--out /: the root of a file system"),
        ("a-file/run", "a-file/run: cannot be written (Not a directory)"),
    ],
)
def test_an_out_that_cannot_be_written_is_refused_before_the_first_step(tmp_path, capsys, monkeypatch, out, expected):
    """A read-only --out failed after 2,000 steps, writing model.pt; --out / wrote five files into the root."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("")
    data = listed(tmp_path / "elves.txt", ELVES)
    before = sorted(tmp_path.rglob("*"))
    assert train(data, out) == 2
    assert expected in one_error(capsys)
    assert sorted(tmp_path.rglob("*")) == before  # nothing written, not even a directory


def test_another_runs_figures_are_not_replaced_without_overwrite(tmp_path, capsys):
    """The guard looked for a checkpoint only: metrics.json and loss.png were replaced silently."""
    data = listed(tmp_path / "elves.txt", ELVES)
    figures = tmp_path / "figures"
    figures.mkdir()
    (figures / "metrics.json").write_text("{}")
    assert train(data, figures) == 2
    assert "already holds a run's metrics.json: pass --overwrite" in one_error(capsys)
    assert (figures / "metrics.json").read_text() == "{}"
    assert train(data, figures, "--overwrite") == 0


def test_a_checkpoint_of_a_large_list_keeps_no_names_and_marks_from_its_file(tmp_path, capsys, monkeypatch):
    """6.7 million lines made 51 MB checkpoints, all of it their names: past SEEN_LIMIT characters of
    names a checkpoint keeps none, and sample reads them from the data file, if it is the same."""
    monkeypatch.setattr(splits_module, "SEEN_LIMIT", 40)  # so that ten names are a large list
    data = listed(tmp_path / "elves.txt", ELVES)
    assert train(data, tmp_path / "run") == 0
    checkpoint = load_checkpoint(tmp_path / "run" / "model.pt")
    assert "train_words" not in checkpoint and Seen.of_checkpoint(checkpoint) is None
    splits = Splits.read(data)
    capsys.readouterr()
    prefix = ["sample", "--checkpoint", str(tmp_path / "run"), "-n", "200", "--seed", "0"]
    assert main([*prefix, "--prefix", splits.train[0]]) == 0
    out, err = capsys.readouterr()
    assert err == "" and f"{splits.train[0]} *" in out.splitlines()  # marked from the file
    data.rename(tmp_path / "moved.txt")
    assert main([*prefix, "-n", "3"]) == 0
    assert "names are not marked * or +: its data file cannot be read" in capsys.readouterr().err
    assert main([*prefix, "--new"]) == 2
    assert "--new cannot be kept: names are not marked" in one_error(capsys)


def test_sample_says_which_model_it_chose(tmp_path, capsys, monkeypatch, small_data_file):
    """Without --checkpoint, a user who trained once never saw the shipped model again, without a word."""
    monkeypatch.chdir(tmp_path)
    assert main(["sample", "-n", "1"]) == 0
    assert f"the shipped model names (val {shipped.record()['names']['val_loss']:.4f})" in one_error(capsys)
    assert main(["train", "--data", str(small_data_file), "--steps", "2", "--eval-every", "2", *TINY]) == 0
    capsys.readouterr()
    assert main(["sample", "-n", "1"]) == 0
    assert one_error(capsys).startswith("wavenet-names sample: out/model.pt (val ")
    assert main(["sample", "-n", "1", "--checkpoint", "names"]) == 0
    assert capsys.readouterr().err == ""  # chosen by the user: nothing to say


def test_exclude_leaves_out_a_name_whatever_its_case():
    """`Emma` in the --exclude file did not exclude `emma`."""
    accepts = Constraints(exclude=("Emma", "ÉOWYN")).accepts(Seen(frozenset(), frozenset()))
    assert [accepts(Sampled(name, True)) for name in ("emma", "EMMA", "éowyn", "emmy")] == [False, False, False, True]


def test_score_advises_lowercase_only_where_it_would_help(tmp_path, capsys):
    """score --lowercase's error still advised --lowercase."""
    items = listed(tmp_path / "items.txt", ["emma", "Émile"])
    base = ["score", str(items), "--checkpoint", "names"]
    assert main([*base, "--lowercase"]) == 2
    assert one_error(capsys).endswith("('é'); pass --skip-unknown")
    listed(items, ["emma", "Anna"])
    assert main(base) == 2
    assert one_error(capsys).endswith("('A'); pass --lowercase or --skip-unknown")
