"""Reloads exported artifacts in a FRESH process with the plain public loaders
(keras.saving, tf.saved_model, tensorflow_hub, ai_edge_litert, onnxruntime;
never effv2_keras) and writes their outputs for the parent test to compare.

Usage: python reload_artifacts.py SPEC.json OUT.npz
SPEC: {"images": "images.npy", "jpegs": [...], "artifacts": {name: {"format": ..., "path": ...}}}
OUT: "<name>" -> probabilities; for SavedModels also "<name>:bytes" (serving_bytes
on the JPEGs), "<name>:images_top1" (serving_default on the same JPEGs decoded
by the caller), "<name>:names" (top-k class names); for TFLite "<name>:io"
([input is int8, output is int8]).
"""

import json
import sys

import numpy as np


def softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def run_keras(path, images):
    import keras

    model = keras.saving.load_model(path, compile=False)
    return np.asarray(model.predict(images, batch_size=32, verbose=0))


def run_saved_model(path, images, jpegs, jpeg_pixels, out, name):
    import tensorflow as tf

    loaded = tf.saved_model.load(path)  # keep the object alive while calling its signatures
    serve = loaded.signatures["serving_default"]
    result = serve(images=tf.constant(images))
    out[f"{name}:logits"] = result["logits"].numpy()
    if jpegs:
        data = tf.constant([open(p, "rb").read() for p in jpegs])
        from_bytes = loaded.signatures["serving_bytes"](image_bytes=data)
        out[f"{name}:bytes"] = from_bytes["probabilities"].numpy()
        out[f"{name}:bytes_top_k"] = from_bytes["top_k_classes"].numpy()
        if "top_k_class_names" in from_bytes:
            out[f"{name}:names"] = from_bytes["top_k_class_names"].numpy().astype(str)
        from_pixels = serve(images=tf.constant(jpeg_pixels))
        out[f"{name}:pixels"] = from_pixels["probabilities"].numpy()
    return result["probabilities"].numpy()


def run_tfhub(path, images):
    import tensorflow as tf
    import tensorflow_hub as hub

    module = hub.load(path)
    return softmax(module(tf.constant(images / 255.0, tf.float32), training=False).numpy())


def run_tflite(path, images, out, name):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    inp = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inp["index"], list(images.shape))
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    outp = interpreter.get_output_details()[0]
    x = images
    if inp["dtype"] != np.float32:
        scale, zero = inp["quantization"]
        info = np.iinfo(inp["dtype"])
        x = np.clip(np.round(images / scale + zero), info.min, info.max).astype(inp["dtype"])
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    y = interpreter.get_tensor(outp["index"])
    out[f"{name}:io"] = np.array([inp["dtype"] == np.int8, outp["dtype"] == np.int8])
    if outp["dtype"] != np.float32:
        scale, zero = outp["quantization"]
        y = (y.astype(np.float32) - zero) * scale
    return y


def run_onnx(path, images):
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images})[0]


def main(spec_path, out_path):
    spec = json.load(open(spec_path))
    images = np.load(spec["images"]).astype(np.float32)
    jpegs = spec.get("jpegs", [])
    jpeg_pixels = np.load(spec["jpeg_pixels"]).astype(np.float32) if spec.get("jpeg_pixels") else None
    out = {}
    for name, artifact in spec["artifacts"].items():
        kind, path = artifact["format"], artifact["path"]
        if kind == "keras":
            out[name] = run_keras(path, images)
        elif kind == "saved_model":
            out[name] = run_saved_model(path, images, jpegs, jpeg_pixels, out, name)
        elif kind == "tfhub":
            out[name] = run_tfhub(path, images)
        elif kind == "tflite":
            out[name] = run_tflite(path, images, out, name)
        elif kind == "onnx":
            out[name] = run_onnx(path, images)
        else:
            raise ValueError(kind)
    np.savez(out_path, **out)
    print("effv2_keras imported:", "effv2_keras" in sys.modules)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
