"""Weight import: our own files, keras.applications ``.h5`` files, timm state dicts, in-memory transfer.

Every source is turned into one canonical form, ``{layer name: [(variable name, array), ...]}``
in Keras layout, and written by one function (``_assign``) that checks the whole mapping
before it changes anything: a layer missing on either side, or a tensor whose shape differs,
raises ``ValueError`` naming the layer and both shapes.

Sources:

* ``"imagenet"``: keras.applications' official file for the variant, fetched with
  ``keras.utils.get_file`` from keras' own URL and hash (cached in ``$KERAS_HOME/models``,
  default ``~/.keras/models``). Offline, this fails within seconds with the command to run
  elsewhere. Keras has no ImageNet-1k file for V2-XL.
* a keras.applications EfficientNet/EfficientNetV2 ``.h5`` (the legacy layout keras downloads),
  read with h5py and mapped by layer name.
* our ``.keras`` file (mapped by layer name, so the model's own name may differ) or
  ``.weights.h5`` (Keras' own structural loader).
* a timm ``tf_efficientnetv2_*`` / ``tf_efficientnet_*`` state dict (``.pth`` needs torch;
  ``.safetensors`` needs the safetensors package). Only the ``tf_`` variants compute what
  our models compute: timm's other EfficientNets pad symmetrically and use BN eps 1e-5, so
  their state dicts load (same shapes) but give a different function.

Head: a model without a top ignores the file's ``predictions`` layer; a model with a top
loaded from a headless ("notop") file keeps its initial ``predictions`` and says so.

Preprocessing weights are never copied (``Normalization`` layers, ``rescaling``): our V1
models hold the ImageNet mean and variance (std**2) as Normalization weights, while
keras.applications' V1 holds mean 0 / variance 1 when built with ``weights=None``, and its
ImageNet ``.h5`` stores the std itself as "variance" and compensates with an extra Rescaling
layer (keras issue tensorflow/tensorflow#49930). Copying either would silently change the
input normalization, so every loader leaves the model's own preprocessing as it is.
"""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
import warnings
import zipfile
from typing import Dict, List, Optional, Tuple

import numpy as np

from effv2_keras.models.arch import get_spec
from effv2_keras.models.naming import HEAD, block_prefix

__all__ = ["load_weights", "transfer", "imagenet_source", "read_timm_state_dict"]

# keras.applications builds its preprocessing layers without names, so in a Python session
# they may be called normalization_3; match any suffix.
_PREPROCESSING_NAME = re.compile(r"^(rescaling|normalization)(_\d+)?$")
_TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
_DOWNLOAD_PROBE_TIMEOUT_S = 5.0
_DOWNLOAD_TIMEOUT_S = 60.0

Tensors = Dict[str, List[Tuple[str, np.ndarray]]]


