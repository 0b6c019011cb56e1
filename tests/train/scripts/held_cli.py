"""`effv2 train`, held still at one training step so a test can SIGKILL it there.

With HOLD_AT_STEP=N (0-based global step index) the run, right after step N,
writes the file HOLD_MARKER and then sleeps until it is killed. Everything else
is the real command-line tool.
"""

import os
import sys
import time

from effv2_keras.cli import train as cli_train
from effv2_keras.train import trainer as trainer_lib

HOLD_AT_STEP = int(os.environ.get("HOLD_AT_STEP", "-1"))
HOLD_MARKER = os.environ.get("HOLD_MARKER", "")


class _Hold(trainer_lib.Callback):
    def on_train_batch_end(self, batch, logs=None):
        step = logs["step"]
        if step == HOLD_AT_STEP:
            with open(HOLD_MARKER, "w") as f:
                f.write(str(step))
            while True:
                time.sleep(1)


_init = trainer_lib.Trainer.__init__


def _init_with_hold(self, config, splits=None, callbacks=()):
    _init(self, config, splits=splits, callbacks=[*callbacks, _Hold()])


trainer_lib.Trainer.__init__ = _init_with_hold

if __name__ == "__main__":
    cli_train.run([sys.argv[0], *sys.argv[1:]])
