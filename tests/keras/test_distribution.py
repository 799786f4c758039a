"""Distributed training of lowbit layers gives the weights of single-device training.

Two checks, each a real multi-device / multi-process run kept short:

- ``MirroredStrategy`` over 2 logical CPU devices, in one subprocess (the
  logical devices must be configured before TensorFlow initialises its
  devices, which has long happened in the pytest process);
- ``MultiWorkerMirroredStrategy`` with 2 worker processes talking gRPC on
  127.0.0.1 (ports picked free at run time), each bounded by a timeout and
  killed if the other fails.

Each run trains the same small binary network (``QuantConv2D`` with
``ste_sign`` kernels and inputs, synchronized ``BatchNormalization``, a float
dense head) from the same initial weights, on the same global batches, for a
few SGD (momentum) steps, and the distributed weights must equal the
single-device ones within ``RTOL``/``ATOL`` (float summation order differs
between one device and an all-reduce of two halves; the differences seen are
below 1e-6 on Intel, up to 6e-5 on a logit of 0.48 among logits of +-100 on an
AMD EPYC: the absolute tolerance grows with each array's largest magnitude).
``BatchNormalization(synchronized=True)`` is needed: plain BN
normalises each replica's half batch with that half's statistics, which is a
different computation from single-device training.

The binary convolution runs on the LowbitBconv2d op (the layers' default);
the Mirrored check also trains the same network with the layers on the float
emulation (``lowbit_tf.ops_scope(False)``) under the strategy and compares, and
compares the trained models' predictions, which read each replica's cached
packed kernel.

The BinaryConnect variant (the dense head with a ``stochastic_sign`` kernel)
is checked as well: its seed generator is created inside the strategy scope,
every replica draws the same binarisation from the same seed state, so the
stochastic run is reproducible and equals the single-device one; the test
also checks the seed stream advanced once per step (the draws happened).

``MirroredStrategy`` is driven by ``model.fit``. Keras 3's ``model.fit`` does
not run under ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585), so
the multi-worker check uses the custom loop multi-worker users write
(``strategy.run``, ``optimizer.apply_gradients``); the single-device
reference runs the same loop, which gives the same weights as ``model.fit``.

This file is also the worker script: ``python test_distribution.py MODE OUT``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

RTOL, ATOL = 1e-4, 1e-5
SCALED_ATOL = 2e-6  # times the array's largest magnitude (_assert_same_weights)
GLOBAL_BATCH, STEPS, SEED = 32, 6, 0
WORKER_TIMEOUT_S = 150

pytestmark = pytest.mark.slow


# --------------------------------------------------------------------- worker side


def _data() -> tuple[np.ndarray, np.ndarray]:
    from lowbit_tf.demo import load_digits_split

    x_train, y_train, _, _ = load_digits_split(SEED)
    n = GLOBAL_BATCH * STEPS
    return x_train[:n], y_train[:n]


def _build_model(stochastic: bool):
    """The network under test, built from a fixed seed (same initial weights everywhere)."""
    from lowbit_tf import layers as lb_layers
    from lowbit_tf import quantizers as lb_quantizers
    from lowbit_tf._keras import keras

    keras.utils.set_random_seed(SEED)
    binary = dict(kernel_quantizer="ste_sign", kernel_constraint="weight_clip", use_bias=False)
    inputs = keras.Input((8, 8, 1))
    x = lb_layers.QuantConv2D(8, 3, padding="same", **binary)(inputs)
    x = keras.layers.BatchNormalization(synchronized=True)(x)
    x = lb_layers.QuantConv2D(16, 3, input_quantizer="ste_sign", **binary)(x)
    x = keras.layers.BatchNormalization(synchronized=True)(x)
    x = keras.layers.Flatten()(x)
    if stochastic:
        x = lb_layers.QuantDense(
            10,
            kernel_quantizer=lb_quantizers.StochasticSign(seed=SEED + 1),
            kernel_constraint="weight_clip",
        )(x)
    else:
        x = keras.layers.Dense(10)(x)
    model = keras.Model(inputs, x)
    model.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def _train(strategy, stochastic: bool, use_ops: bool = True) -> dict[str, np.ndarray]:
    """Initial and trained weights of one run under ``strategy``, and the trained
    model's predictions (under the strategy: inference reads each replica's
    packed kernel), with the layers on the ops or on the float emulation."""
    import lowbit_tf
    from lowbit_tf import layers as lb_layers

    x, y = _data()
    with strategy.scope(), lowbit_tf.ops_scope(use_ops):
        model = _build_model(stochastic)
    on_ops = [layer.use_ops for layer in model.layers if isinstance(layer, lb_layers.QuantConv2D)]
    assert on_ops == [use_ops, use_ops]
    initial = model.get_weights()
    model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0)
    arrays = _weights(model, initial, stochastic)
    arrays["predicted"] = model.predict(x[:GLOBAL_BATCH], batch_size=GLOBAL_BATCH // 2, verbose=0)
    return arrays


def _weights(model, initial: list[np.ndarray], stochastic: bool) -> dict[str, np.ndarray]:
    arrays = {
        **{f"initial_{i}": w for i, w in enumerate(initial)},
        **{f"trained_{i}": w for i, w in enumerate(model.get_weights())},
    }
    if stochastic:  # the BinaryConnect draws happened: the seed stream advanced
        quantizer = model.layers[-1].kernel_quantizer
        arrays["seed_state"] = np.asarray(quantizer._seed_generator.state.numpy())
    return arrays


def _save(path: str, **runs: dict[str, np.ndarray]) -> None:
    np.savez(path, **{f"{run}/{key}": value
                      for run, arrays in runs.items() for key, value in arrays.items()})


def _mirrored_main(out: str) -> None:
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    assert len(devices) == 2, devices
    runs = {}
    for stochastic in (False, True):
        tag = "stochastic" if stochastic else "binary"
        runs[f"single_{tag}"] = _train(tf.distribute.get_strategy(), stochastic)
        mirrored = tf.distribute.MirroredStrategy(devices)
        assert mirrored.num_replicas_in_sync == 2
        runs[f"mirrored_{tag}"] = _train(mirrored, stochastic)
    # The layers on the float emulation: the same training, on the strategy too.
    runs["mirrored_emulated_binary"] = _train(mirrored, False, use_ops=False)
    _save(out, **runs)


def _train_custom_loop(strategy, stochastic: bool) -> dict[str, np.ndarray]:
    """As :func:`_train`, with a custom loop (``strategy.run``) instead of ``model.fit``.

    Replica ``r`` of ``n`` takes the ``r``-th slice of every global batch.
    """
    import tensorflow as tf

    from lowbit_tf._keras import keras

    x, y = _data()
    with strategy.scope():
        model = _build_model(stochastic)
        optimizer = model.optimizer
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
    initial = model.get_weights()

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        per_replica = context.get_per_replica_batch_size(GLOBAL_BATCH)
        return (tf.data.Dataset.from_tensor_slices((x, y)).batch(per_replica)
                .shard(context.num_input_pipelines, context.input_pipeline_id))

    @tf.function
    def step(batch):
        def replica_step(xb, yb):
            with tf.GradientTape() as tape:
                per_example = loss_fn(yb, model(xb, training=True))
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=GLOBAL_BATCH)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))

        strategy.run(replica_step, args=batch)

    for batch in strategy.distribute_datasets_from_function(dataset_fn):
        step(batch)
    return _weights(model, initial, stochastic)


def _multi_worker_main(out: str) -> None:
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    assert strategy.num_replicas_in_sync == 2
    task = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    runs = {}
    for stochastic in (False, True):
        tag = "stochastic" if stochastic else "binary"
        runs[f"multi_worker_{tag}"] = _train_custom_loop(strategy, stochastic)
        if task == 0:
            runs[f"single_{tag}"] = _train_custom_loop(tf.distribute.get_strategy(), stochastic)
    if task == 0:
        _save(out, **runs)


# ---------------------------------------------------------------------- test side


def _env() -> dict[str, str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    return env


def _load(path: Path) -> dict[str, dict[str, np.ndarray]]:
    runs: dict[str, dict[str, np.ndarray]] = {}
    with np.load(path) as data:
        for name in data.files:
            run, key = name.split("/")
            runs.setdefault(run, {})[key] = data[name]
    return runs


def _assert_same_weights(reference: dict, other: dict) -> None:
    assert reference.keys() == other.keys()
    for key in sorted(reference):
        if key.startswith("initial_") or key == "seed_state":
            np.testing.assert_array_equal(other[key], reference[key], err_msg=key)
        else:
            # An element's rounding error scales with the largest terms summed
            # into it, not with its own size: a logit near zero left by the
            # cancellation of terms of +-100 carries their error (6e-5 seen on an
            # AMD EPYC, where oneDNN sums in another order than on Intel).
            atol = max(ATOL, SCALED_ATOL * float(np.max(np.abs(reference[key]))))
            np.testing.assert_allclose(other[key], reference[key], rtol=RTOL, atol=atol,
                                       err_msg=key)
    # Training moved the weights (the comparison is not vacuous).
    moved = [k for k in reference if k.startswith("trained_")
             and not np.array_equal(reference[k], reference[k.replace("trained", "initial")])]
    assert moved


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def test_mirrored_strategy_matches_single_device(tmp_path):
    out = tmp_path / "mirrored.npz"
    proc = subprocess.run(
        [sys.executable, __file__, "mirrored", str(out)],
        env=_env(), capture_output=True, text=True, timeout=WORKER_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    runs = _load(out)
    _assert_same_weights(runs["single_binary"], runs["mirrored_binary"])
    _assert_same_weights(runs["single_stochastic"], runs["mirrored_stochastic"])
    _assert_same_weights(runs["mirrored_emulated_binary"], runs["mirrored_binary"])
    assert runs["single_stochastic"]["seed_state"][1] >= STEPS


def test_multi_worker_mirrored_strategy_matches_single_device(tmp_path):
    out = tmp_path / "multi_worker.npz"
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    procs = []
    logs = []
    try:
        for index in range(2):
            config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            log = open(tmp_path / f"worker{index}.log", "w+")
            logs.append(log)
            procs.append(subprocess.Popen(
                [sys.executable, __file__, "multi_worker", str(out)],
                env={**_env(), "TF_CONFIG": json.dumps(config)},
                stdout=log, stderr=subprocess.STDOUT, text=True,
            ))
        deadline = time.monotonic() + WORKER_TIMEOUT_S
        while any(p.poll() is None for p in procs):
            failed = [p for p in procs if p.poll() not in (None, 0)]
            if failed or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        codes = [p.poll() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        texts = []
        for log in logs:
            log.seek(0)
            texts.append(log.read()[-3000:])
            log.close()
    assert codes == [0, 0], "\n".join(f"worker {i} ({c}):\n{t}"
                                      for i, (c, t) in enumerate(zip(codes, texts, strict=True)))
    runs = _load(out)
    _assert_same_weights(runs["single_binary"], runs["multi_worker_binary"])
    _assert_same_weights(runs["single_stochastic"], runs["multi_worker_stochastic"])
    assert runs["single_stochastic"]["seed_state"][1] >= STEPS


if __name__ == "__main__":
    mode, out_path = sys.argv[1:3]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    {"mirrored": _mirrored_main, "multi_worker": _multi_worker_main}[mode](out_path)
