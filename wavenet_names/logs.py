"""TensorBoard logs of a run's evaluations, as makemore writes them (tensorboard is an optional
extra: pip install 'wavenet_names[tensorboard]')."""

from pathlib import Path

# metrics.jsonl's fields, by their TensorBoard tags
SCALARS = {
    "loss/train": "train_loss",  # the mean training-batch loss since the evaluation before
    "loss/val": "val_loss",
    "lr": "lr",
    "positions_per_second": "positions_per_second",
}


class TensorBoardLog:
    """An evaluation record (fit's on_eval) as one scalar per tag of SCALARS, at its step, in `directory`."""

    def __init__(self, directory: str | Path):
        self.writer = self.check()(str(directory))

    @staticmethod
    def check():
        """torch's SummaryWriter, or ValueError in one line when the tensorboard package is missing."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch's module needs the tensorboard package
            raise ValueError(
                "--tensorboard needs the tensorboard package: pip install 'wavenet_names[tensorboard]'"
            ) from None
        return SummaryWriter

    def __call__(self, record: dict) -> None:
        for tag, key in SCALARS.items():
            self.writer.add_scalar(tag, record[key], record["step"])
        self.writer.flush()  # a run watched while it trains, or killed, shows every evaluation so far

    def close(self) -> None:
        self.writer.close()
