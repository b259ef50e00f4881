"""The exported model's sampler (onnxruntime, portable.py) against `sample`'s (PyTorch), names per
second from the shipped model, at batch 1 (one name at a time: a game asking for a name) and batch 256
(a page of them), timed in turn in one run. Both draw the same names from the same seed, so they do
the same work. onnxruntime runs one thread per graph, without spinning (portable.session_options):
in one process with PyTorch it takes nothing from it.

    pytest bench/test_onnx.py -s
"""

import pytest

from wavenet_names.choosing import SampleConfig
from wavenet_names.draws import NameRequest, draw
from wavenet_names.export import export
from wavenet_names.loading import LoadedModel
from wavenet_names.portable import OnnxModel

import workloads

NAMES = {1: 64, 256: 2048}  # batch size -> names drawn per timed run
FLOOR = 1.0  # onnxruntime's names/s over PyTorch's, at least, at each batch size


@pytest.fixture(scope="module")
def runtimes(tmp_path_factory) -> dict:
    loaded = LoadedModel.load(["names"])
    out = tmp_path_factory.mktemp("onnx")
    export(loaded, out)
    return {"pytorch": loaded, "onnxruntime": OnnxModel.load(out)}


@pytest.mark.parametrize("batch_size", list(NAMES))
def test_onnxruntime_samples_at_least_as_fast_as_pytorch(runtimes, batch_size):
    request = NameRequest(SampleConfig(n=NAMES[batch_size], seed=0, batch_size=batch_size))
    names = {name: [s.name for s in draw(model, request)] for name, model in runtimes.items()}
    assert names["onnxruntime"] == names["pytorch"]  # the same work

    def run(model):
        return lambda: list(draw(model, request))

    seconds = workloads.interleaved_medians({name: run(model) for name, model in runtimes.items()}, repeats=7)
    rates = {name: NAMES[batch_size] / s for name, s in seconds.items()}
    ratio = rates["onnxruntime"] / rates["pytorch"]
    print(
        f"batch {batch_size}: onnxruntime {rates['onnxruntime']:,.0f} names/s, pytorch {rates['pytorch']:,.0f} "
        f"names/s: {ratio:.2f}x"
    )
    assert ratio >= FLOOR
