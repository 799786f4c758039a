"""The lowbit delegate's own int8 CONV_2D (custom_ops/tflite/int8_conv2d_op.cc,
docs/int8.md): on x86 with AVX-512 VNNI (and on Arm with NEON, checked on
the emulated Pi by tests/arm/check_models.py) it claims TFLite's builtin int8
CONV_2D over at most 8 input channels. Real Keras convs, int8 post-training
quantized by TFLiteConverter, run through `lowbit_tf.lite.Interpreter` must
equal TFLite's reference kernels (OpResolverType.BUILTIN_REF) bit for bit and
XNNPACK within one code; the claim is seen as a DELEGATE node in an
interpreter without the default delegates. Nodes it must not take (float,
16 input channels, int16 activations, per-channel input quantization) stay
with TFLite, and the option int8_builtin_convs=False turns the claim off.
"""

from __future__ import annotations

import numpy as np
import pytest
from tflite_models import ModelBuilder

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from lowbit_tf.lite import Interpreter  # noqa: E402

OpResolverType = tf.lite.experimental.OpResolverType
RUNTIME = "tensorflow"  # the runtime whose reference kernels are compared


def _has_vnni() -> bool:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return " avx512_vnni" in flags and " avx512vl" in flags and " avx512bw" in flags


needs_vnni = pytest.mark.skipif(not _has_vnni(), reason="on x86 the delegate claims int8 convs "
                                "only with AVX-512 VNNI (Arm: tests/arm/check_models.py)")

# (input channels, filters, kernel, strides, padding, dilation, activation, H, W, batch)
CONFIGS = [
    (3, 16, 3, 2, "same", 1, "relu", 23, 17, 2),  # QuickNet's stem, odd sizes
    (3, 16, 3, 1, "valid", 1, None, 9, 12, 1),
    (1, 33, 5, 2, "same", 1, "relu6", 15, 15, 3),  # 33 filters: a 1-channel block tail
    (5, 20, 3, 1, "same", 2, "relu6", 13, 11, 2),  # dilation (width copies per tap)
    (8, 8, (2, 4), (1, 3), "valid", 1, "relu", 10, 19, 1),
    (2, 40, 7, 2, "same", 1, None, 20, 21, 1),
    (4, 17, 1, 1, "same", 1, "relu", 6, 7, 2),
    (6, 24, 3, 1, "same", (1, 2), "relu", 16, 9, 2),
    (6, 24, 3, (3, 1), "same", 1, "relu", 16, 9, 2),
    (7, 16, 3, 1, "same", 1, "relu", 11, 13, 1),  # rows of 21 bytes: 6 dwords, 3 zero weights
    (3, 16, (3, 5), 2, "same", 1, None, 19, 22, 1),  # rows of 15 bytes (unrolled, 4 dwords)
]
# (Keras takes no stride > 1 with a dilation > 1; custom_ops/tests/
# int8_conv2d_check.cc checks the kernel on those too.)


def _int8_conv_model(cin, filters, kernel, strides, padding, dilation, activation, h, w,
                     seed=0, int16=False):
    rng = np.random.default_rng(seed)
    inputs = keras.Input((h, w, cin))
    x = keras.layers.Conv2D(filters, kernel, strides=strides, padding=padding,
                            dilation_rate=dilation, activation=activation)(inputs)
    model = keras.Model(inputs, x)
    # A bias off the initialiser's zeros, so that it counts too.
    conv = model.layers[1]
    conv.set_weights([rng.standard_normal(conv.kernel.shape) * 0.3,
                      rng.standard_normal(filters)])
    data = (rng.standard_normal((24, h, w, cin)) * 2 + 0.5).astype(np.float32)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([d[None]] for d in data)
    ops = (tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8 if int16
           else tf.lite.OpsSet.TFLITE_BUILTINS_INT8)
    converter.target_spec.supported_ops = [ops]
    converter.inference_input_type = tf.int16 if int16 else tf.int8
    converter.inference_output_type = tf.int16 if int16 else tf.int8
    return converter.convert()


def _run(interpreter, x):
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy()


def _claimed(tflite: bytes, **options) -> int:
    """DELEGATE nodes of an interpreter with the lowbit delegate only (no
    default XNNPACK): the nodes our delegate took over."""
    interpreter = Interpreter(model_content=tflite, runtime=RUNTIME, **options,
                              experimental_op_resolver_type=OpResolverType.
                              BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    return sum(op["op_name"] == "DELEGATE" for op in interpreter._get_ops_details())


def _input(rng, shape, dtype=np.int8):
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max + 1, shape).astype(dtype)
    x.flat[:7] = [info.min, info.max, 0, -1, 1, info.min, info.max]  # the extremes
    return x


