"""Binary depthwise convolution (LowbitBDepthwiseConv2d) as a TF op.

NumPy reference (tests/helpers/reference.py) == TF op, bit for bit, over random
shapes with channel tails, depth multipliers, strides, dilations, both
paddings and pad values, kernel sizes that take one or several blocks of
bit-sliced counters (1 to 81 taps), float and bit-packed outputs; bad inputs
raise; the gradient against the float training path. The TFLite kernel:
tests/tflite/test_bdepthwise.py; every kernel path and the core for Arm:
tests/core/test_bdepthwise.py; the converter: tests/converter/test_bdepthwise.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from bdepthwise_cases import case_data, random_case, reference, run_tf, weight_sequence
from reference import bitpack_np

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated"),
    pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
]


# --------------------------------------------------------------------------
# TF op == NumPy reference
# --------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(40))
def test_tf_op_matches_reference(seed):
    case = random_case(np.random.default_rng(seed))
    x, kernel, m, b = case_data(case, seed)
    expected = reference(case, x, kernel, m, b)
    got = run_tf(case, x, kernel, m, b)
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    # The integer dot products alone (multiplier 1, bias 0: exact in float).
    ones, zeros = np.ones_like(m), np.zeros_like(b)
    np.testing.assert_array_equal(run_tf(case, x, kernel, ones, zeros),
                                  reference(case, x, kernel, ones, zeros))


@pytest.mark.parametrize("kernel", [(1, 1), (1, 2), (1, 3), (2, 2), (1, 7), (2, 4), (3, 5),
                                    (4, 4), (1, 31), (4, 8), (7, 9), (8, 8), (9, 9), (11, 12)])
def test_every_counter_width_and_block_split(kernel):
    """Kernels of 1 to 132 taps: every number of counter planes (1 to 6), tap
    counts at and past a block of 2^P - 1, several blocks; with SAME pad 0 the
    border pixels use fewer taps."""
    case = dict(n=1, h=6, w=13, cin=7, dm=1, kernel=kernel, strides=(1, 1), dilations=(1, 1),
                padding="SAME", pad_value=0, activation=None, packed_input=False)
    for pad_value in (0, 1):
        case["pad_value"] = pad_value
        x, k, m, b = case_data(case, sum(kernel))
        np.testing.assert_array_equal(run_tf(case, x, k, m, b), reference(case, x, k, m, b))


@pytest.mark.parametrize("dm", [4, 8, 9, 33, 70])
def test_large_depth_multipliers(dm):
    """The input expansion for DM > 1: by byte table up to 8, by runs of bits
    beyond (runs longer than a word for DM > 32)."""
    case = dict(n=2, h=4, w=5, cin=37 if dm < 33 else 5, dm=dm, kernel=(3, 3), strides=(1, 2),
                dilations=(1, 1), padding="SAME", pad_value=1, activation="relu",
                packed_input=True)
    x, k, m, b = case_data(case, dm)
    np.testing.assert_array_equal(run_tf(case, x, k, m, b), reference(case, x, k, m, b))


@pytest.mark.parametrize("seed", range(20))
def test_bitpacked_output_matches_reference(seed):
    """Transforms on and around the flip points: the integer thresholds
    reproduce the packed signs of the float output exactly."""
    case = random_case(np.random.default_rng(100 + seed))
    x, kernel, m, b = case_data(case, seed, tricky=True)
    got = run_tf(case, x, kernel, m, b, "bitpacked")
    np.testing.assert_array_equal(got, bitpack_np(reference(case, x, kernel, m, b)))
    np.testing.assert_array_equal(got, bitpack_np(run_tf(case, x, kernel, m, b)))


def test_rank5_input_and_garbage_padding_bits():
    """[..., H, W, C]: leading dimensions are a batch; bits past C in the last
    packed word (of input and filter) are ignored."""
    from lowbit_tf import ops

    case = dict(n=6, h=7, w=8, cin=33, dm=2, kernel=(3, 3), strides=(2, 1), dilations=(1, 2),
                padding="SAME", pad_value=0, activation=None, packed_input=True)
    x, kernel, m, b = case_data(case, 7)
    expected = reference(case, x, kernel, m, b)
    packed = bitpack_np(x)
    packed[..., -1] |= np.int32(-2)  # every bit but channel 32 of the last word
    filt = ops.pack_depthwise_filter(kernel).numpy()
    filt[..., -1] |= np.int32(-4)  # channels 66.. of a 66-channel filter
    got = ops.bdepthwise_conv2d(packed.reshape(2, 3, 7, 8, 2), filt, m, b, channels_in=33,
                                depth_multiplier=2, strides=(2, 1), dilations=(1, 2),
                                padding="SAME").numpy()
    assert got.shape == (2, 3, 4, 8, 66)
    np.testing.assert_array_equal(got.reshape(expected.shape), expected)


def test_pad_values_and_relu_on_a_small_example():
    """1 channel, 2x2 input of -1, 3x3 kernel of +1, SAME: an output sees 4
    pixels (-4) plus 5 padded taps: 0 with pad_value 0, +5 with pad_value 1."""
    from lowbit_tf import ops

    x = -np.ones((1, 2, 2, 1), np.float32)
    packed = ops.pack_depthwise_filter(np.ones((3, 3, 1, 1), np.float32))
    for pad_value, expected in ((0, -4.0), (1, 1.0)):
        y = ops.bdepthwise_conv2d(x, packed, padding="SAME", pad_value=pad_value).numpy()
        np.testing.assert_array_equal(y, np.full((1, 2, 2, 1), expected, np.float32))
    y = ops.bdepthwise_conv2d(x, packed, [2.0], [3.0], padding="SAME", activation="relu")
    np.testing.assert_array_equal(y.numpy(), np.zeros((1, 2, 2, 1), np.float32))
    # A 1x1 input under a 2x2 kernel dilated by 5 (SAME): both taps of each
    # row and column fall in the padding, so with pad_value 0 no tap is used.
    one = ops.pack_depthwise_filter(-np.ones((2, 2, 1, 1), np.float32))
    for pad_value, expected in ((0, 3.0), (1, 2.0 * -4 + 3.0)):
        y = ops.bdepthwise_conv2d(x[:, :1, :1], one, [2.0], [3.0], dilations=5, padding="SAME",
                                  pad_value=pad_value).numpy()
        np.testing.assert_array_equal(y, [[[[expected]]]])


def test_tf_op_bad_inputs_raise():
    import tensorflow as tf

    from lowbit_tf import ops
    from lowbit_tf._native import load_tf_ops

    x = np.zeros((1, 5, 5, 33), np.float32)
    packed = ops.pack_depthwise_filter(np.ones((3, 3, 33, 2), np.float32))
    op = load_tf_ops().lowbit_b_depthwise_conv2d
    ones, zeros = np.ones(66, np.float32), np.zeros(66, np.float32)
    base = dict(channels_in=33, depth_multiplier=2, kernel_h=3, kernel_w=3)
    # Python-side argument checks.
    with pytest.raises(TypeError, match="float32, int8 or packed int32"):
        ops.bdepthwise_conv2d(x.astype(np.float64), packed, depth_multiplier=2)
    with pytest.raises(ValueError, match="rank >= 4"):
        ops.bdepthwise_conv2d(x[0], packed, depth_multiplier=2)
    with pytest.raises(ValueError, match=r"filter must have shape \[3, 3, 4\]"):
        ops.bdepthwise_conv2d(x, packed, depth_multiplier=3)
    with pytest.raises(ValueError, match="channels_in"):
        ops.bdepthwise_conv2d(ops.bitpack(x), packed, depth_multiplier=2)
    with pytest.raises(ValueError, match="depth_multiplier"):
        ops.bdepthwise_conv2d(x, packed, depth_multiplier=0)
    with pytest.raises(ValueError, match="pad_value"):
        ops.bdepthwise_conv2d(x, packed, depth_multiplier=2, pad_value=2)
    with pytest.raises(ValueError, match="output_type"):
        ops.bdepthwise_conv2d(x, packed, depth_multiplier=2, output_type="packed")
    with pytest.raises(ValueError, match="4-D"):
        ops.pack_depthwise_filter(np.ones((3, 3, 4), np.float32))
    # The op itself (what a hand-made graph could feed it).
    cases = [
        (dict(filter=packed[:2]), "filter must have shape"),
        (dict(x=x[..., :32]), "input depth 32"),
        (dict(x=ops.bitpack(x[..., :32])), "packed words"),
        (dict(x=x[0]), "rank >= 4"),
        (dict(multiplier=ones[:65]), "multiplier must have shape"),
        (dict(bias=zeros[:1]), "bias must have shape"),
        (dict(attrs=dict(padding="VALID", kernel_h=3, kernel_w=3, dilation_h=3)),
         "does not fit"),
        (dict(attrs=dict(channels_in=2**20, depth_multiplier=2**11)), "exceed"),
        (dict(attrs=dict(kernel_h=5000, kernel_w=5000)), "exceeds"),
        (dict(attrs=dict(pad_value=3)), "pad_value"),
        (dict(attrs=dict(output_type="bitpacked")), "Tout"),
        (dict(attrs=dict(output_type="bitpacked", Tout=tf.int32),
              multiplier=np.where(np.arange(66) == 5, np.nan, 1).astype(np.float32)), "finite"),
    ]
    for overrides, message in cases:
        attrs = dict(base, **overrides.get("attrs", {}))
        with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match=message):
            op(overrides.get("x", x), overrides.get("filter", packed),
               overrides.get("multiplier", ones), overrides.get("bias", zeros), **attrs)


# --------------------------------------------------------------------------
# Gradient: the float training path's straight-through estimator
# --------------------------------------------------------------------------


@pytest.mark.parametrize("config", [
    dict(depth_multiplier=1, padding="same", pad_values=0.0),
    dict(depth_multiplier=2, padding="same", pad_values=1.0, strides=2, activation="relu"),
    dict(depth_multiplier=3, padding="valid", dilation_rate=2, activation="relu"),
    dict(depth_multiplier=1, kernel_size=(2, 3), padding="same", strides=(1, 2)),
], ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_gradient_matches_float_training_path(config):
    """d/dx, d/dmultiplier, d/dbias of the op == those of
    relu?(QuantDepthwiseConv2D(ste_sign, ste_sign)(x) * m + b) via GradientTape."""
    import tensorflow as tf

    from lowbit_tf import layers, ops

    config = dict(config)
    activation = config.pop("activation", None)
    config.setdefault("kernel_size", 3)
    rng = np.random.default_rng(5)
    channels = 37
    layer = layers.QuantDepthwiseConv2D(**config, input_quantizer="ste_sign",
                                        depthwise_quantizer="ste_sign", use_bias=False,
                                        depthwise_constraint="weight_clip")
    x = tf.constant(1.5 * rng.standard_normal((2, 9, 8, channels)).astype(np.float32))
    layer.build(x.shape)
    cout = channels * layer.depth_multiplier
    m = tf.Variable(rng.uniform(-2, 2, cout).astype(np.float32))
    b = tf.Variable(rng.uniform(-1, 1, cout).astype(np.float32))
    upstream = tf.constant(rng.standard_normal(layer.compute_output_shape(x.shape))
                           .astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y_keras = layer(x) * m + b
        if activation:
            y_keras = tf.nn.relu(y_keras)
        y_op = ops.bdepthwise_conv2d(
            x, ops.pack_depthwise_filter(layer.kernel), m, b,
            depth_multiplier=layer.depth_multiplier, strides=layer.strides,
            dilations=layer.dilation_rate, padding=layer.padding,
            pad_value=int(layer.pad_values), activation=activation,
        )
        loss_keras = tf.reduce_sum(y_keras * upstream)
        loss_op = tf.reduce_sum(y_op * upstream)
    np.testing.assert_allclose(y_op.numpy(), np.asarray(y_keras), rtol=1e-6, atol=1e-5)
    for want, got in zip(tape.gradient(loss_keras, [x, m, b]), tape.gradient(loss_op, [x, m, b]),
                         strict=True):
        want = np.asarray(want)
        assert np.abs(want).max() > 0
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_gradient_stride_with_dilation_rank5_and_none_cases():
    """Stride 2 with dilation 2 (which tf.nn.depthwise_conv2d cannot run) on a
    rank-5 input, against a stride-1 float conv subsampled (VALID: the same
    windows); packed inputs and bit-packed outputs get no input gradient."""
    import tensorflow as tf

    from lowbit_tf import ops
    from lowbit_tf.quantizers import ste_sign

    rng = np.random.default_rng(8)
    x = tf.constant(1.5 * rng.standard_normal((2, 2, 11, 10, 6)).astype(np.float32))
    kernel = rng.standard_normal((3, 3, 6, 2)).astype(np.float32)
    packed = ops.pack_depthwise_filter(kernel)
    m = tf.Variable(rng.uniform(-2, 2, 12).astype(np.float32))
    b = tf.Variable(rng.uniform(-1, 1, 12).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y_op = ops.bdepthwise_conv2d(x, packed, m, b, depth_multiplier=2, strides=2,
                                     dilations=2)
        full = tf.nn.depthwise_conv2d(ste_sign(tf.reshape(x, [4, 11, 10, 6])),
                                      np.where(kernel < 0, -1.0, 1.0).astype(np.float32),
                                      [1, 1, 1, 1], "VALID", dilations=[2, 2])
        y_ref = tf.reshape(full[:, ::2, ::2, :], y_op.shape) * m + b
        upstream = tf.constant(rng.standard_normal(y_op.shape).astype(np.float32))
        loss_op = tf.reduce_sum(y_op * upstream)
        loss_ref = tf.reduce_sum(y_ref * upstream)
        packed_out = ops.bdepthwise_conv2d(x, packed, m, b, depth_multiplier=2,
                                           output_type="bitpacked")
        packed_in = ops.bdepthwise_conv2d(ops.bitpack(x), packed, m, b, channels_in=6,
                                          depth_multiplier=2)
    assert y_op.shape == (2, 2, 4, 3, 12)
    np.testing.assert_allclose(y_op.numpy(), y_ref.numpy(), rtol=1e-6, atol=1e-5)
    for want, got in zip(tape.gradient(loss_ref, [x, m, b]), tape.gradient(loss_op, [x, m, b]),
                         strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5,
                                   atol=1e-5 * np.abs(want.numpy()).max())
    assert tape.gradient(packed_out, [x, m, b]) == [None, None, None]
    grads = tape.gradient(packed_in, [x, m, b])
    assert grads[0] is None and grads[1] is not None and grads[2] is not None



# The TF kernel keeps the layer's plan (filter layout, thresholds) per kernel
# instance (bdepthwise_kernel.cc, PlanCache): one graph node called with new
# weights, from one thread or several at once, must follow them.
PLAN_CASE = dict(n=1, h=6, w=7, cin=70, dm=1, kernel=(3, 3), strides=(2, 1), dilations=(1, 1),
                 padding="SAME", pad_value=1, activation=None, packed_input=True)


def _plan_function(output_type: str):
    """One tf.function (one kernel instance) of PLAN_CASE with the packed
    input, filter, multiplier and bias as arguments."""
    import tensorflow as tf

    from lowbit_tf import ops

    @tf.function
    def run(x_, f_, m_, b_):
        return ops.bdepthwise_conv2d(x_, f_, m_, b_, channels_in=70, strides=(2, 1),
                                     padding="SAME", pad_value=1, output_type=output_type)

    return run


def _plan_expected(x, kernel, m, b, output_type: str) -> np.ndarray:
    expected = reference(PLAN_CASE, x, kernel, m, b)
    return bitpack_np(expected) if output_type == "bitpacked" else expected


@pytest.mark.parametrize("output_type", ["float", "bitpacked"])
def test_kept_plan_follows_changed_weights(output_type):
    """The same weights twice, a change in one filter tap, then in the bias
    only, then all new weights, then the first ones again."""
    from lowbit_tf import ops

    run = _plan_function(output_type)
    x, sequence = weight_sequence(PLAN_CASE, seeds=(7, 8))
    packed = ops.bitpack(x)
    for k_i, m_i, b_i in sequence:
        got = run(packed, ops.pack_depthwise_filter(k_i), m_i, b_i).numpy()
        np.testing.assert_array_equal(got, _plan_expected(x, k_i, m_i, b_i, output_type))


def test_kept_plan_follows_a_filter_variable_assigned_between_calls():
    import tensorflow as tf

    from lowbit_tf import ops

    x, kernel, m, b = case_data(PLAN_CASE, 9)
    _, kernel2, _, _ = case_data(PLAN_CASE, 10)
    filt = tf.Variable(ops.pack_depthwise_filter(kernel))
    packed = ops.bitpack(x)

    @tf.function
    def run():
        return ops.bdepthwise_conv2d(packed, filt, m, b, channels_in=70, strides=(2, 1),
                                     padding="SAME", pad_value=1, output_type="bitpacked")

    for k_i in (kernel, kernel2, kernel):
        filt.assign(ops.pack_depthwise_filter(k_i))
        np.testing.assert_array_equal(run().numpy(), _plan_expected(x, k_i, m, b, "bitpacked"))


@pytest.mark.parametrize("output_type", ["float", "bitpacked"])
def test_kept_plan_under_concurrent_calls(output_type):
    """Four threads call one kernel instance at once, each with its own input
    and weights (so the kept plan keeps changing under them) or all with the
    same weights: every result must be its own call's."""
    from concurrent.futures import ThreadPoolExecutor

    from lowbit_tf import ops

    run = _plan_function(output_type)
    sets = []
    for seed in range(4):
        x, kernel, m, b = case_data(PLAN_CASE, 20 + seed, tricky=True)
        args = (ops.bitpack(x), ops.pack_depthwise_filter(kernel), m, b)
        sets.append((args, _plan_expected(x, kernel, m, b, output_type)))
    run(*sets[0][0])  # traced once, before the threads

    def worker(index: int, shared: bool) -> int:
        mismatches = 0
        for i in range(40):
            args, expected = sets[0 if shared else (index + i) % len(sets)]
            mismatches += not np.array_equal(run(*args).numpy(), expected)
        return mismatches

    with ThreadPoolExecutor(4) as pool:
        for shared in (False, True):
            assert sum(pool.map(worker, range(4), [shared] * 4)) == 0


