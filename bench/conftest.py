import pytest
import torch

import workloads


def pytest_report_header(config):
    return f"torch {torch.__version__}, {torch.get_num_threads()} threads, cuda: {torch.cuda.is_available()}"


def pytest_benchmark_update_machine_info(config, machine_info):
    """Into the JSON, for bench/report.py: which torch made the numbers."""
    machine_info["torch"] = torch.__version__


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="session")
def data():
    return workloads.splits()


@pytest.fixture(scope="session")
def names(data):
    """The same 256 names for every training-step benchmark."""
    return data.train[:256]


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)