@needs_vnni
@pytest.mark.parametrize("config", CONFIGS, ids=[f"c{i}" for i in range(len(CONFIGS))])
def test_equals_reference_kernels_and_xnnpack_within_one_code(config):
    *layer, batch = config
    tflite = _int8_conv_model(*layer)
    assert _claimed(tflite) == 1
    rng = np.random.default_rng(1)
    x = _input(rng, (batch, layer[7], layer[8], layer[0]))
    ours = _run(Interpreter(model_content=tflite, runtime=RUNTIME), x)
    reference = _run(tf.lite.Interpreter(model_content=tflite,
                                         experimental_op_resolver_type=OpResolverType.BUILTIN_REF),
                     x)
    np.testing.assert_array_equal(ours, reference)
    # Rows split over the delegate's pool.
    np.testing.assert_array_equal(
        _run(Interpreter(model_content=tflite, runtime=RUNTIME, num_threads=2), x), reference)
    # XNNPACK requantizes in float32: one code off at most. (Not compared on
    # dilated convs: there XNNPACK's own codes differ from the reference
    # kernels' by several, 6 in c3.)
    if layer[5] == 1:
        xnnpack = _run(Interpreter(model_content=tflite, runtime=RUNTIME,
                                   int8_builtin_convs=False), x)
        assert np.abs(ours.astype(int) - xnnpack).max() <= 1
    # The default runtime (ai_edge_litert where installed) runs the same kernel.
    np.testing.assert_array_equal(_run(Interpreter(model_content=tflite), x), reference)


@needs_vnni
def test_option_turns_the_claim_off():
    tflite = _int8_conv_model(*CONFIGS[0][:-1])
    assert _claimed(tflite) == 1
    assert _claimed(tflite, int8_builtin_convs=False) == 0


@needs_vnni
@pytest.mark.parametrize("kind", ["float", "16_channels", "int16"])
def test_other_convs_stay_with_tflite(kind):
    if kind == "float":
        inputs = keras.Input((8, 8, 3))
        model = keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))
        tflite = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    elif kind == "16_channels":
        tflite = _int8_conv_model(16, 8, 3, 1, "same", 1, "relu", 8, 8)
    else:
        tflite = _int8_conv_model(3, 8, 3, 1, "same", 1, "relu", 8, 8, int16=True)
    assert _claimed(tflite) == 0


def _hand_built_conv(input_scales, input_zero_points, filter_zero_point=0) -> bytes:
    """A one-CONV_2D int8 model written directly (quantization the converter
    never produces): input [1, 6, 6, 3], filter [4, 3, 3, 3] per channel."""
    from ai_edge_litert import schema_py_generated as schema

    rng = np.random.default_rng(2)
    b = ModelBuilder()
    dim = 3 if len(input_scales) > 1 else 0
    x = b.tensor([1, 6, 6, 3], np.int8, name="x",
                 quantization=(input_scales, input_zero_points, dim))
    w = b.tensor([4, 3, 3, 3], np.int8, data=rng.integers(-127, 128, (4, 3, 3, 3)), name="w",
                 quantization=([0.01, 0.02, 0.03, 0.04], [filter_zero_point] * 4, 0))
    bias = b.tensor([4], np.int32, data=rng.integers(-500, 500, 4), name="b",
                    quantization=([0.001] * 4, [0] * 4, 0))
    y = b.tensor([1, 6, 6, 4], np.int8, name="y", quantization=([0.05], [-3]))
    op = schema.OperatorT()
    op.opcodeIndex = b._code(schema.BuiltinOperator.CONV_2D, None)
    op.inputs, op.outputs = [x, w, bias], [y]
    op.builtinOptionsType = schema.BuiltinOptions.Conv2DOptions
    options = schema.Conv2DOptionsT()
    options.padding = schema.Padding.SAME
    options.strideW = options.strideH = 1
    options.dilationWFactor = options.dilationHFactor = 1
    options.fusedActivationFunction = schema.ActivationFunctionType.RELU
    op.builtinOptions = options
    b.ops.append(op)
    return b.finish([x], [y])


@needs_vnni
def test_hand_built_model_is_claimed_and_exact():
    tflite = _hand_built_conv([0.1], [5])
    assert _claimed(tflite) == 1
    x = _input(np.random.default_rng(3), (1, 6, 6, 3))
    reference = _run(tf.lite.Interpreter(model_content=tflite,
                                         experimental_op_resolver_type=OpResolverType.BUILTIN_REF),
                     x)
    np.testing.assert_array_equal(_run(Interpreter(model_content=tflite, runtime=RUNTIME), x),
                                  reference)


@needs_vnni
@pytest.mark.parametrize("quantization", ["per_channel_input", "filter_zero_point"])
def test_unusual_quantization_stays_with_tflite(quantization):
    if quantization == "per_channel_input":
        tflite = _hand_built_conv([0.1, 0.2, 0.3], [0, 0, 0])
    else:
        tflite = _hand_built_conv([0.1], [5], filter_zero_point=3)
    assert _claimed(tflite) == 0


def test_bad_option_value_is_refused():
    from lowbit_tf.lite import delegate_library_path

    with pytest.raises(ValueError, match="int8_builtin_convs must be '0' or '1', got 'yes'"):
        tf.lite.experimental.load_delegate(str(delegate_library_path()),
                                           {"int8_builtin_convs": "yes"})