@pytest.mark.parametrize("shape", [(56, 56, 64), (28, 28, 128), (14, 14, 256), (13, 11, 96),
                                   (9, 15, 32), (7, 5, 320), (5, 9, 512)])
@pytest.mark.parametrize("stride", [1, 2])
def test_issue_shapes_every_padding_bit_exact(shape, stride):
    """The shapes the AVX-512 depthwise rows are tuned for and odd ones around
    them (odd widths, 1.5, 10 and 16 words per pixel, stride 2), SAME with both
    pad values and VALID, float and bit-packed outputs, against the reference."""
    h, w, c = shape
    for padding, pad_value in (("SAME", 0), ("SAME", 1), ("VALID", 0)):
        case = dict(n=1, h=h, w=w, cin=c, dm=1, kernel=(3, 3), strides=(stride, stride),
                    dilations=(1, 1), padding=padding, pad_value=pad_value,
                    activation="relu" if pad_value else None, packed_input=pad_value == 1)
        x, kernel, m, b = case_data(case, h * c + stride, tricky=False)
        expected = reference(case, x, kernel, m, b)
        np.testing.assert_array_equal(run_tf(case, x, kernel, m, b), expected)
        np.testing.assert_array_equal(run_tf(case, x, kernel, m, b, "bitpacked"),
                                      bitpack_np(expected))


