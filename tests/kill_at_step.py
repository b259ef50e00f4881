"""`python -m wavenet_names`, except that this process kills itself with SIGKILL, the signal no program
can catch or clean up after, just before training step KILL_AT_STEP: a crash at a known point.

    KILL_AT_STEP=17 [KILL_RANK=1] python tests/kill_at_step.py train ...
    KILL_AT_STEP=17 KILL_RANK=1 torchrun --max-restarts=1 ... tests/kill_at_step.py train ...

Only rank KILL_RANK (default 0) dies, and under torchrun only in its first worker group
(TORCHELASTIC_RESTART_COUNT 0), so that the group torchrun starts again runs to the end. Tests that
run training in a forked process call kill_before_step themselves.
"""

import os
import signal
import sys

from wavenet_names import cli
from wavenet_names.training import Trainer


def kill_before_step(step: int) -> None:
    """Make this process kill itself with SIGKILL when training is about to take step `step`."""
    train_step = Trainer.train_step

    def killed(trainer: Trainer, seconds: float = 0.0):
        if trainer.step == step:
            os.kill(os.getpid(), signal.SIGKILL)
        return train_step(trainer, seconds)

    Trainer.train_step = killed


if __name__ == "__main__":
    first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
    if first_attempt and os.environ.get("RANK", "0") == os.environ.get("KILL_RANK", "0"):
        kill_before_step(int(os.environ["KILL_AT_STEP"]))
    sys.exit(cli.main())
