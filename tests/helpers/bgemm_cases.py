"""Random LowbitBgemm cases and how each shell runs them, shared by
tests/{tf_ops,tflite,core,converter}/test_bgemm.py (and imported by the
every-kernel-path subprocess of tests/core/test_bgemm.py): shapes with channel
tails (K = 1, 31, 33, 100, 257; N_out 1..70), leading dimensions, float and
bit-packed outputs; the NumPy reference, the TF op and a one-op .tflite model.
"""

from __future__ import annotations

import numpy as np
from flatbuffers import flexbuffers
from packed_chain_cases import tricky_transform
from reference import bgemm_np, bitpack_np
from tflite_models import ModelBuilder

from lowbit_tf import ops

K_VALUES = (1, 31, 33, 100, 257)


def random_case(rng: np.random.Generator) -> dict:
    rank = int(rng.integers(1, 4))  # input rank: [K], [M, K], [A, B, K]
    return dict(
        leading=[int(d) for d in rng.integers(1, 6, rank - 1)],
        k=int(rng.choice(K_VALUES)),
        cout=int(rng.integers(1, 71)),
        activation=[None, "relu"][int(rng.random() < 0.3)],
        packed_input=bool(rng.random() < 0.5),
        output_type=["float", "bitpacked"][int(rng.random() < 0.4)],
        seed=int(rng.integers(0, 2**31 - 1)),
    )


def case_data(case: dict):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((*case["leading"], case["k"])).astype(np.float32)
    x[rng.random(x.shape) < 0.05] = 0.0  # sign(0) = +1
    kernel = rng.standard_normal((case["k"], case["cout"])).astype(np.float32)
    if case["output_type"] == "bitpacked":  # flip points on and next to integers
        m, b = tricky_transform(rng, case["cout"], case["k"])
    else:
        m = rng.uniform(-2, 2, case["cout"]).astype(np.float32)
        b = rng.uniform(-3, 3, case["cout"]).astype(np.float32)
    return x, kernel, m, b


def reference(case: dict, x, kernel, m, b) -> np.ndarray:
    y = bgemm_np(x, kernel, m, b, case["activation"])
    return bitpack_np(y) if case["output_type"] == "bitpacked" else y


def run_tf(case: dict, x, kernel, m, b) -> np.ndarray:
    inputs = bitpack_np(x) if case["packed_input"] else x
    return ops.bgemm(inputs, ops.pack_dense_kernel(kernel), m, b, channels_in=case["k"],
                     activation=case["activation"], output_type=case["output_type"]).numpy()


def gemm_options(case: dict, **overrides) -> bytes:
    options = dict(channels_in=case["k"], activation="RELU" if case["activation"] else "NONE",
                   output_type=case["output_type"])
    options.update(overrides)
    return bytes(flexbuffers.Dumps({k: v for k, v in options.items() if v is not None}))


def tflite_gemm(case: dict, kernel, m, b, *, options: bytes | None = None,
                filter_data=None, input_shape=None, input_dtype=None) -> bytes:
    """A model of one LowbitBgemm with constant weights (tests/tflite/test_tflite_runtime.py's
    ModelBuilder)."""
    words = ops.packed_words(case["k"])
    depth = words if case["packed_input"] else case["k"]
    in_shape = input_shape or (*case["leading"], depth)
    bitpacked = case["output_type"] == "bitpacked"
    out_depth = ops.packed_words(case["cout"]) if bitpacked else case["cout"]
    mb = ModelBuilder()
    x = mb.tensor(in_shape, input_dtype or (np.int32 if case["packed_input"] else np.float32),
                  name="x")
    fil = bitpack_np(kernel.T) if filter_data is None else filter_data
    f = mb.tensor(fil.shape, fil.dtype, fil, name="filter")
    mt = mb.tensor(m.shape, np.float32, m, name="multiplier")
    bt = mb.tensor(b.shape, np.float32, b, name="bias")
    y = mb.tensor((*in_shape[:-1], out_depth), np.int32 if bitpacked else np.float32, name="y")
    mb.custom_op("LowbitBgemm", [x, f, mt, bt], [y],
                 gemm_options(case) if options is None else options)
    return mb.finish([x], [y])


def run_tflite(case: dict, x, kernel, m, b, runtime: str = "ai_edge_litert") -> np.ndarray:
    from lowbit_tf.lite import Interpreter

    inputs = bitpack_np(x) if case["packed_input"] else x
    model = tflite_gemm(case, kernel, m, b)
    return Interpreter(model_content=model, runtime=runtime, num_threads=2).predict(inputs)


# Rows 1..9: the GEMV path of each SIMD kernel (rows < its tile), the tile
# itself and a tile plus one; N_out within one block, at and past a block
# (AVX2 16, AVX-512 32 channels) and over several groups of blocks.
SMALL_ROWS = range(1, 10)

SMALL_COUTS = (1, 15, 17, 33, 70, 129, 300)


def small_batch_case(rows: int, k: int, cout: int, seed: int) -> dict:
    return dict(leading=[rows], k=k, cout=cout, activation=[None, "relu"][seed % 2],
                packed_input=seed % 3 == 0, output_type=["float", "bitpacked"][seed % 4 == 3],
                seed=seed)


def small_batch_mismatches(run, ks=K_VALUES, couts=SMALL_COUTS) -> list:
    """The (rows, k, cout, output_type) where run(case, x, kernel, m, b) is not
    the reference bit for bit."""
    bad = []
    seed = 0
    for rows in SMALL_ROWS:
        for k in ks:
            for cout in couts:
                seed += 1
                case = small_batch_case(rows, k, cout, seed)
                x, kernel, m, b = case_data(case)
                expected = reference(case, x, kernel, m, b).view(np.uint32)
                got = run(case, x, kernel, m, b)
                if got.shape != expected.shape or not np.array_equal(got.view(np.uint32),
                                                                     expected):
                    bad.append((rows, k, cout, case["output_type"]))
    return bad

