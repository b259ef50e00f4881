"""`train --init MODEL` (finetune.py): a run that starts from a trained model's weights, on any list;
new characters grow the vocabulary without moving the known characters' predictions at step 0."""

import json

import pytest
import torch

from wavenet_names import finetune, shipped
from wavenet_names.checkpoint import load_checkpoint, load_model, save_checkpoint
from wavenet_names.cli import main
from wavenet_names.data import encode_names, pad_batch
from wavenet_names.models import ModelConfig, build_model
from wavenet_names.splits import Splits

FRENCH = ["émile", "zoé", "anaïs", "louis", "chloé", "léa", "hugo", "françois", "noah", "maël", "inès", "jules"]


def fine_tuned(words: list[str]):
    """The shipped names model as a fine-tune on `words` starts it: the new model at step 0, and the base."""
    base_model, base_vocab, checkpoint = load_model(shipped.resolve("names"))
    vocab = finetune.grown_vocab(checkpoint, words, "names")
    splits = Splits.from_words(words * 10, vocab)
    model_config = ModelConfig.from_saved(checkpoint["model_config"]).sized_for(splits)
    model = build_model(model_config)
    drawn = torch.get_rng_state()
    finetune.start_from(model, checkpoint, None)
    assert torch.equal(torch.get_rng_state(), drawn)  # the run's dropout and batches draw as from any start
    return model.eval(), vocab, base_model, base_vocab


def test_a_fine_tune_of_the_same_characters_starts_as_the_base(all_words):
    model, vocab, base, base_vocab = fine_tuned(all_words[:300])
    assert vocab == base_vocab
    idx, targets = pad_batch(*encode_names(all_words[:50], vocab), model.block_size)
    with torch.no_grad():
        assert torch.equal(model(idx, targets)[0], base(idx, targets)[0])


def test_new_characters_leave_the_known_characters_predictions_where_they_were(all_words):
    model, vocab, base, base_vocab = fine_tuned(FRENCH)
    new = vocab.chars[len(base_vocab) :]
    assert vocab.chars[: len(base_vocab)] == base_vocab.chars and set(new) == {"ç", "è", "é", "ë", "ï"}
    known = all_words[:200]  # every context of these is of known characters
    idx, targets = pad_batch(*encode_names(known, vocab), model.block_size)
    with torch.no_grad():
        probs = torch.softmax(model(idx, targets)[0], dim=-1)
        base_probs = torch.softmax(base(idx, targets)[0], dim=-1)
    predicted = targets != -1  # the positions of the names, not the batch's padding after them
    assert torch.allclose(probs[predicted][:, : len(base_vocab)], base_probs[predicted], rtol=0, atol=1e-7)
    assert probs[predicted][:, len(base_vocab) :].max() < 1e-7  # a new character takes next to none
    assert torch.equal(model.wte.weight[len(base_vocab)], base.wte.weight[1:].mean(dim=0))


def test_a_kind_that_cannot_grow_refuses_new_characters_and_takes_known_ones():
    checkpoint = {"vocab": ".abc", "model_config": {"kind": "transformer"}}
    assert finetune.grown_vocab(checkpoint, ["abba", "cab"], "t.pt").chars == tuple(".abc")
    refusal = r"^--init t.pt: the list has characters the base does not know \('é'\), and a transformer model cannot"
    with pytest.raises(finetune.InitError, match=refusal):
        finetune.grown_vocab(checkpoint, ["abé"], "t.pt")


def test_the_bases_end_token_is_no_new_character():
    with pytest.raises(finetune.InitError, match=r"the list has '\.', the base's start and end of every item"):
        finetune.grown_vocab({"vocab": ".abc", "model_config": {"kind": "conv"}}, ["a.b"], "b.pt")


def test_an_ensemble_is_no_base(tmp_path):
    save_checkpoint({"members": [{}, {}], "vocab": ".ab"}, tmp_path / "model.pt")
    with pytest.raises(finetune.InitError, match="an ensemble of 2 models.*member-1/model.pt"):
        finetune.base_checkpoint(tmp_path)


