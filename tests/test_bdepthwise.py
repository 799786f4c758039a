"""Binary depthwise convolution (LowbitBDepthwiseConv2d), end to end.

NumPy reference (tests/reference.py) == TF op == TFLite kernel, bit for bit,
over random shapes with channel tails, depth multipliers, strides, dilations,
both paddings and pad values, kernel sizes that take one or several blocks of
bit-sliced counters (1 to 81 taps), float and bit-packed outputs; the gradient
against the float training path; every kernel path, and the core natively and
for Arm (custom_ops/tests/bdepthwise_check.cc, under qemu-user); bad inputs
raise (malformed TFLite options in a subprocess:
`python tests/test_bdepthwise.py --bad-cases RUNTIME`); and a converted Keras
model reproduces Keras.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from flatbuffers import flexbuffers
from reference import bdepthwise_conv2d_np, bitpack_np
from test_packed_chain import tricky_transform
from test_tflite_runtime import ModelBuilder

from lowbit_tf import lite
from lowbit_tf._native import kernel_path_names

TESTS = Path(__file__).resolve().parent

RUNTIMES = ("ai_edge_litert", "tensorflow")

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated"),
    pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
]


def words(channels: int) -> int:
    return -(-channels // 32)


def random_case(rng: np.random.Generator) -> dict:
    while True:
        kernel = [(1, 1), (1, 2), (3, 3), (3, 3), (2, 3), (5, 5), (7, 7), (9, 9)][
            int(rng.integers(0, 8))
        ]
        case = dict(
            n=int(rng.integers(1, 3)),
            h=int(rng.integers(1, 10)),
            w=int(rng.integers(1, 12)),
            cin=int(rng.choice([1, 5, 31, 32, 33, 64, 70])),
            dm=int(rng.integers(1, 4)),
            kernel=kernel,
            strides=(int(rng.integers(1, 3)), int(rng.integers(1, 3))),
            dilations=(int(rng.integers(1, 3)), int(rng.integers(1, 3))),
            padding=str(rng.choice(["SAME", "VALID"])),
            pad_value=int(rng.integers(0, 2)),
            activation=[None, "relu"][int(rng.random() < 0.3)],
            packed_input=bool(rng.random() < 0.5),
        )
        eff = [(k - 1) * d + 1 for k, d in zip(kernel, case["dilations"], strict=True)]
        if case["padding"] == "VALID" and (case["h"] < eff[0] or case["w"] < eff[1]):
            continue
        return case


def case_data(case: dict, seed: int, tricky: bool = False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((case["n"], case["h"], case["w"], case["cin"])).astype(np.float32)
    x[rng.random(x.shape) < 0.05] = 0.0  # sign(0) = +1
    kernel = rng.standard_normal((*case["kernel"], case["cin"], case["dm"])).astype(np.float32)
    cout = case["cin"] * case["dm"]
    if tricky:
        m, b = tricky_transform(rng, cout, case["kernel"][0] * case["kernel"][1])
    else:
        m = rng.uniform(-2, 2, cout).astype(np.float32)
        b = rng.uniform(-3, 3, cout).astype(np.float32)
    return x, kernel, m, b


def reference(case: dict, x, kernel, m, b) -> np.ndarray:
    return bdepthwise_conv2d_np(x, kernel, m, b, case["strides"], case["dilations"],
                                case["padding"], case["pad_value"], case["activation"])


def run_tf(case: dict, x, kernel, m, b, output_type: str = "float") -> np.ndarray:
    from lowbit_tf import ops

    return ops.bdepthwise_conv2d(
        ops.bitpack(x) if case["packed_input"] else x, ops.pack_depthwise_filter(kernel), m, b,
        channels_in=case["cin"], depth_multiplier=case["dm"], strides=case["strides"],
        dilations=case["dilations"], padding=case["padding"], pad_value=case["pad_value"],
        activation=case["activation"], output_type=output_type,
    ).numpy()


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
    with pytest.raises(TypeError, match="float32 or packed int32"):
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


# The read-out of the counts and the transform differ per path (portable byte
# tables; AVX2, which the AVX-512 paths use too): each forced in a fresh
# process (LOWBIT_KERNEL is read when the op runs), against the reference.
@pytest.mark.parametrize("path", [*kernel_path_names("bdepthwise"), "auto"])
def test_every_kernel_path_matches_reference(path):
    script = f"""