@pytest.mark.parametrize("strides, dilations, width", [((1, 9), (1, 1), 40),
                                                        ((2, 1), (1, 33000), 5)])
def test_shapes_past_the_avx512_rows_limits(strides, dilations, width):
    """A stride over 8 and a dilated window wider than 2^16 words take the AVX2
    rows inside the AVX-512 paths (bdepthwise_avx512.cc): the same results."""
    case = dict(n=1, h=6, w=width, cin=70, dm=1, kernel=(3, 3), strides=strides,
                dilations=dilations, padding="SAME", pad_value=0, activation=None,
                packed_input=True)
    x, kernel, m, b = case_data(case, 3, tricky=False)
    expected = reference(case, x, kernel, m, b)
    np.testing.assert_array_equal(run_tf(case, x, kernel, m, b), expected)
    np.testing.assert_array_equal(run_tf(case, x, kernel, m, b, "bitpacked"), bitpack_np(expected))


def test_kernel_past_the_avx512_plan_bound():
    """A 63-row kernel with zero padding over a row of 9000 words: its plan's
    per-row tables (one set per set of used tap rows, up to 127) would pass
    the AVX-512 kernel's bound on them (bdepthwise_avx512.cc, kMaxPlanBytes),
    so the AVX2 rows run it: the same results."""
    case = dict(n=1, h=3, w=4500, cin=64, dm=1, kernel=(63, 1), strides=(1, 1),
                dilations=(1, 1), padding="SAME", pad_value=0, activation=None,
                packed_input=True)
    x, kernel, m, b = case_data(case, 4, tricky=False)
    expected = reference(case, x, kernel, m, b)
    np.testing.assert_array_equal(run_tf(case, x, kernel, m, b), expected)
    np.testing.assert_array_equal(run_tf(case, x, kernel, m, b, "bitpacked"), bitpack_np(expected))