def test_train_init_fine_tunes_records_its_base_and_resumes(tmp_path, capsys):
    data = tmp_path / "french.txt"
    data.write_text("\n".join(FRENCH * 20) + "\n")
    out = tmp_path / "run"
    assert (
        main(["train", "--init", "names", "--data", str(data), "--steps", "4", "--eval-every", "2", "--out", str(out)])
        == 0
    )
    base = {"init": "names", "data_fingerprint": load_checkpoint(shipped.resolve("names"))["data_fingerprint"]}
    assert json.loads((out / "metrics.json").read_text())["base"] == base
    assert (
        load_checkpoint(out / "model.pt")["base"] == base
        and load_checkpoint(out / "last.pt")["train_config"]["init"] == "names"
    )
    assert main(["train", "--out", str(out), "--resume", "--steps", "6"]) == 0
    assert load_checkpoint(out / "last.pt")["step"] == 6 and load_checkpoint(out / "last.pt")["base"] == base
    assert main(["sample", "--checkpoint", str(out), "-n", "3", "--prefix", "é"]) == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--n-hidden", "64"],
            "--init names: a fine-tune keeps the base's model options, so --n-hidden cannot be given",
        ),
        (["--preset", "best"], "--init names: a fine-tune trains the base's model; it takes no --preset"),
        (["--model", "gru"], "--init names: the base is a conv model, not a gru one"),
        (["--members", "2"], "--members trains an ensemble from nothing; with --init, one model trains from the base"),
    ],
)
def test_what_a_fine_tune_cannot_take_is_refused_in_one_line(args, message, small_data_file, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--init", "names", "--data", str(small_data_file), "--out", str(out), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0]
    assert not out.exists()


def test_a_missing_base_is_refused_in_one_line(small_data_file, tmp_path, capsys):
    code = main(
        ["train", "--init", str(tmp_path / "nothing"), "--data", str(small_data_file), "--out", str(tmp_path / "run")]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no such checkpoint file" in err[0] and not (tmp_path / "run").exists()


def test_labels_the_base_does_not_have_start_new_and_the_bases_are_left_when_the_list_has_none(tmp_path, all_words):
    table = tmp_path / "pets.tsv"
    table.write_text(
        "name\tkind\n" + "".join(f"{w}\t{'cat' if i % 2 else 'dog'}\n" for i, w in enumerate(all_words[:200]))
    )
    out = tmp_path / "pets"
    assert main(["train", "--init", "names", "--data", str(table), "--steps", "2", "--out", str(out)]) == 0
    model, _, checkpoint = load_model(out)
    assert (
        checkpoint["labels"]["names"] == ["kind"] and model.labels.columns[0].weight.shape[0] == 3
    )  # cat, dog, unknown
    plain = tmp_path / "plain.txt"
    plain.write_text("\n".join(all_words[:200]) + "\n")
    assert (
        main(["train", "--init", "names-by-decade", "--data", str(plain), "--steps", "2", "--out", str(tmp_path / "p")])
        == 0
    )
    model, _, checkpoint = load_model(tmp_path / "p")
    assert model.labels is None and checkpoint["labels"] is None


def test_a_kind_without_dropout_fine_tunes_with_the_rest_of_the_recipe(tmp_path, small_data_file):
    base = tmp_path / "gru"
    tiny = ["--model", "gru", "--n-embd", "8", "--n-hidden", "8", "--steps", "2"]
    assert main(["train", "--data", str(small_data_file), "--out", str(base), *tiny]) == 0
    assert (
        main(
            [
                "train",
                "--init",
                str(base),
                "--data",
                str(small_data_file),
                "--steps",
                "2",
                "--out",
                str(tmp_path / "ft"),
            ]
        )
        == 0
    )
    checkpoint = load_checkpoint(tmp_path / "ft" / "model.pt")
    assert checkpoint["model_config"]["n_hidden"] == 8 and checkpoint["train_config"]["lr"] == finetune.RECIPE["lr"]
    assert checkpoint["train_config"]["patience"] == finetune.RECIPE["patience"]


def test_a_transformer_base_keeps_its_positions_and_refuses_longer_items(tmp_path, all_words):
    longer = tmp_path / "longer.txt"
    longer.write_text("\n".join(all_words[:300]) + "\n")
    shorter = tmp_path / "shorter.txt"
    shorter.write_text("\n".join(w for w in all_words[:300] if len(w) <= 6) + "\n")
    tiny = ["--model", "transformer", "--n-embd", "8", "--n-head", "2", "--n-layer", "1", "--steps", "2"]
    assert main(["train", "--data", str(longer), "--out", str(tmp_path / "t"), *tiny]) == 0
    assert (
        main(
            [
                "train",
                "--init",
                str(tmp_path / "t"),
                "--data",
                str(shorter),
                "--steps",
                "2",
                "--out",
                str(tmp_path / "s"),
            ]
        )
        == 0
    )
    base_longest = load_checkpoint(tmp_path / "t" / "model.pt")["model_config"]["longest"]
    assert base_longest > 6 and load_checkpoint(tmp_path / "s" / "model.pt")["model_config"]["longest"] == base_longest
    base = tmp_path / "s"
    longest = tmp_path / "longest.txt"
    longest.write_text("abcdefghijklmnop\n" * 50)
    with pytest.raises(
        finetune.InitError, match=f"longest item has 16 characters, and the base reads at most {base_longest}$"
    ):
        finetune.sized(
            ModelConfig.from_saved(load_checkpoint(base / "model.pt")["model_config"]), Splits.read(longest), base
        )


def test_a_convolution_base_takes_items_longer_than_any_it_trained_on(tmp_path):
    """The convolution has no position table: a German list's 17-character name was refused, as the
    Transformer's would be, when the base had read at most 15."""
    base = load_checkpoint(shipped.path_of("names"))
    words = tmp_path / "long.txt"
    words.write_text("".join(f"{'a' * n}b\n" for n in range(1, 25)))
    sized = finetune.sized(ModelConfig.from_saved(base["model_config"]), Splits.read(words), "names")
    assert base["model_config"]["longest"] == 15 and sized.facts.longest == 25
