"""`wavenet-names export` and the sampler without PyTorch (portable.py): the graphs compute what the
model computes, the step graph what the full graph does, the same seed draws the same names, and a
fresh interpreter that cannot import torch samples and scores from an export."""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from wavenet_names.cli import main
from wavenet_names.data import encode_names, pad_batch
from wavenet_names.draws import NameRequest, draw
from wavenet_names.export import export
from wavenet_names.exported import FULL, KEY, STEP
from wavenet_names.loading import LoadedModel
from wavenet_names.onnx_cli import main as onnx_main
from wavenet_names.portable import OnnxModel
from wavenet_names.scoring import evaluate_data, score
from wavenet_names.transformer import Transformer
from wavenet_names.wavenet import Blocks, ConvWaveNet
from wavenet_names.words import DataError, Vocab

from conftest import NAMES_BY_DECADE, NAMES_TXT
from helpers import one_error

TOLERANCE = 1e-5
DECADE_LABELS = ("sex=F", "decade=1920")


@pytest.fixture(scope="module")
def shipped_exports(tmp_path_factory) -> dict:
    """The shipped models, loaded, and exported: {name: (LoadedModel, OnnxModel)}."""
    exports = {}
    for name in ("names", "names-by-decade"):
        loaded = LoadedModel.load([name])
        out = tmp_path_factory.mktemp("onnx") / name
        export(loaded, out)
        exports[name] = loaded, OnnxModel.load(out)
    return exports


def _padded(words: list[str], vocab: Vocab, block_size: int) -> np.ndarray:
    """block_size '.' tokens, then each name, right-padded: the full graph's input, (B, T)."""
    idx, _ = pad_batch(*encode_names(words, vocab), block_size)
    return idx.numpy()