def load_weights(model, path, spec=None):
    """Loads weights into ``model`` from a file, or ``"imagenet"``; returns the model.

    Args:
        model: a model built by this package (layer names as keras.applications').
        path: ``"imagenet"`` or a local file: ``.keras`` / ``.weights.h5`` of ours, a
            keras.applications ``.h5``, a timm ``.pth`` / ``.safetensors``.
        spec: the variant (name or ``ModelSpec``); needed for ``"imagenet"`` when the
            model's name is not the variant's name.

    Raises:
        ValueError: the file does not match the model (names the layer and both shapes),
            or it cannot be downloaded (``"imagenet"`` offline), or its format is unknown.
        ImportError: a PyTorch checkpoint without torch installed.
    """
    if isinstance(path, str) and path == "imagenet":
        head = _head_layer(model)
        if head is not None and head.units != 1000:
            raise ValueError(
                f"weights='imagenet' has a 1000-class head, but model {model.name!r} has "
                f"{head.units} classes: build it with include_top=False (then add your own head), "
                "or with classes=1000."
            )
        path = _fetch_imagenet(_spec_of(model, spec), include_top=head is not None)
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"Weights file {path!r} does not exist.")
    kind = _file_kind(path)
    if kind == "keras":
        import keras

        source = keras.saving.load_model(path, compile=False)
        transfer(source, model, label=path)
    elif kind == "keras_weights":
        # Keras' own loader maps by structure and would restore Normalization statistics too;
        # put the model's own back afterwards (preprocessing is never copied, see module doc).
        preprocessing = [(layer, layer.get_weights()) for layer in _normalization_layers(model)]
        try:
            model.load_weights(path)
        except ValueError as error:
            # Keras appends the full variable value to its message; keep the useful part.
            detail = str(error).split("Target variable:")[0].strip()
            raise ValueError(f"{path} does not match model {model.name!r}: {detail}") from error
        finally:
            for layer, values in preprocessing:
                layer.set_weights(values)
                layer.finalize_state()
    elif kind == "keras_legacy_h5":
        _assign(model, _read_legacy_h5(path), path)
    else:  # a timm state dict
        state = read_timm_state_dict(path)
        _assign(model, _timm_to_keras(state, _dwconv_name(model), path), path)
    return model


def transfer(src_model, dst_model, *, label: Optional[str] = None) -> int:
    """Copies weights from an in-memory model (e.g. keras.applications) by layer name.

    Same rules and checks as ``load_weights``; preprocessing is never copied.

    Args:
        src_model, dst_model: Keras models with keras.applications layer names.
        label: how error messages name the source (default: the source model's name).

    Returns:
        The number of tensors copied.
    """
    tensors = {
        layer.name: [(_variable_name(v), np.asarray(v)) for v in layer.weights]
        for layer in _weighted_layers(src_model)
    }
    return _assign(dst_model, tensors, label or f"model {src_model.name!r}")


# --- the one writer -----------------------------------------------------------


