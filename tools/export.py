"""Export a trained model from a checkout: `python tools/export.py --model RUN --format tflite --out DIR`.

A thin wrapper over `effv2 export` (effv2_keras/cli/export.py); see docs/EXPORT.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from effv2_keras.cli import export  # noqa: E402

if __name__ == "__main__":
    export.run()
