"""Writes notebooks/quickstart.ipynb (kept as a script so the notebook stays reviewable)."""
import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

cells = [
    new_markdown_cell(
        "# effv2_keras quick start\n\n"
        "Build an EfficientNetV2, train it with progressive learning on the embedded digits data "
        "(scikit-learn's real 8x8 digits, upscaled: no download), open the saved `model.keras` with plain Keras, "
        "and export it to TFLite. Runs on a CPU in about a minute; on Colab, "
        "`pip install effv2_keras` first (or `pip install -e .` from a checkout).\n\n"
        "`EPOCHS` is small so the notebook runs quickly; raise it (and the image sizes) for a real run."),
    new_code_cell(
        "import effv2_keras\n"
        "\n"
        "print(effv2_keras.list_models())\n"
        "print(f\"EfficientNetV2-S at 384 px: {effv2_keras.count_flops('efficientnetv2-s', 384) / 1e9:.2f} G multiply-adds\")\n"
        "model = effv2_keras.EfficientNetV2B0(weights=None)  # the keras.applications signature\n"
        "print(f'{model.name}: {model.count_params():,} parameters')"),
    new_markdown_cell(
        "## Progressive learning\n\n"
        "Three stages from 32 to 48 px. Each stage rebuilds the input pipeline at its image size and sets the "
        "head's dropout rate for the stage (the short-run recipe that `effv2 train` picks for runs under 100 epochs "
        "keeps augmentation light in a 6-epoch run; the image sizes and the absence of flips come from the data: "
        "digits are 8x8 drawings, and a flipped digit is another shape). A half-width, half-depth B0 keeps it fast "
        "on a CPU."),
    new_code_cell(
        "import tempfile\n"
        "from effv2_keras.train import TrainConfig, train\n"
        "\n"
        "EPOCHS = 6\n"
        "run_dir = tempfile.mkdtemp(prefix='effv2_quickstart_')\n"
        "# image sizes (32-48 px) and no flips come from the data: digits are 8x8 drawings\n"
        "config = TrainConfig(model='efficientnetv2-b0', width=0.5, depth=0.5, data='digits', epochs=EPOCHS,\n"
        "                     stages=3, verbose=2, out=run_dir)\n"
        "result = train(config)\n"
        "print('test top-1:', round(result.test['top1'], 4))"),
    new_code_cell(
        "from IPython.display import Image\n"
        "Image(filename=f'{run_dir}/curves.png')  # loss and accuracy per epoch, stages marked"),
    new_markdown_cell(
        "## The saved model is plain Keras\n\n"
        "`model.keras` holds the weights of the best validation epoch (their EMA under the paper's recipe), "
        "preprocessing included (0-255 pixels in), and ends in a softmax as `keras.applications` models do: "
        "`predict` returns probabilities."),
    new_code_cell(
        "import keras\n"
        "import numpy as np\n"
        "from effv2_keras import data\n"
        "\n"
        "trained = keras.models.load_model(f'{run_dir}/model.keras')\n"
        "splits = data.load('digits')\n"
        "batch = data.make_pipeline(splits.test, image_size=48, batch_size=16, num_classes=splits.num_classes,\n"
        "                           training=False)\n"
        "images, one_hot = next(iter(batch))  # float32 0-255, resized + center-cropped as in evaluation\n"
        "images, labels = images.numpy(), one_hot.numpy().argmax(axis=1)\n"
        "predicted = trained.predict(images, verbose=0).argmax(axis=1)\n"
        "print('predicted:', predicted)\n"
        "print('true:     ', labels)\n"
        "print('accuracy on these 16:', (predicted == labels).mean())"),
    new_markdown_cell("## Export to TFLite and check the numbers"),
    new_code_cell(
        "from effv2_keras import export\n"
        "\n"
        "tflite_path = export.export_tflite(run_dir, f'{run_dir}/export/tflite')\n"
        "check = export.verify(run_dir, tflite_path, images)\n"
        "print(export.format_table([check]))\n"
        "assert check.max_abs_diff < 1e-4, check"),
]
notebook = new_notebook(cells=cells, metadata={
    "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
    "language_info": {"name": "python"},
})
nbformat.write(notebook, "notebooks/quickstart.ipynb")