def _assign(model, tensors: Tensors, source: str) -> int:
    """Checks every layer and shape, then writes; returns the number of tensors written."""
    targets = {layer.name: layer for layer in _weighted_layers(model)}
    tensors = {k: v for k, v in tensors.items() if v and not _PREPROCESSING_NAME.match(k)}
    if HEAD in tensors and HEAD not in targets:
        del tensors[HEAD]  # a model without a top takes the backbone only
    if HEAD in targets and HEAD not in tensors:
        warnings.warn(
            f"{source} has no classification head ({HEAD!r}); loaded every other layer of "
            f"{model.name!r} and left {HEAD!r} at its initial weights.",
            stacklevel=3,
        )
        del targets[HEAD]
    missing = [name for name in targets if name not in tensors]
    unexpected = [name for name in tensors if name not in targets]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} layer(s) of the model are not in it: {_few(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} layer(s) in it are not in the model: {_few(unexpected)}")
        raise ValueError(
            f"{source} does not match model {model.name!r} ({'; '.join(parts)}). "
            "Is it a file of another variant?"
        )
    plan = []
    for name, layer in targets.items():
        for variable, (_, value) in zip(layer.weights, _match_variables(layer, tensors[name], source)):
            if tuple(value.shape) != tuple(variable.shape):
                hint = ""
                if name == HEAD:
                    hint = (" (a head for another number of classes: build with include_top=False, "
                            "or with the file's classes)")
                raise ValueError(
                    f"{source}: layer {name!r} variable {_variable_name(variable)!r} has shape "
                    f"{tuple(value.shape)} in the file but {tuple(variable.shape)} in the model{hint}."
                )
            plan.append((variable, value))
    for variable, value in plan:
        variable.assign(value.astype(variable.dtype))
    return len(plan)


def _match_variables(layer, entries, source):
    """Orders a layer's source tensors like ``layer.weights`` (by name when the names say, else by order)."""
    if len(entries) != len(layer.weights):
        raise ValueError(
            f"{source}: layer {layer.name!r} has {len(entries)} tensor(s) in the file but "
            f"{len(layer.weights)} in the model ({[_variable_name(v) for v in layer.weights]})."
        )
    by_name = {_canonical_variable(name): (name, value) for name, value in entries}
    wanted = [_canonical_variable(_variable_name(v)) for v in layer.weights]
    if len(by_name) == len(entries) and set(wanted) == set(by_name):
        return [by_name[w] for w in wanted]
    return entries


def _canonical_variable(name: str) -> str:
    # TF2-era files: "block4a_dwconv2/depthwise_kernel:0"; Keras 3: "kernel".
    base = name.split("/")[-1].split(":")[0]
    return "kernel" if base == "depthwise_kernel" else base


def _variable_name(variable) -> str:
    return str(getattr(variable, "path", None) or variable.name).split("/")[-1]


def _weighted_layers(model):
    """Layers that hold weights, nested models flattened, preprocessing left out (see module doc)."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _weighted_layers(layer)
        elif layer.weights and not isinstance(layer, keras.layers.Normalization):
            yield layer


def _head_layer(model):
    return next((layer for layer in _weighted_layers(model) if layer.name == HEAD), None)


def _normalization_layers(model):
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _normalization_layers(layer)
        elif isinstance(layer, keras.layers.Normalization) and layer.weights:
            yield layer


def _few(names, limit=6) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


# --- file formats ---------------------------------------------------------------


def _file_kind(path: str) -> str:
    import h5py

    if zipfile.is_zipfile(path):
        names = zipfile.ZipFile(path).namelist()
        if "config.json" in names and "model.weights.h5" in names:
            return "keras"
        if any(n.endswith("data.pkl") for n in names):
            return "torch"
    if h5py.is_hdf5(path):
        with h5py.File(path, "r") as f:
            group = f["model_weights"] if "model_weights" in f else f
            if _h5_attr_list(group, "layer_names") is not None:
                return "keras_legacy_h5"
            if "layers" in f or "vars" in f:
                return "keras_weights"
        raise ValueError(f"{path} is an HDF5 file but neither a Keras 3 nor a legacy Keras weights file.")
    if path.endswith(".safetensors"):
        return "safetensors"
    if path.endswith(_TORCH_SUFFIXES):
        return "torch"
    raise ValueError(
        f"Unsupported weights file {path!r}: expected a .keras / .weights.h5 of ours, a "
        "keras.applications .h5, or a timm .pth / .safetensors state dict."
    )


def _h5_attr_list(group, name) -> Optional[List[str]]:
    """Reads a string-list attribute, which Keras splits into name0, name1, ... when large."""
    if name in group.attrs:
        values = list(group.attrs[name])
    elif f"{name}0" in group.attrs:
        values, chunk = [], 0
        while f"{name}{chunk}" in group.attrs:
            values.extend(group.attrs[f"{name}{chunk}"])
            chunk += 1
    else:
        return None
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _read_legacy_h5(path: str) -> Tensors:
    """keras.applications' downloaded files: one group per layer, tensors named by 'weight_names'."""
    import h5py

    tensors = {}
    with h5py.File(path, "r") as f:
        group = f["model_weights"] if "model_weights" in f else f
        for layer_name in _h5_attr_list(group, "layer_names"):
            layer_group = group[layer_name]
            names = _h5_attr_list(layer_group, "weight_names") or []
            tensors[layer_name] = [(n, np.asarray(layer_group[n])) for n in names]
    return tensors


def read_timm_state_dict(path) -> Dict[str, np.ndarray]:
    """Reads a PyTorch state dict (``.pth`` needs torch, ``.safetensors`` safetensors) as numpy arrays."""
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        try:
            import safetensors.numpy
        except ImportError as error:
            raise ImportError(
                f"Reading {path} needs the safetensors package: pip install safetensors."
            ) from error
        try:
            import torch  # noqa: F401  (reads bfloat16 files, which numpy cannot hold)
            import safetensors.torch

            state = safetensors.torch.load_file(path)
        except ImportError:
            return dict(safetensors.numpy.load_file(path))
    else:
        try:
            import torch
        except ImportError as error:
            raise ImportError(
                f"Reading the PyTorch checkpoint {path} needs torch, which is not installed. "
                "Install the CPU build (pip install torch==2.13.0), or convert the file to "
                ".safetensors on a machine that has torch."
            ) from error
        state = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("state_dict_ema", "state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
                break
    return {k: v.detach().cpu().float().numpy() for k, v in state.items()}


# timm module name -> our layer-name suffix, per timm block type, told apart by its modules:
# "ir" InvertedResidual (MBConv with expansion), "ds" DepthwiseSeparable (MBConv e1, V1),
# "er" EdgeResidual (Fused-MBConv with expansion), "cn" ConvBnAct (Fused-MBConv e1).
_SE = {"se.conv_reduce": "se_reduce", "se.conv_expand": "se_expand"}
_TIMM_BLOCKS = {
    "ir": {"conv_pw": "expand_conv", "bn1": "expand_bn", "conv_dw": "DW", "bn2": "bn",
           "conv_pwl": "project_conv", "bn3": "project_bn", **_SE},
    "ds": {"conv_dw": "DW", "bn1": "bn", "conv_pw": "project_conv", "bn2": "project_bn", **_SE},
    "er": {"conv_exp": "expand_conv", "bn1": "expand_bn", "conv_pwl": "project_conv",
           "bn2": "project_bn", **_SE},
    "cn": {"conv": "project_conv", "bn1": "project_bn", **_SE},
}
_TIMM_TOP = {"conv_stem": "stem_conv", "bn1": "stem_bn", "conv_head": "top_conv", "bn2": "top_bn",
             "classifier": HEAD}
_TIMM_BN = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
            "running_var": "moving_variance"}
_TIMM_KEY = re.compile(r"^(?:blocks\.(?P<stage>\d+)\.(?P<index>\d+)\.)?(?P<module>.+)\.(?P<param>[a-z_]+)$")


def _timm_block_type(modules) -> str:
    if "conv_exp" in modules:
        return "er"
    if "conv_dw" in modules:
        return "ir" if "conv_pwl" in modules else "ds"
    return "cn"


def _timm_to_keras(state: Dict[str, np.ndarray], dwconv_name: str, source: str) -> Tensors:
    """Renames a timm EfficientNet state dict to our layer names and transposes to Keras layouts."""
    parsed, block_modules = [], {}
    for key, value in state.items():
        match = _TIMM_KEY.match(key)
        if not match:
            raise ValueError(f"{source}: unrecognized key {key!r} (not a timm EfficientNet state dict?)")
        if match["param"] == "num_batches_tracked":
            continue
        block = None if match["stage"] is None else (int(match["stage"]), int(match["index"]))
        block_modules.setdefault(block, set()).add(match["module"])
        parsed.append((key, block, match["module"], match["param"], value))

    tensors: Tensors = {}
    for key, block, module, param, value in parsed:
        if block is None:
            table, prefix = _TIMM_TOP, ""
        else:
            table = _TIMM_BLOCKS[_timm_block_type(block_modules[block])]
            prefix = block_prefix(stage=block[0] + 1, index=block[1])
        if module not in table:
            raise ValueError(f"{source}: unrecognized key {key!r} (not a timm EfficientNet state dict?)")
        layer = prefix + table[module].replace("DW", dwconv_name)
        if module.startswith("bn"):
            name = _TIMM_BN.get(param, param)
        else:
            name = {"weight": "kernel"}.get(param, param)
            value = _torch_to_keras_layout(value, depthwise=table[module] == "DW")
        tensors.setdefault(layer, []).append((name, value))
    return tensors


def _torch_to_keras_layout(value: np.ndarray, depthwise: bool) -> np.ndarray:
    if value.ndim == 4:  # conv: OIHW -> HWIO; depthwise (C, 1, k, k) -> (k, k, C, 1)
        return np.ascontiguousarray(value.transpose(2, 3, 0, 1) if depthwise else value.transpose(2, 3, 1, 0))
    if value.ndim == 2:  # Linear (out, in) -> Dense (in, out)
        return np.ascontiguousarray(value.T)
    return value


def _dwconv_name(model) -> str:
    names = {layer.name.split("_", 1)[-1] for layer in _weighted_layers(model)}
    return "dwconv2" if "dwconv2" in names else "dwconv"


# --- ImageNet: keras.applications' own files ----------------------------------------


def imagenet_source(spec, include_top: bool) -> Tuple[str, str, str]:
    """(file name, URL, md5) of keras.applications' ImageNet file for a variant.

    >>> imagenet_source("efficientnetv2-s", include_top=False)[:2]  # doctest: +ELLIPSIS
    ('efficientnetv2-s_notop.h5', 'https://storage.googleapis.com/.../efficientnetv2-s_notop.h5')
    """
    from keras.src.applications import efficientnet, efficientnet_v2

    spec = get_spec(spec)
    variant = spec.name.split("-")[-1]
    if spec.family.name == "efficientnetv2":
        key = variant if variant.startswith("b") else f"-{variant}"  # keras' keys: "b0", "-s"
        module, file_stem = efficientnet_v2, spec.name
    else:
        module, file_stem, key = efficientnet, f"efficientnet{variant}", variant
    if key not in module.WEIGHTS_HASHES:
        raise ValueError(
            f"keras.applications publishes no ImageNet-1k weights for {spec.name} (the official "
            "XL checkpoints are ImageNet-21k pretrained). Convert another checkpoint with "
            "tools/convert_weights.py (e.g. timm's tf_efficientnetv2_xl) and pass weights=PATH."
        )
    file_name = file_stem + (".h5" if include_top else "_notop.h5")
    file_hash = module.WEIGHTS_HASHES[key][0 if include_top else 1]
    return file_name, module.BASE_WEIGHTS_PATH + file_name, file_hash


def _keras_cache_dir() -> str:
    # keras.utils.get_file's own rule, read at call time so KERAS_HOME can be set late.
    if "KERAS_HOME" in os.environ:
        return os.environ["KERAS_HOME"]
    home = os.path.expanduser("~")
    return os.path.join(home if os.access(home, os.W_OK) else "/tmp", ".keras")


def _fetch_imagenet(spec, include_top: bool) -> str:
    """The cached file, or a download that fails within seconds when there is no network."""
    import socket

    import keras

    file_name, url, file_hash = imagenet_source(spec, include_top)
    cache_dir = _keras_cache_dir()
    cached = os.path.join(cache_dir, "models", file_name)
    if not os.path.exists(cached):
        try:  # get_file has no timeout of its own: probe first
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"),
                                   timeout=_DOWNLOAD_PROBE_TIMEOUT_S).close()
        except (urllib.error.URLError, OSError) as error:
            raise ValueError(
                f"weights='imagenet': cannot download {url} ({getattr(error, 'reason', error)}). "
                f"On a machine with internet run `curl -LO {url}` (md5 {file_hash}), copy the file "
                f"here and pass weights='/path/to/{file_name}' (or put it in {os.path.dirname(cached)}/)."
            ) from error
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
    try:
        return keras.utils.get_file(file_name, url, cache_subdir="models", file_hash=file_hash,
                                    cache_dir=cache_dir)
    finally:
        socket.setdefaulttimeout(previous)


def _spec_of(model, spec):
    try:
        return get_spec(spec if spec is not None else model.name)
    except ValueError as error:
        raise ValueError(
            f"weights='imagenet' needs to know the variant of model {model.name!r}: pass spec=NAME."
        ) from error
