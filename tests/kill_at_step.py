"""`python -m wavenet_names`, except that this process kills itself with SIGKILL, the signal no program
can catch or clean up after, just before training step KILL_AT_STEP: a crash at a known point.

    KILL_AT_STEP=17 [KILL_RANK=1] python tests/kill_at_step.py train ...
    KILL_AT_STEP=17 KILL_RANK=1 torchrun --max-restarts=1 ... tests/kill_at_step.py train ...

Only rank KILL_RANK (default 0) dies, and under torchrun only in its first worker group
(TORCHELASTIC_RESTART_COUNT 0), so that the group torchrun starts again runs to the end.
"""

import os
import signal
import sys

from wavenet_names import cli
from wavenet_names.training import Trainer

at_step = int(os.environ["KILL_AT_STEP"])
first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
doomed = os.environ.get("RANK", "0") == os.environ.get("KILL_RANK", "0") and first_attempt
train_step = Trainer.train_step


def killed_at_step(trainer: Trainer):
    if doomed and trainer.step == at_step:
        os.kill(os.getpid(), signal.SIGKILL)
    return train_step(trainer)


Trainer.train_step = killed_at_step
sys.exit(cli.main())
