import os
from pathlib import Path

import pytest
import torch

from wavenet_names import Vocab, read_words
from wavenet_names.cli import main

from helpers import TINY

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Under pytest -n N, N workers share the cores: one thread each, and the same for the processes a
    # test starts (they read OMP_NUM_THREADS), or every worker's threads fight over every core.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

NAMES_TXT = Path(__file__).resolve().parents[1] / "data" / "names.txt"  # the repository's own copy
NAMES_BY_DECADE = NAMES_TXT.with_name("names-by-decade.tsv")


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(1234)


@pytest.fixture(scope="session")
def all_words() -> list[str]:
    return read_words(NAMES_TXT)


@pytest.fixture(scope="session")
def vocab(all_words) -> Vocab:
    return Vocab.from_words(all_words)


@pytest.fixture(scope="session")
def words(all_words) -> list[str]:
    """48 names of every length class: short, long, and the longest of the data set."""
    longest = max(all_words, key=len)
    return all_words[:: len(all_words) // 47][:47] + [longest]


@pytest.fixture(scope="session")
def small_data_file(tmp_path_factory, all_words) -> Path:
    """The first 400 names as a data file: runs of a few steps, for tests that start real processes."""
    path = tmp_path_factory.mktemp("data") / "names.txt"
    path.write_text("\n".join(all_words[:400]) + "\n")
    return path


@pytest.fixture(scope="session")
def small_table_file(tmp_path_factory) -> Path:
    """400 rows of data/names-by-decade.tsv, of every decade and both sexes: a conditional model's data."""
    lines = NAMES_BY_DECADE.read_text().splitlines()
    path = tmp_path_factory.mktemp("data") / "names.tsv"
    path.write_text("\n".join([lines[0], *lines[1 :: len(lines) // 400][:400]]) + "\n")
    return path


@pytest.fixture(scope="session")
def trained(tmp_path_factory, small_data_file) -> Path:
    """A conv run of 20 steps on small_data_file, as `train` wrote it; tests must not modify it."""
    out = tmp_path_factory.mktemp("run")
    args = ["train", "--data", str(small_data_file), "--out", str(out), "--steps", "20", "--eval-every", "5", *TINY]
    assert main(args) == 0
    return out
