"""LowbitBconv2d's fused epilogue (issue 7, QuickNet's residual blocks) as a TF
op: y = act(m * dot + b), then y * post_multiplier + post_bias, then + residual.

NumPy reference (tests/helpers/reference.py: bconv2d_np, epilogue_np) = TF op,
bit for bit (the float steps are the same float32 roundings in the same
order); gradients against the unfused composite; malformed epilogues raise
clear errors. The TFLite kernel: tests/tflite/test_epilogue.py; every kernel
path: tests/core/test_epilogue.py; the converter: tests/converter/test_epilogue.py.
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from epilogue_cases import (  # noqa: E402
    BAD,
    KINDS,
    case_data,
    conv_kwargs,
    epilogue_args,
    random_case,
    reference,
    run_tf,
)

from lowbit_tf import ops  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(10))
def test_tf_op_matches_reference(kind, seed):
    case = random_case(np.random.default_rng(500 + seed), kind)
    data = case_data(case, seed)
    np.testing.assert_array_equal(run_tf(case, data), reference(case, data))


def test_large_conv_takes_the_register_path():
    """Shapes big enough for full register tiles and several threads."""
    case = dict(kind="affine_add", lead=(2,), h=15, w=13, cin=96, cout=80, kernel=(3, 3),
                strides=(1, 1), dilations=(1, 1), padding="SAME", pad_value=1,
                activation="relu", packed_input=False)
    data = case_data(case, 1)
    np.testing.assert_array_equal(run_tf(case, data), reference(case, data))


def test_tf_op_bad_epilogue_raises():
    data = case_data(BAD, 4)
    packed = ops.pack_filter(data["kernel"])
    kwargs = conv_kwargs(BAD)
    with pytest.raises(tf.errors.InvalidArgumentError, match="residual must have the output"):
        ops.bconv2d(data["x"], packed, residual=data["residual"][..., :39], **kwargs)
    with pytest.raises(tf.errors.InvalidArgumentError, match="post_multiplier must have shape"):
        ops.bconv2d(data["x"], packed, post_multiplier=np.ones(39, np.float32), **kwargs)
    with pytest.raises(ValueError, match="output_type 'float' or 'int8'"):
        ops.bconv2d(data["x"], packed, residual=data["residual"], output_type="bitpacked",
                    **kwargs)
    from lowbit_tf._native import load_tf_ops

    raw = dict(channels_in=33, kernel_h=3, kernel_w=3, padding="SAME")
    ones, zeros = np.ones(40, np.float32), np.zeros(40, np.float32)
    with pytest.raises(tf.errors.InvalidArgumentError, match="takes 3 epilogue inputs, got 1"):
        load_tf_ops().lowbit_bconv2d(data["x"], packed, ones, zeros, [ones],
                                     epilogue="affine_add", **raw)
    with pytest.raises(tf.errors.InvalidArgumentError, match="needs output_type"):
        load_tf_ops().lowbit_bconv2d(data["x"], packed, ones, zeros, [data["residual"]],
                                     epilogue="add", output_type="bitpacked", Tout=tf.int32,
                                     **raw)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="epilogue"):
        load_tf_ops().lowbit_bconv2d(data["x"], packed, ones, zeros, [], epilogue="scale",
                                     **raw)


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_match_the_unfused_composite(kind):
    """Training through the fused op: the gradients of every input equal those
    of bconv2d followed by the same epilogue in plain TF ops."""
    case = dict(kind=kind, lead=(2,), h=6, w=5, cin=20, cout=12, kernel=(3, 3), strides=(1, 1),
                dilations=(1, 1), padding="SAME", pad_value=1, activation="relu",
                packed_input=False)
    data = {k: tf.constant(v) for k, v in case_data(case, 8).items()}
    kwargs = conv_kwargs(case)
    names = ["x", "kernel", "m", "b", *epilogue_args(data)]

    def loss(fused: bool) -> list:
        with tf.GradientTape() as tape:
            tape.watch([data[n] for n in names])
            if fused:
                y = ops.bconv2d(data["x"], data["kernel"], data["m"], data["b"], **kwargs,
                                **epilogue_args(data))
            else:
                y = ops.bconv2d(data["x"], data["kernel"], data["m"], data["b"], **kwargs)
                if "post_multiplier" in data:
                    y = y * data["post_multiplier"] + data["post_bias"]
                if "residual" in data:
                    y = y + data["residual"]
            total = tf.reduce_sum(y * tf.cos(y))
        return tape.gradient(total, [data[n] for n in names])

    for name, got, want in zip(names, loss(True), loss(False), strict=True):
        assert got is not None, name
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-4,
                                   err_msg=name)