def _labels_of_table(n: int) -> list[str]:
    lines = NAMES_BY_DECADE.read_text().splitlines()[1:]
    return lines[:: len(lines) // n][:n]


def test_the_full_graph_gives_pytorchs_logits_for_1000_names(shipped_exports):
    loaded, onnx_model = shipped_exports["names"]
    words = NAMES_TXT.read_text().split()[:1000]
    idx = _padded(words, loaded.vocab, loaded.model.block_size)
    (got,) = onnx_model.full.run(None, {"idx": idx})
    with torch.no_grad():
        want = loaded.model.forward_full(torch.from_numpy(idx)).numpy()
    assert got.shape == want.shape == (1000, idx.shape[1] - loaded.model.block_size + 1, 27)
    assert np.abs(got - want).max() < TOLERANCE


def test_the_full_graph_of_a_labelled_model_gives_pytorchs_logits(shipped_exports):
    loaded, onnx_model = shipped_exports["names-by-decade"]
    rows = [line.split("\t") for line in _labels_of_table(500)]
    words = [row[0] for row in rows]
    labels = np.stack([loaded.columns.parse([f"sex={row[1]}", f"decade={row[2]}"]) for row in rows])
    labels[::3, 0] = 0  # some labels unknown, as sample may leave them
    idx = _padded(words, loaded.vocab, loaded.model.block_size)
    (got,) = onnx_model.full.run(None, {"idx": idx, "labels": labels})
    with torch.no_grad():
        want = loaded.model.forward_full(torch.from_numpy(idx), torch.from_numpy(labels)).numpy()
    assert np.abs(got - want).max() < TOLERANCE


@pytest.mark.parametrize("name", ["names", "names-by-decade"])
def test_the_step_graph_character_by_character_gives_the_full_graphs_logits(shipped_exports, name):
    loaded, onnx_model = shipped_exports[name]
    words = ["emma", "christopher", "x", "mary-jane"[:4]]
    labels = None if loaded.columns is None else np.stack([loaded.columns.parse(list(DECADE_LABELS))] * len(words))
    feeds = {} if labels is None else {"labels": labels}
    idx = _padded(words, loaded.vocab, loaded.model.block_size)
    (full,) = onnx_model.full.run(None, {"idx": idx, **feeds})  # (B, n, V)
    queues = {f"queue{i}": np.zeros((len(words), d, n), np.float32) for i, (d, n) in enumerate(onnx_model.facts.queues)}
    for t in range(idx.shape[1]):  # from zeros, the block_size '.' tokens, then the names
        logits, *after = onnx_model.step.run(None, {"token": idx[:, t], **feeds, **queues})
        queues = {f"queue{i}": queue for i, queue in enumerate(after)}
        j = t - loaded.model.block_size + 1  # the full graph's output that has read idx[:, : t + 1]
        if j >= 0:
            assert np.abs(logits - full[:, j]).max() < TOLERANCE, t


@pytest.mark.parametrize(
    "options",
    [
        dict(n=1000, seed=0),
        dict(n=200, seed=3, temperature=0.7, top_k=5),
        dict(n=200, seed=1, top_p=0.9, prefix="ka"),
        dict(n=30, seed=2, min_len=5, max_len=8, ends_with="a", new=True, unique=True),
    ],
    ids=["plain", "top-k", "top-p-prefix", "constraints"],
)
@pytest.mark.parametrize("name", ["names", "names-by-decade"])
def test_the_same_seed_draws_the_same_names_from_onnxruntime(shipped_exports, name, options):
    loaded, onnx_model = shipped_exports[name]
    labels = DECADE_LABELS if loaded.columns is not None else ()
    by_torch = [s.name for s in draw(loaded, NameRequest.of(loaded, options, labels))]
    assert onnx_model.names(labels=labels, **options) == by_torch
    assert len(set(by_torch)) > 1


def test_scores_from_onnxruntime_are_pytorchs(shipped_exports):
    loaded, onnx_model = shipped_exports["names"]
    words = NAMES_TXT.read_text().split()[:300] + ["zzyzx", "q"]
    assert onnx_model.scores(words) == pytest.approx(score(loaded.model, loaded.vocab, words), abs=TOLERANCE)


def test_the_shipped_models_export_to_graphs_of_at_most_1_mb(shipped_exports):
    for _, onnx_model in shipped_exports.values():
        for graph in (STEP, FULL):
            assert (onnx_model.directory / graph).stat().st_size <= 1_000_000


def test_an_export_carries_its_facts(shipped_exports):
    loaded, onnx_model = shipped_exports["names-by-decade"]
    facts = onnx_model.facts
    assert facts.chars == loaded.vocab.chars and facts.block_size == loaded.model.block_size == 8
    assert facts.labels == loaded.columns.saved() and facts.kind == "conv" and facts.val == loaded.val
    assert facts.recipe["model_config"] == json.loads(json.dumps(loaded.checkpoint["model_config"]))
    assert onnx_model.seen.train == loaded.seen.train and onnx_model.cut_at == loaded.cut_at


def test_sample_onnx_prints_what_sample_prints(shipped_exports, capsys):
    _, onnx_model = shipped_exports["names"]
    args = ["-n", "8", "--seed", "5", "--min-len", "4"]
    assert main(["sample", "--checkpoint", "names", *args]) == 0
    by_torch = capsys.readouterr().out
    assert main(["sample", "--onnx", str(onnx_model.directory), *args]) == 0
    assert capsys.readouterr().out == by_torch and "*" in by_torch  # marks included


@pytest.mark.parametrize("name", ["names", "names-by-decade"])
def test_score_onnx_prints_what_score_prints(shipped_exports, name, tmp_path, capsys):
    """A list for `names` (one item it cannot read, skipped), a table with labels for `names-by-decade`."""
    _, onnx_model = shipped_exports[name]
    if name == "names":
        items = tmp_path / "items.txt"
        items.write_text("emma\nzzyzx\nq\nchloé\n" + "\n".join(NAMES_TXT.read_text().split()[:300]) + "\n")
    else:
        items = tmp_path / "items.tsv"
        items.write_text("\n".join(NAMES_BY_DECADE.read_text().splitlines()[:300]) + "\n")
    printed = {}
    for flags in (["--checkpoint", name], ["--onnx", str(onnx_model.directory)]):
        assert main(["score", str(items), "--skip-unknown", *flags]) == 0
        printed[flags[0]] = capsys.readouterr()
    by_torch, by_onnx = (printed[f].out.splitlines() for f in ("--checkpoint", "--onnx"))
    assert len(by_onnx) == len(by_torch) >= 299
    for a, b in zip(by_torch, by_onnx, strict=True):
        loss_a, item_a = a.split("\t", 1)
        loss_b, item_b = b.split("\t", 1)
        assert item_a == item_b and float(loss_a) == pytest.approx(float(loss_b), abs=1.01e-4)
    assert printed["--onnx"].err == printed["--checkpoint"].err


def test_evaluate_onnx_prints_what_evaluate_prints(shipped_exports, tmp_path, capsys):
    """The val split of names.txt, found from the export's facts; a table's rows with their labels, --split
    all; and a split of other data than the model's refused in one line, as for a checkpoint."""
    table = tmp_path / "decades.tsv"
    table.write_text("\n".join(NAMES_BY_DECADE.read_text().splitlines()[:2000]) + "\n")
    for name, args in {"names": [], "names-by-decade": ["--data", str(table), "--split", "all"]}.items():
        _, onnx_model = shipped_exports[name]
        printed = []
        for flags in (["--checkpoint", name], ["--onnx", str(onnx_model.directory)]):
            assert main(["evaluate", *flags, *args]) == 0
            printed.append(capsys.readouterr().out.split())
        (split, by_torch), (same_split, by_onnx) = printed
        assert split == same_split == ("all" if args else "val")
        assert float(by_onnx) == pytest.approx(float(by_torch), abs=1.01e-4)
    _, names = shipped_exports["names"]
    assert names.facts.dataset == "names.txt" and names.data_fingerprint == LoadedModel.load(["names"]).data_fingerprint
    assert main(["evaluate", "--onnx", str(names.directory), "--data", str(table)]) == 2
    assert "not the data this model was trained on" in one_error(capsys)


def test_a_fresh_interpreter_without_torch_samples_and_scores(shipped_exports):
    loaded, onnx_model = shipped_exports["names-by-decade"]
    script = (
        "import sys; sys.modules['torch'] = None  # import torch now raises ImportError\n"
        "from wavenet_names.portable import OnnxModel\n"
        f"model = OnnxModel.load({str(onnx_model.directory)!r})\n"
        f"print(model.names(n=20, seed=4, labels={list(DECADE_LABELS)!r}, min_len=5))\n"
        "print(model.scores(['emma', 'zzyzx'])[1] > model.scores(['emma', 'zzyzx'])[0])\n"
        "import torch\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    wanted = [s.name for s in draw(loaded, NameRequest.of(loaded, dict(n=20, seed=4, min_len=5), DECADE_LABELS))]
    assert result.stdout.splitlines() == [repr(wanted), "True"]
    assert result.stderr.strip().endswith("ModuleNotFoundError: import of torch halted; None in sys.modules")


def test_wavenet_names_onnx_prints_what_sample_prints_without_torch(shipped_exports, capsys):
    _, onnx_model = shipped_exports["names-by-decade"]
    args = ["-n", "12", "--seed", "3", "--label", "sex=M", "--min-len", "5", "--new"]
    assert main(["sample", "--checkpoint", "names-by-decade", *args]) == 0
    by_torch = capsys.readouterr().out
    script = (
        "import sys; sys.modules['torch'] = None  # import torch now raises ImportError\n"
        "from wavenet_names.onnx_cli import main\n"
        f"sys.exit(main({[str(onnx_model.directory), *args]!r}))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout, result.stderr) == (0, by_torch, "")
    assert len(by_torch.splitlines()) == 12


def test_wavenet_names_onnx_says_bad_input_in_one_line(shipped_exports, tmp_path, capsys):
    _, names = shipped_exports["names"]
    cases = {
        "no such directory": ([str(tmp_path / "missing")], 2),
        "--top-p must be in (0, 1]": ([str(names.directory), "--top-p", "2"], 2),
        "trained without labels": ([str(names.directory), "--label", "sex=F"], 2),
        "character '1' is not in the vocabulary": ([str(names.directory), "--ends-with", "1"], 2),
        "found 0 of 3 names that meet the constraints in 30 tries": (
            [str(names.directory), "-n", "3", "--min-len", "30", "--tries", "30"],
            1,
        ),
    }
    for expected, (args, status) in cases.items():
        assert onnx_main(args) == status, expected
        line = one_error(capsys)
        assert expected in line and line.startswith("wavenet-names-onnx: "), line


# --- other models, and the equivalence of the step graph's form ------------------------------------------


@pytest.mark.parametrize(
    "blocks",
    [Blocks(), Blocks(gated=True, residual=True, skip=True, norm="layer"), Blocks(cycles=2, residual=True)],
    ids=["lecture", "wavenet-blocks", "two-cycles"],
)
@pytest.mark.parametrize("labelled", [False, True], ids=["unlabelled", "labelled"])
def test_step_queued_from_zeros_equals_the_full_convolution(blocks, labelled, words, vocab):
    model = ConvWaveNet(len(vocab), 6, 10, 3, blocks, label_sizes=(3, 4) if labelled else ()).eval()
    for p in model.parameters():  # away from the initialisation, where BatchNorm is the identity
        p.data.add_(torch.randn_like(p) * 0.1)
    idx = torch.from_numpy(_padded(words[:8], vocab, model.block_size))
    labels = torch.randint(0, 3, (8, 2)) if labelled else None
    with torch.no_grad():
        full = model.forward_full(idx, labels)
        queues = tuple(torch.zeros(8, d, n) for d, n in model.queue_shapes())
        for t in range(idx.shape[1]):
            logits, queues = model.step_queued(idx[:, t], queues, labels)
            if t >= model.block_size - 1:
                torch.testing.assert_close(logits, full[:, t - model.block_size + 1], atol=1e-5, rtol=0)


def test_a_model_of_full_wavenet_blocks_exports_exactly(tmp_path, words, vocab):
    model = ConvWaveNet(len(vocab), 6, 10, 2, Blocks(gated=True, residual=True, skip=True, norm="layer")).eval()
    loaded = LoadedModel(model, vocab, {"train_words": "\n".join(words)}, "blocks")
    export(loaded, tmp_path)
    onnx_model = OnnxModel.load(tmp_path)
    assert onnx_model.scores(words) == pytest.approx(score(model, vocab, words), abs=TOLERANCE)
    assert onnx_model.names(n=50, seed=0) == [s.name for s in draw(loaded, NameRequest.of(loaded, dict(n=50, seed=0)))]
    with pytest.raises(DataError, match="names no data file it was trained on"):  # it was in no checkpoint
        evaluate_data(onnx_model)
    listed = tmp_path / "words.txt"
    listed.write_text("\n".join(words) + "\n")
    by_torch = evaluate_data(loaded, str(listed), "all")
    assert evaluate_data(onnx_model, str(listed), "all") == pytest.approx(by_torch, abs=TOLERANCE)


def test_an_ensemble_and_a_kind_without_a_step_graph_are_refused(trained, tmp_path, vocab):
    with pytest.raises(ValueError, match="an ensemble exports as no one graph"):
        export(LoadedModel.load([trained, trained]), tmp_path / "ensemble")
    transformer = Transformer(len(vocab), 16, n_embd=8, n_head=2, n_layers=1)
    with pytest.raises(ValueError, match="a transformer model does not export to ONNX; the kinds that do: conv"):
        export(LoadedModel(transformer, vocab, {}, "t"), tmp_path / "transformer")
    assert not (tmp_path / "ensemble").exists() and not (tmp_path / "transformer").exists()


def test_export_refuses_a_run_directory_and_leaves_it_as_it_was(trained, capsys):
    before = sorted(p.name for p in trained.iterdir())
    assert main(["export", "--checkpoint", str(trained), "--out", str(trained)]) == 2
    assert "holds a training run's checkpoints" in one_error(capsys)
    assert sorted(p.name for p in trained.iterdir()) == before


# --- bad input to the sampler: one line each ------------------------------------------------------------


def _another_format(directory, into):
    """A copy of an export whose graphs say they are of export format 99."""
    into.mkdir()
    for graph in (STEP, FULL):
        proto = onnx.load(str(directory / graph))
        for prop in proto.metadata_props:
            if prop.key == KEY:
                prop.value = prop.value.replace('"format": 1', '"format": 99')
        onnx.save(proto, str(into / graph))
    return into


def test_bad_input_to_sample_onnx_is_one_line(shipped_exports, tmp_path, capsys):
    _, names = shipped_exports["names"]
    _, decades = shipped_exports["names-by-decade"]
    (tmp_path / "text").mkdir()
    for graph in (STEP, FULL):
        (tmp_path / "text" / graph).write_text("not a graph\n")
    cases = {
        "no such directory": ["--onnx", str(tmp_path / "missing")],
        "not an ONNX graph": ["--onnx", str(tmp_path / "text")],
        "in export format 99, and this version reads format 1": [
            "--onnx",
            str(_another_format(names.directory, tmp_path / "old")),
        ],
        "'Q' is not a value of sex": ["--onnx", str(decades.directory), "--label", "sex=Q"],
        "trained without labels": ["--onnx", str(names.directory), "--label", "sex=F"],
        "character 'é' is not in the vocabulary": ["--onnx", str(names.directory), "--prefix", "é"],
        "two models": ["--onnx", str(names.directory), "--checkpoint", "names"],
    }
    for expected, args in cases.items():
        assert main(["sample", *args]) == 2, expected
        line = one_error(capsys)
        assert expected in line and line.startswith("wavenet-names sample: error: "), line


def test_the_sampler_refuses_unknown_options(shipped_exports):
    _, names = shipped_exports["names"]
    with pytest.raises(TypeError, match="unknown options: colour"):
        names.names(n=1, colour="red")
    with pytest.raises(DataError, match="no such file"):
        OnnxModel.load(names.directory.parent)


@pytest.mark.parametrize(
    "command, missing",
    [
        (["export"], ["onnxscript", "wavenet_names.export"]),
        (["sample", "--onnx", "x"], ["onnxruntime", "wavenet_names.portable"]),
    ],
    ids=["export", "sample"],
)
def test_without_the_onnx_extra_a_command_says_what_to_install(command, missing, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, missing[0], None)  # import fails, as where it is not installed
    monkeypatch.delitem(sys.modules, missing[1], raising=False)  # imported again, here
    assert main([*command, "--out", str(tmp_path / "out")] if command == ["export"] else command) == 2
    line = one_error(capsys)
    assert "pip install 'wavenet_names[onnx]'" in line and missing[0] in line
    assert not (tmp_path / "out").exists()
