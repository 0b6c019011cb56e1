"""Prints the table of variants (parameters, multiply-adds, sizes) as Markdown.

Every number is computed by building the model: nothing here is typed in.

Example:
    python tools/model_table.py > /tmp/table.md
"""

from __future__ import annotations

import gc

import keras
from absl import app, flags

import effv2_keras

FLAGS = flags.FLAGS
flags.DEFINE_list("models", None, "Variants to list (default: all registered).")


def row(name: str) -> str:
    spec = effv2_keras.get_spec(name)
    model = effv2_keras.build(name)  # 1000-class head at the eval size, as the papers count
    madds = effv2_keras.count_flops(model)
    params = model.count_params()
    keras.backend.clear_session()
    gc.collect()
    pl = spec.progressive
    return (
        f"| `{name}` | `{effv2_keras.models.constructors.constructor_name(name)}` | {params / 1e6:.2f}M "
        f"| {madds / 1e9:.2f}G | {spec.train_size} | {spec.eval_size} | {spec.dropout} "
        f"| {pl.image_size[0]}-{pl.image_size[1]} | {pl.randaug_magnitude[0]:g}-{pl.randaug_magnitude[1]:g} "
        f"| {pl.mixup_alpha[0]:g}-{pl.mixup_alpha[1]:g} | {pl.dropout[0]:g}-{pl.dropout[1]:g} |"
    )


def main(argv):
    del argv
    print("| name | constructor | params | multiply-adds @ eval | train px | eval px | head dropout "
          "| PL size | PL RandAugment | PL Mixup | PL dropout |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in FLAGS.models or effv2_keras.list_models():
        print(row(name), flush=True)


if __name__ == "__main__":
    app.run(main)