import json, sys
sys.path.insert(0, {str(TESTS)!r})
import numpy as np
import test_bdepthwise as t
bad = []
for seed in range(12):
    case = t.random_case(np.random.default_rng(300 + seed))
    x, kernel, m, b = t.case_data(case, seed, tricky=seed % 2 == 1)
    expected = t.reference(case, x, kernel, m, b)
    output_type = "bitpacked" if seed % 2 else "float"
    if output_type == "bitpacked":
        expected = t.bitpack_np(expected)
    if not np.array_equal(t.run_tf(case, x, kernel, m, b, output_type), expected):
        bad.append(seed)
print(json.dumps(bad))
"""
    env = dict(os.environ, LOWBIT_KERNEL=path, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


CROSS_TARGETS = {
    "native": (None, None, None),
    "aarch64": ("aarch64-linux-gnu", "qemu-aarch64-static", "cortex-a72"),
    "armv7": ("arm-linux-gnueabihf", "qemu-arm-static", "cortex-a7"),
}


@pytest.mark.parametrize("target", list(CROSS_TARGETS))
def test_native_check_natively_and_for_arm(target, tmp_path):
    """custom_ops/tests/bdepthwise_check.cc: the core alone against a naive C++
    loop, every read-out path, natively and cross-compiled for Arm under
    qemu-user (as tests/test_cross_kernels.py does for the binary conv)."""
    import shutil

    triple, qemu, cpu = CROSS_TARGETS[target]
    configure = ["cmake", "-S", str(TESTS.parent / "custom_ops"), "-B", str(tmp_path),
                 "-DLOWBIT_BUILD_CHECKS=ON", "-DLOWBIT_BUILD_TFLITE=OFF"]
    command = [str(tmp_path / "bdepthwise_check"), "300"]
    env = dict(os.environ)
    if triple is not None:
        missing = [tool for tool in (f"{triple}-g++", qemu) if shutil.which(tool) is None]
        if missing:
            pytest.skip(f"needs {', '.join(missing)} (apt install g++-{triple} qemu-user-static)")
        configure.append(
            f"-DCMAKE_TOOLCHAIN_FILE={TESTS.parent / 'custom_ops' / 'cmake' / triple}.cmake")
        command = [qemu, "-L", f"/usr/{triple}", *command]
        env["QEMU_CPU"] = cpu
    subprocess.run(configure, check=True, capture_output=True, timeout=300)
    subprocess.run(["cmake", "--build", str(tmp_path), "--target", "bdepthwise_check", "-j2"],
                   check=True, capture_output=True, timeout=900)
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "OK 300 cases" in result.stdout


# --------------------------------------------------------------------------
# TFLite kernel == TF op
# --------------------------------------------------------------------------


def op_options(case: dict, output_type: str = "float") -> dict:
    return dict(channels_in=case["cin"], depth_multiplier=case["dm"],
                kernel_h=case["kernel"][0], kernel_w=case["kernel"][1],
                stride_h=case["strides"][0], stride_w=case["strides"][1],
                dilation_h=case["dilations"][0], dilation_w=case["dilations"][1],
                padding=case["padding"], pad_value=case["pad_value"],
                activation="RELU" if case["activation"] else "NONE", output_type=output_type)


def tflite_model(x: np.ndarray, filt: np.ndarray, m, b, options: dict | bytes,
                 out_dtype=np.float32, extra_inputs: int = 0) -> bytes:
    """input -> LowbitBDepthwiseConv2d -> output; `options` a dict (None values
    drop the key) or raw custom_options bytes. The output shape is set by the
    kernel at Prepare."""
    mb = ModelBuilder()
    xi = mb.tensor(x.shape, x.dtype, name="x")
    tensors = [xi, mb.tensor(filt.shape, filt.dtype, filt, name="filter"),
               mb.tensor(m.shape, m.dtype, m, name="multiplier"),
               mb.tensor(b.shape, b.dtype, b, name="bias")]
    tensors += [tensors[-1]] * extra_inputs
    if extra_inputs < 0:
        tensors = tensors[:extra_inputs]
    y = mb.tensor((1,), out_dtype, name="y")
    if isinstance(options, dict):
        options = bytes(flexbuffers.Dumps({k: v for k, v in options.items() if v is not None}))
    mb.custom_op("LowbitBDepthwiseConv2d", tensors, [y], options)
    return mb.finish([xi], [y])


def packed_filter_np(kernel: np.ndarray) -> np.ndarray:
    kh, kw, c, dm = kernel.shape
    return bitpack_np(kernel.reshape(kh, kw, c * dm))


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("seed", range(10))
def test_tflite_kernel_matches_tf_op(runtime, seed):
    case = random_case(np.random.default_rng(200 + seed))
    output_type = "bitpacked" if seed % 3 == 2 else "float"
    x, kernel, m, b = case_data(case, seed, tricky=output_type == "bitpacked")
    expected = run_tf(case, x, kernel, m, b, output_type)
    x_in = bitpack_np(x) if case["packed_input"] else x
    if seed % 4 == 1:  # rank 5: [2, n, H, W, C]
        x_in = np.stack([x_in, x_in[::-1]])
        expected = np.stack([expected, expected[::-1]])
    model = tflite_model(x_in, packed_filter_np(kernel), m, b, op_options(case, output_type),
                         np.int32 if output_type == "bitpacked" else np.float32)
    got = lite.Interpreter(model_content=model, runtime=runtime, num_threads=2).predict(x_in)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


# Malformed options and tensors, each: (model, input, expected message).
BAD_CASE = dict(n=1, h=5, w=5, cin=33, dm=2, kernel=(3, 3), strides=(1, 1), dilations=(1, 1),
                padding="SAME", pad_value=0, activation=None)


def _bad_cases() -> dict:
    x, kernel, m, b = case_data(BAD_CASE, 3)
    filt = packed_filter_np(kernel)
    good = op_options(BAD_CASE)

    def model(options=None, x_=x, filt_=filt, m_=m, b_=b, **kwargs):
        return tflite_model(x_, filt_, m_, b_, good if options is None else options, **kwargs)

    def opts(**changes):
        return dict(good, **changes)

    return {
        "control": (model(), x, "OK"),
        "no_options": (model(b""), x, "custom options are missing"),
        "corrupt_options": (model(b"\x00\x01\x02\x03"), x, "bad custom options"),
        "missing_channels_in": (model(opts(channels_in=None)), x, "channels_in"),
        "missing_depth_multiplier": (model(opts(depth_multiplier=None)), x, "depth_multiplier"),
        "depth_multiplier_0": (model(opts(depth_multiplier=0)), x, "depth_multiplier"),
        "kernel_h_string": (model(opts(kernel_h="3")), x, "kernel_h"),
        "stride_negative": (model(opts(stride_w=-1)), x, "stride_w"),
        "padding_full": (model(opts(padding="FULL")), x, "padding"),
        "pad_value_2": (model(opts(pad_value=2)), x, "pad_value"),
        "activation_tanh": (model(opts(activation="TANH")), x, "activation"),
        "output_type_packed": (model(opts(output_type="packed")), x, "output_type"),
        "too_many_outputs_channels": (
            model(opts(channels_in=2**20, depth_multiplier=2**11)), x, "exceed"),
        "kernel_too_large": (model(opts(kernel_h=5000, kernel_w=5000)), x, "exceeds"),
        "valid_too_large": (model(opts(padding="VALID", dilation_h=3)), x, "does not fit"),
        "filter_shape": (model(filt_=filt[:, :, :2]), x, "filter must have shape"),
        "filter_float": (model(filt_=filt.astype(np.float32)), x, "filter must be INT32"),
        "multiplier_shape": (model(m_=m[:65]), x, "multiplier must have shape"),
        "bias_int": (model(b_=b.astype(np.int32)), x, "bias must be FLOAT32"),
        "input_depth": (model(x_=x[..., :32]), x[..., :32], "input depth 32 (channels)"),
        "packed_input_depth": (model(x_=bitpack_np(x)[..., :1]), bitpack_np(x)[..., :1],
                               "packed words"),
        "input_rank3": (model(x_=x[0]), x[0], "rank >= 4"),
        "input_int8": (model(x_=x.astype(np.int8)), x.astype(np.int8), "FLOAT32 or INT32"),
        "three_inputs": (model(extra_inputs=-1), x, "expected 4 inputs"),
        "five_inputs": (model(extra_inputs=1), x, "expected 4 inputs"),
        "nonfinite_bitpacked": (
            model(opts(output_type="bitpacked"), m_=np.where(np.arange(66) == 9, np.inf, m)
                  .astype(np.float32), out_dtype=np.int32), x, "finite"),
    }


def _worker(runtime: str) -> None:
    """Runs every bad case, one JSON line each (flushed: a crash shows where)."""
    for name, (model, x, _) in _bad_cases().items():
        try:
            lite.Interpreter(model_content=model, runtime=runtime).predict(x)
            raised, message = None, ""
        except Exception as e:  # noqa: BLE001 - reported to the test
            raised, message = type(e).__name__, str(e)
        print(json.dumps({"name": name, "raised": raised, "message": message[-600:]}),
              flush=True)
    print(json.dumps({"name": "__done__"}), flush=True)


_RESULTS: dict = {}


def _worker_results(runtime: str) -> dict:
    if runtime not in _RESULTS:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        proc = subprocess.run([sys.executable, __file__, "--bad-cases", runtime],
                              capture_output=True, text=True, timeout=600, env=env)
        results = {e["name"]: e for e in map(json.loads, (
            line for line in proc.stdout.splitlines() if line.startswith("{")))}
        results["__returncode__"] = proc.returncode
        results["__stderr__"] = proc.stderr[-3000:]
        _RESULTS[runtime] = results
    return _RESULTS[runtime]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_tflite_bad_inputs_raise_without_crashing(runtime):
    results = _worker_results(runtime)
    assert results["__returncode__"] == 0 and "__done__" in results, results["__stderr__"]
    for name, (_, _, expect) in _bad_cases().items():
        result = results[name]
        if expect == "OK":
            assert result["raised"] is None, result["message"]
        else:
            assert result["raised"] in ("ModelError", "ValueError", "RuntimeError"), (name, result)
            assert expect in result["message"], (name, result["message"])


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


# --------------------------------------------------------------------------
# Converter: QuantDepthwiseConv2D (+ BatchNorm + ReLU) -> one custom op
# --------------------------------------------------------------------------

BINARY = dict(input_quantizer="ste_sign", depthwise_quantizer="ste_sign",
              depthwise_constraint="weight_clip")


def _op_names(tflite: bytes) -> list[str]:
    from lowbit_converter.tflite_schema import schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(tflite), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    result = []
    for op in model.subgraphs[0].operators:
        code = model.operatorCodes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        result.append(code.customCode.decode() if code.customCode else names[builtin])
    return result


@pytest.mark.parametrize("functional", [True, False], ids=["functional", "sequential"])
@pytest.mark.parametrize("config", [
    dict(depth_multiplier=1, padding="same", pad_values=1.0),
    dict(depth_multiplier=2, padding="same", pad_values=0.0, strides=2),
    dict(depth_multiplier=3, padding="valid", dilation_rate=2, kernel_size=(3, 2)),
], ids=["dm1-same-pad1", "dm2-same-pad0-stride2", "dm3-valid-dilation2"])
def test_converted_model_reproduces_keras(config, functional):
    from keras_helpers import randomize_batch_norms

    import lowbit_converter
    from lowbit_converter.lowering import lower_model
    from lowbit_tf import layers
    from lowbit_tf._keras import keras

    config = dict(config)
    config.setdefault("kernel_size", 3)
    body = [layers.QuantDepthwiseConv2D(**config, **BINARY, name="dw"),
            keras.layers.BatchNormalization(name="bn"), keras.layers.ReLU(name="relu"),
            keras.layers.Flatten(), keras.layers.Dense(5, name="head")]
    inputs = keras.Input((9, 10, 33))
    if functional:
        y = inputs
        for layer in body:
            y = layer(y)
        model = keras.Model(inputs, y)
    else:
        model = keras.Sequential([inputs, *body])
    randomize_batch_norms(model)
    x = np.random.default_rng(3).standard_normal((3, 9, 10, 33)).astype(np.float32)
    expected = model(x, training=False).numpy()
    tolerance = dict(rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    lowered, plans = lower_model(model)
    assert list(plans) == ["dw"] and plans["dw"].batch_norm is not None and plans["dw"].relu
    np.testing.assert_allclose(lowered(x).numpy(), expected, **tolerance)
    result = lowbit_converter.convert_with_report(model)
    assert result.lowered_layers == ["dw"]
    assert result.report.custom_ops == {"LowbitBDepthwiseConv2d": 1}
    names = _op_names(result.tflite_model)
    assert "DEPTHWISE_CONV_2D" not in names and "RELU" not in names, names
    interpreter = lite.Interpreter(model_content=result.tflite_model)
    interpreter.resize_tensor_input(0, list(x.shape))
    np.testing.assert_allclose(interpreter.predict(x), expected, **tolerance)


def test_converted_without_batchnorm_is_bit_exact():
    """No BatchNorm: multiplier 1 and the layer's bias, so the TFLite output is
    the Keras output bit for bit; a non-ReLU activation runs as a float op."""
    import lowbit_converter
    from lowbit_tf import layers
    from lowbit_tf._keras import keras

    model = keras.Sequential([
        keras.Input((7, 8, 70)),
        layers.QuantDepthwiseConv2D(3, padding="same", pad_values=1.0, depth_multiplier=2,
                                    bias_initializer="random_normal", name="dw1", **BINARY),
        layers.QuantDepthwiseConv2D(3, activation="tanh", bias_initializer="random_normal",
                                    name="dw2", **BINARY),
    ])
    x = np.random.default_rng(4).standard_normal((2, 7, 8, 70)).astype(np.float32)
    first = keras.Model(model.inputs[0], model.layers[0].output)
    np.testing.assert_array_equal(
        lite.Interpreter(model_content=lowbit_converter.convert(first)).predict(x),
        first(x).numpy())
    result = lowbit_converter.convert_with_report(model)
    assert result.report.custom_ops == {"LowbitBDepthwiseConv2d": 2}
    assert "TANH" in _op_names(result.tflite_model)
    expected = model(x).numpy()
    np.testing.assert_allclose(lite.Interpreter(model_content=result.tflite_model).predict(x),
                               expected, rtol=1e-5, atol=1e-6)


def test_non_binary_depthwise_stays_builtin_and_bad_options_are_refused():
    import lowbit_converter
    from lowbit_converter import ConversionError
    from lowbit_tf import layers
    from lowbit_tf._keras import keras

    float_inputs = keras.Sequential([keras.Input((6, 6, 4)), layers.QuantDepthwiseConv2D(
        3, depthwise_quantizer="ste_sign", depthwise_constraint="weight_clip", name="wb")])
    result = lowbit_converter.convert_with_report(float_inputs)
    assert result.lowered_layers == []
    assert "DEPTHWISE_CONV_2D" in _op_names(result.tflite_model)
    odd_pad = keras.Sequential([keras.Input((6, 6, 4)), layers.QuantDepthwiseConv2D(
        3, padding="same", pad_values=0.5, name="odd_pad", **BINARY)])
    with pytest.raises(ConversionError, match=r"'odd_pad'.*pad_values=0.5"):
        lowbit_converter.convert(odd_pad)
    channels_first = keras.Sequential([keras.Input((4, 6, 6)), layers.QuantDepthwiseConv2D(
        3, data_format="channels_first", name="cf", **BINARY)])
    with pytest.raises(ConversionError, match=r"'cf'.*data_format='channels_first'"):
        lowbit_converter.convert(channels_first)


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--bad-cases":
        _worker(sys.argv[2])
