"""The TFLite kernels of a packed chain (LowbitBconv2d with a bit-packed output,
LowbitBMaxPool2d) in both runtimes: the same bits as the TF ops; bad options
and shapes raise.
"""

from __future__ import annotations

import numpy as np
import pytest
from reference import (
    bmaxpool2d_np,
)

tf = pytest.importorskip("tensorflow")

from packed_chain_cases import case_data, random_case, reference, run_tf  # noqa: E402

from lowbit_tf import ops  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated"),
    pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
]


# --------------------------------------------------------------------------
# TFLite kernels: same bits as the TF ops; bad options and shapes raise
# --------------------------------------------------------------------------

RUNTIMES = ("ai_edge_litert", "tensorflow")


def _tflite_chain(case, pool, kernel, m, b, output_type="bitpacked", overrides=None):
    """float x -> LowbitBconv2d(bitpacked) -> LowbitBMaxPool2d (if pool)."""
    from flatbuffers import flexbuffers
    from tflite_models import ModelBuilder

    overrides = dict(overrides or {})

    n, h, w, cin, cout = case["n"], case["h"], case["w"], case["cin"], case["cout"]
    y_tf = ops.bconv2d(np.zeros((n, h, w, cin), np.float32), ops.pack_filter(kernel),
                       kernel_size=case["kernel"], strides=case["strides"],
                       dilations=case["dilations"], padding=case["padding"],
                       pad_value=case["pad_value"], activation=case["activation"],
                       output_type="bitpacked")
    oh, ow = int(y_tf.shape[1]), int(y_tf.shape[2])
    options = dict(channels_in=cin, kernel_h=case["kernel"][0], kernel_w=case["kernel"][1],
                   stride_h=case["strides"][0], stride_w=case["strides"][1],
                   dilation_h=case["dilations"][0], dilation_w=case["dilations"][1],
                   padding=case["padding"], pad_value=case["pad_value"],
                   activation="RELU" if case["activation"] else "NONE", output_type=output_type)
    options.update(overrides.pop("conv", {}))
    mb = ModelBuilder()
    x = mb.tensor((n, h, w, cin), np.float32, name="x")
    f = mb.tensor((cout, ops.packed_words(kernel[..., 0].size)), np.int32,
                  ops.pack_filter(kernel).numpy())
    mt = mb.tensor((cout,), np.float32, m)
    bt = mb.tensor((cout,), np.float32, b)
    y = mb.tensor((n, oh, ow, ops.packed_words(cout)), np.int32, name="y")
    mb.custom_op("LowbitBconv2d", [x, f, mt, bt], [y], bytes(flexbuffers.Dumps(
        {k: v for k, v in options.items() if v is not None})))
    out = y
    if pool is not None:
        pool_opts = dict(channels=cout, filter_h=pool["pool"][0], filter_w=pool["pool"][1],
                         stride_h=pool["strides"][0], stride_w=pool["strides"][1],
                         padding=pool["padding"])
        pool_opts.update(overrides.pop("pool", {}))
        out = mb.tensor((n, 1, 1, ops.packed_words(cout)), np.int32, name="p")
        mb.custom_op("LowbitBMaxPool2d", [y], [out], bytes(flexbuffers.Dumps(pool_opts)))
    return mb.finish([x], [out])


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("seed", range(8))
def test_tflite_kernels_match_tf_ops(runtime, seed):
    from lowbit_tf.lite import Interpreter

    rng = np.random.default_rng(3000 + seed)
    case = random_case(rng)
    case["packed_input"] = False
    x, kernel, m, b = case_data(case, seed)
    conv = run_tf(case, x, kernel, m, b, "bitpacked")
    np.testing.assert_array_equal(conv, reference(case, x, kernel, m, b))
    pool = None
    expected = conv
    if seed % 2 == 0:
        pool = dict(pool=(2, 2), strides=(1, 2), padding="SAME")
        expected = ops.bmaxpool2d(conv, pool["pool"], channels=case["cout"],
                                  strides=pool["strides"], padding="SAME").numpy()
        np.testing.assert_array_equal(
            expected, bmaxpool2d_np(conv, case["cout"], pool["pool"], pool["strides"], "SAME"))
    model = _tflite_chain(case, pool, kernel, m, b)
    got = Interpreter(model_content=model, runtime=runtime).predict(x)
    np.testing.assert_array_equal(got, expected)


BAD_CASE = dict(n=1, h=5, w=5, cin=33, cout=40, kernel=(3, 3), strides=(1, 1),
                dilations=(1, 1), padding="VALID", pad_value=0, activation=None)


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("overrides, message", [
    (dict(output_type="packed"), "output_type"),
    (dict(conv={"output_type": 3}), "output_type"),
    (dict(pool={"channels": 0}), "channels"),
    (dict(pool={"channels": 100}), "packed words"),
    (dict(pool={"filter_h": 9, "padding": "VALID"}), "does not fit"),
    (dict(pool={"padding": "FULL"}), "padding"),
    (dict(pool={"stride_w": None}), "stride_w"),
    (dict(nonfinite=True), "finite"),
])
def test_tflite_bad_input_raises(runtime, overrides, message):
    from lowbit_tf.lite import Interpreter

    overrides = dict(overrides)  # the parameter is shared between runtimes
    rng = np.random.default_rng(9)
    x, kernel, m, b = case_data(dict(BAD_CASE, packed_input=False), 9)
    if overrides.pop("nonfinite", False):
        m = m.copy()
        m[3] = np.inf
    output_type = overrides.pop("output_type", "bitpacked")
    pool = dict(pool=(2, 2), strides=(2, 2), padding="SAME")
    model = _tflite_chain(BAD_CASE, pool, kernel, m, b, output_type=output_type,
                          overrides=overrides)
    with pytest.raises(Exception, match=message):
        Interpreter(model_content=model, runtime=runtime).predict(
            rng.standard_normal((1, 5, 5, 33)).astype(np.float32))

