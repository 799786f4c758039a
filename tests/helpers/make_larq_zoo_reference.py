"""Makes tests/data/larq_zoo/: what real larq-zoo builds and computes, for
tests/models/test_larq_zoo.py. No weight file is shipped: both sides set every
weight from larq_zoo_cases.seeded_weight, so only names, shapes and outputs are
kept (a few KB).

larq-zoo needs Keras 2, so this runs in the side environment of
make_larq_reference.py (TensorFlow 2.15, larq 0.14, larq-zoo 2.4):

    .larq-venv/bin/python tests/helpers/make_larq_zoo_reference.py [--keep-h5 DIR]

and writes

- ``models.json``: per case of larq_zoo_cases.CASES, ``layer_names`` (every
  layer, in the model's order) and ``weights`` (the layers with weights, in
  order, each [layer name, [[weight name, shape], ...]]);
- ``logits.npz``: per case, the input of the final softmax on
  seeded_input(side) in inference mode;
- ``training.npz``: for TRAINING_CASES, the logits in training mode and
  gradient_summary of the gradients of ``sum(logits * r)`` (``r`` =
  seeded_weight("r", ...)) with respect to every trainable weight;
- ``quantizers.npz``: larq-zoo's own kernel quantizers (``xnor_weight_scale``,
  ``magnitude_aware_sign_unclipped``) on seeded_weight("quantizer", 0, QUANTIZER_SHAPE):
  values and the gradient of ``sum(q(w) * r)`` (``r`` = seeded_weight("r", ...));
- ``h5_layout.json``: the HDF5 layout of H5_CASE saved by Keras 2's
  ``save_weights`` (root attributes, every group's attributes, every dataset's
  path, shape and dtype; no values: the file itself is about 50 MB).

``--keep-h5 DIR`` also keeps that real file in DIR, for checking the loader on it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from larq_zoo_cases import (  # noqa: E402
    CASES,
    H5_CASE,
    NUM_CLASSES,
    QUANTIZER_SHAPE,
    TRAINING_CASES,
    gradient_summary,
    seeded_input,
    seeded_weight,
)

OUT = Path(__file__).resolve().parents[1] / "data" / "larq_zoo"


def build(builder: str, side: int):
    import larq_zoo
    import tensorflow as tf

    tf.keras.backend.clear_session()  # fresh names: larq-zoo's files hold these
    module = larq_zoo.sota if builder.startswith("QuickNet") else larq_zoo.literature
    model = getattr(module, builder)(input_shape=(side, side, 3), weights=None,
                                     num_classes=NUM_CLASSES)
    layers = []
    for layer in model.layers:
        if not layer.weights:
            continue
        entries = []
        for index, weight in enumerate(layer.weights):
            short = weight.name.split("/")[-1].split(":")[0]
            weight.assign(seeded_weight(layer.name, index, tuple(weight.shape), short))
            entries.append([short, list(weight.shape)])
        layers.append([layer.name, entries])
    return model, {"layer_names": [layer.name for layer in model.layers], "weights": layers}


def training_reference(model, side: int) -> tuple[np.ndarray, np.ndarray]:
    import tensorflow as tf

    head = tf.keras.Model(model.inputs, model.layers[-1].input)
    watched = [(layer.name, index, weight) for layer in model.layers
               for index, weight in enumerate(layer.trainable_weights)]
    with tf.GradientTape() as tape:
        logits = head(seeded_input(side), training=True)
        r = seeded_weight("r", 0, tuple(logits.shape), "")
        loss = tf.reduce_sum(logits * r)
    grads = tape.gradient(loss, [weight for _, _, weight in watched])
    summary = gradient_summary([(layer, index, grad.numpy())
                                for (layer, index, _), grad in zip(watched, grads, strict=True)])
    return logits.numpy(), summary


def quantizer_reference() -> dict[str, np.ndarray]:
    import tensorflow as tf
    from larq_zoo.literature.dorefanet import magnitude_aware_sign_unclipped
    from larq_zoo.literature.xnornet import xnor_weight_scale

    # Scaled up so that some latent weights lie outside [-1, 1] (XNOR-Net clips).
    w = tf.constant(2 * seeded_weight("quantizer", 0, QUANTIZER_SHAPE, "kernel"))
    r = tf.constant(seeded_weight("r", 0, QUANTIZER_SHAPE, "kernel"))
    out = {}
    for name, quantizer in (("xnor_weight_scale", xnor_weight_scale),
                            ("magnitude_aware_sign_unclipped", magnitude_aware_sign_unclipped)):
        with tf.GradientTape() as tape:
            tape.watch(w)
            y = quantizer(w)
            loss = tf.reduce_sum(y * r)
        out[f"{name}/y"] = y.numpy()
        out[f"{name}/grad"] = tape.gradient(loss, w).numpy()
    return out


def h5_layout(path: Path) -> dict:
    import h5py

    def attrs(obj) -> dict:
        return {key: [v.decode() if isinstance(v, bytes) else v for v in np.atleast_1d(value)]
                if isinstance(value, np.ndarray) else
                (value.decode() if isinstance(value, bytes) else value)
                for key, value in obj.attrs.items()}

    groups, datasets = {}, {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            datasets[name] = [list(obj.shape), str(obj.dtype)]
        else:
            groups[name] = attrs(obj)

    with h5py.File(path, "r") as file:
        file.visititems(visit)
        return {"root": attrs(file), "groups": groups, "datasets": datasets}


def main() -> None:
    import tensorflow as tf

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep-h5", type=Path, help="directory to keep the real .h5 in")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    models, logits, training = {}, {}, {}
    for case, (builder, side) in CASES.items():
        model, models[case] = build(builder, side)
        head = tf.keras.Model(model.inputs, model.layers[-1].input)
        logits[case] = head(seeded_input(side), training=False).numpy()
        if case in TRAINING_CASES:
            training[f"{case}/logits"], training[f"{case}/grads"] = training_reference(
                model, side)
        if case == H5_CASE:
            directory = args.keep_h5 or Path(tempfile.mkdtemp())
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / f"{case}.h5"
            model.save_weights(str(path))
            layout = h5_layout(path)
            (OUT / "h5_layout.json").write_text(json.dumps(layout, indent=None) + "\n")
        print(case, len(models[case]["weights"]), "layers with weights", flush=True)
    (OUT / "models.json").write_text(json.dumps(models, indent=None) + "\n")
    np.savez_compressed(OUT / "logits.npz", **logits)
    np.savez_compressed(OUT / "training.npz", **training)
    np.savez_compressed(OUT / "quantizers.npz", **quantizer_reference())


if __name__ == "__main__":
    main()
