"""Plain NumPy references for the binary ops (ground truth for the tests).

Written from the definitions, independently of the C++ code: bits are set one
by one and the convolution multiplies +-1 (or 0 padding) values.
"""

from __future__ import annotations

import numpy as np

BITS = 32


TINY = np.finfo(np.float32).tiny  # smallest positive normal float32


def is_negative(x: np.ndarray) -> np.ndarray:
    """x < 0 with subnormals flushed to zero, as TensorFlow's tf.sign sees it."""
    return np.asarray(x, np.float32) <= -TINY


def sign(x: np.ndarray) -> np.ndarray:
    """+1 for x >= 0, -1 for x < 0 (the project's binarisation)."""
    return np.where(is_negative(x), -1.0, 1.0).astype(np.float32)


def bitpack_np(x: np.ndarray) -> np.ndarray:
    """Packs x < 0 (see is_negative) as bit 1 along the last axis, 32 channels per int32 word."""
    x = np.asarray(x, np.float32)
    channels = x.shape[-1]
    words = -(-channels // BITS)
    bits = np.zeros(x.shape[:-1] + (words * BITS,), np.uint64)
    bits[..., :channels] = is_negative(x)
    bits = bits.reshape(x.shape[:-1] + (words, BITS))
    weights = np.uint64(1) << np.arange(BITS, dtype=np.uint64)
    packed = (bits * weights).sum(axis=-1).astype(np.uint32)
    return packed.view(np.int32)


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int, int]:
    """(output size, pad before, pad after) of TensorFlow's SAME padding."""
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return out, total // 2, total - total // 2


def conv2d_np(
    x: np.ndarray,
    kernel: np.ndarray,
    strides: tuple[int, int] = (1, 1),
    padding: str = "VALID",
    groups: int = 1,
) -> np.ndarray:
    """Plain float conv2d (NHWC, HWIO kernel with C_in / groups input channels),
    accumulated in float64, TensorFlow's SAME geometry, zero padding."""
    x = np.asarray(x, np.float64)
    kernel = np.asarray(kernel, np.float64)
    kh, kw, cin_group, cout = kernel.shape
    if padding == "SAME":
        _, top, bottom = same_padding(x.shape[1], kh, strides[0], 1)
        _, left, right = same_padding(x.shape[2], kw, strides[1], 1)
        x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    out_h = (x.shape[1] - kh) // strides[0] + 1
    out_w = (x.shape[2] - kw) // strides[1] + 1
    out = np.zeros((x.shape[0], out_h, out_w, cout))
    per_group = cout // groups
    for g in range(groups):
        xs = x[..., g * cin_group:(g + 1) * cin_group]
        ks = kernel[..., g * per_group:(g + 1) * per_group]
        for ky in range(kh):
            for kx in range(kw):
                patch = xs[:, ky: ky + (out_h - 1) * strides[0] + 1: strides[0],
                           kx: kx + (out_w - 1) * strides[1] + 1: strides[1], :]
                out[..., g * per_group:(g + 1) * per_group] += patch @ ks[ky, kx]
    return out


def binary_taps(
    x: np.ndarray,
    kernel_size: tuple[int, int],
    strides: tuple[int, int],
    dilations: tuple[int, int],
    padding: str,
    pad_value: int,
) -> list[tuple[int, int, np.ndarray]]:
    """(ky, kx, patch) per kernel tap of sign(x) (NHWC): patch [N, OH, OW, C] holds
    the int64 +-1 value each output pixel reads through that tap; padded pixels
    ("SAME", or explicit ((top, bottom), (left, right))) hold `pad_value` (0 or +1)."""
    xs = sign(x)
    (kh, kw), (sh, sw), (dh, dw) = kernel_size, strides, dilations
    if not isinstance(padding, str):
        (top, bottom), (left, right) = padding
        xs = np.pad(xs, ((0, 0), (top, bottom), (left, right), (0, 0)),
                    constant_values=float(pad_value))
    elif padding == "SAME":
        _, top, bottom = same_padding(xs.shape[1], kh, sh, dh)
        _, left, right = same_padding(xs.shape[2], kw, sw, dw)
        xs = np.pad(xs, ((0, 0), (top, bottom), (left, right), (0, 0)),
                    constant_values=float(pad_value))
    _, h, w, _ = xs.shape
    out_h = (h - ((kh - 1) * dh + 1)) // sh + 1
    out_w = (w - ((kw - 1) * dw + 1)) // sw + 1
    return [(ky, kx, xs[:, ky * dh: ky * dh + (out_h - 1) * sh + 1: sh,
                       kx * dw: kx * dw + (out_w - 1) * sw + 1: sw, :].astype(np.int64))
            for ky in range(kh) for kx in range(kw)]


def output_transform(
    dot: np.ndarray,
    multiplier: np.ndarray | None,
    bias: np.ndarray | None,
    activation: str | None,
) -> np.ndarray:
    """y = m * dot + b per output channel (last axis) in float32, then ReLU."""
    channels = dot.shape[-1]
    m = np.ones(channels, np.float32) if multiplier is None else np.asarray(multiplier, np.float32)
    b = np.zeros(channels, np.float32) if bias is None else np.asarray(bias, np.float32)
    y = dot.astype(np.float32) * m + b
    if activation == "relu":
        y = np.maximum(y, np.float32(0))
    return y.astype(np.float32)


def epilogue_np(
    y: np.ndarray,
    post_multiplier: np.ndarray | None = None,
    post_bias: np.ndarray | None = None,
    residual: np.ndarray | None = None,
) -> np.ndarray:
    """LowbitBconv2d's epilogue on its float output: y * pm + pb per output
    channel, then + residual, each step one float32 rounding."""
    y = np.asarray(y, np.float32)
    if post_multiplier is not None:
        y = y * np.asarray(post_multiplier, np.float32)
        y = y + np.asarray(post_bias, np.float32)
    if residual is not None:
        y = y + np.asarray(residual, np.float32)
    return y.astype(np.float32)


def bconv2d_np(
    x: np.ndarray,
    kernel: np.ndarray,
    multiplier: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    strides: tuple[int, int] = (1, 1),
    dilations: tuple[int, int] = (1, 1),
    padding: str = "VALID",
    pad_value: int = 0,
    activation: str | None = None,
) -> np.ndarray:
    """Binary conv of sign(x) (NHWC) with sign(kernel) (HWIO), then y = m * dot + b.

    Padded pixels ("SAME", or explicit ((top, bottom), (left, right))) hold
    `pad_value` (0 or +1) in the binarised input.
    The dot products are exact integers; the transform is computed in float32.
    """
    ws = sign(kernel).astype(np.int64)
    taps = binary_taps(x, ws.shape[:2], strides, dilations, padding, pad_value)
    dot = sum(np.einsum("nhwc,co->nhwo", patch, ws[ky, kx]) for ky, kx, patch in taps)
    return output_transform(dot, multiplier, bias, activation)


def bconv2d_bitpacked_np(*args, **kwargs) -> np.ndarray:
    """bconv2d_np with output_type="bitpacked": the signs of the float output,
    packed (int32 [N, OH, OW, ceil(C_out / 32)])."""
    return bitpack_np(bconv2d_np(*args, **kwargs))


def int8_signs_np(q: np.ndarray, zero_point: int) -> np.ndarray:
    """The +-1 values a binary op reads from int8 codes q of a quantized tensor
    (real value scale * (q - zero_point), scale > 0): -1 where q < zero_point,
    +1 elsewhere (zero is +1), as float32."""
    return np.where(np.asarray(q) < zero_point, -1.0, 1.0).astype(np.float32)


def quantize_int8_np(y: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """The lowbit ops' int8 output of float32 y (core/int8_io.h):
    round(y * inv_scale) + zero_point, inv_scale = 1 / scale in float32, one
    float32 multiplication (TFLite's optimized QUANTIZE; its reference
    divides), rounding halves away from zero, saturated to [-128, 127]; NaN
    gives zero_point (the lowbit ops' choice)."""
    inv_scale = np.float32(1) / np.float32(scale)
    v = (np.asarray(y, np.float32) * inv_scale).astype(np.float32).astype(np.float64)
    r = np.sign(v) * np.floor(np.abs(v) + 0.5)  # exact in float64
    q = np.clip(np.nan_to_num(r, nan=0.0) + zero_point, -128, 127)
    return np.where(np.isnan(v), zero_point, q).astype(np.int8)


def dequantize_int8_np(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """float(q - zero_point) * scale in float32 (TFLite's DEQUANTIZE)."""
    return ((np.asarray(q, np.int32) - zero_point).astype(np.float32) * np.float32(scale)).astype(
        np.float32)


def bgemm_np(
    x: np.ndarray,
    kernel: np.ndarray,
    multiplier: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    activation: str | None = None,
) -> np.ndarray:
    """Binary dense layer: sign(x) [..., K] times sign(kernel) [K, N_out] as exact
    integers, then y = m * dot + b in float32 (and ReLU)."""
    dot = sign(x).astype(np.int64) @ sign(kernel).astype(np.int64)
    return output_transform(dot, multiplier, bias, activation)


def unpack_bits_np(packed: np.ndarray, channels: int) -> np.ndarray:
    """Bits (0/1, uint8) of `channels` channels from int32 words along the last axis."""
    words = np.asarray(packed).astype(np.int64) & 0xFFFFFFFF
    bits = (words[..., :, None] >> np.arange(BITS)) & 1
    return bits.reshape(words.shape[:-1] + (-1,))[..., :channels].astype(np.uint8)


def bmaxpool2d_np(
    packed: np.ndarray,
    channels: int,
    pool_size: tuple[int, int],
    strides: tuple[int, int],
    padding: str = "VALID",
) -> np.ndarray:
    """Max-pool of packed +-1 values: the -1 bit survives only if every value of
    the window (padding excluded) is -1. Returns packed int32."""
    bits = unpack_bits_np(packed, channels)
    n, h, w, _ = bits.shape
    (kh, kw), (sh, sw) = pool_size, strides
    if padding == "SAME":
        out_h, top, _ = same_padding(h, kh, sh, 1)
        out_w, left, _ = same_padding(w, kw, sw, 1)
    else:
        out_h, out_w, top, left = (h - kh) // sh + 1, (w - kw) // sw + 1, 0, 0
    out = np.zeros((n, out_h, out_w, channels), np.float32)
    for oy in range(out_h):
        for ox in range(out_w):
            y0, x0 = oy * sh - top, ox * sw - left
            window = bits[:, max(y0, 0):min(y0 + kh, h), max(x0, 0):min(x0 + kw, w), :]
            all_negative = window.reshape(n, -1, channels).min(axis=1)
            out[:, oy, ox, :] = np.where(all_negative == 1, -1.0, 1.0)
    return bitpack_np(out)


def activation_planes_np(
    x: np.ndarray, mode: str, shifts: np.ndarray | None = None, bits: int = 0
) -> np.ndarray:
    """The +-1 activation planes of LowbitMultibitConv2d, stacked on a new first axis.

    "sign": sign(x); "abc": +1 where x + v >= 0.5 (float32), one plane per shift v;
    "dorefa": the k bits of q = round_half_even(clip(x, 0, 1) * (2^k - 1)) as +-1,
    then an all +1 plane.
    """
    x = np.asarray(x, np.float32)
    if mode == "sign":
        return sign(x)[None]
    if mode == "abc":
        return np.stack([np.where(x + np.float32(v) >= np.float32(0.5), 1.0, -1.0)
                         for v in np.asarray(shifts, np.float32)]).astype(np.float32)
    levels = np.float32(2**bits - 1)
    q = np.round(np.clip(x, np.float32(0), np.float32(1)) * levels).astype(np.int64)
    planes = [np.where((q >> p) & 1, 1.0, -1.0) for p in range(bits)] + [np.ones_like(x)]
    return np.stack(planes).astype(np.float32)


def multibit_conv2d_np(
    x: np.ndarray,
    planes: np.ndarray,
    alphas: np.ndarray,
    betas: np.ndarray,
    bias: np.ndarray,
    mode: str,
    shifts: np.ndarray | None = None,
    bits: int = 0,
    strides: tuple[int, int] = (1, 1),
    dilations: tuple[int, int] = (1, 1),
    padding: str = "VALID",
    pad_value: int = 0,
    activation: str | None = None,
) -> np.ndarray:
    """LowbitMultibitConv2d: weight planes [M, KH, KW, C, C_out] (+-1), input NHWC.

    The integer dot of every (activation plane, weight plane) pair comes from
    bconv2d_np; they are combined in float32 in the op's documented order,
        y = sum_p betas[p] * (sum_m alphas[m] * dot_pm) + bias,
    so the result is exact, not approximate.
    """
    act = activation_planes_np(x, mode, shifts, bits)
    alphas = np.asarray(alphas, np.float32)
    betas = np.asarray(betas, np.float32)
    y = None
    for p, plane in enumerate(act):
        inner = None
        for m, weights in enumerate(planes):
            dot = bconv2d_np(plane, weights, strides=strides, dilations=dilations,
                             padding=padding, pad_value=pad_value)
            term = alphas[m] * dot
            inner = term if inner is None else (inner + term).astype(np.float32)
        term = (betas[p] * inner).astype(np.float32)
        y = term if y is None else (y + term).astype(np.float32)
    y = (y + np.asarray(bias, np.float32)).astype(np.float32)
    if activation == "relu":
        y = np.maximum(y, np.float32(0))
    return y
# --------------------------------------------------------------------------
# Fastfood (Deep Fried Convnets): V_b x = (1/n) S_b H G_b Pi_b H B_b x
# --------------------------------------------------------------------------


def hadamard_np(n: int) -> np.ndarray:
    """The n x n Sylvester Walsh-Hadamard matrix: H_1 = [1], H_2m = [[H, H], [H, -H]]."""
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


def _fastfood_finish(y, bias, activation):
    if bias is not None:
        y = y + bias
    if activation == "relu":
        y = np.maximum(y, 0)
    return y


def fastfood_dense_np(x, b, g, s, permutation, bias=None, units=None, activation=None):
    """Fastfood as one dense float64 matrix: W[:, b n + j] = row j of V_b, so
    y = pad(x) W[:, :units] (+ bias, relu). For the tolerance checks."""
    b, g, s = (np.asarray(v, np.float64) for v in (b, g, s))
    k, n = b.shape
    units = k * n if units is None else units
    hadamard = hadamard_np(n)
    blocks = []
    for blk in range(k):
        pi = np.eye(n)[permutation[blk]]  # (pi v)[j] = v[permutation[blk, j]]
        v = (s[blk, :, None] * hadamard) @ (g[blk, :, None] * pi) @ (hadamard * b[blk]) / n
        blocks.append(v)
    w = np.concatenate(blocks, axis=0)[:units].T  # (n, units)
    x = np.asarray(x, np.float64)
    xp = np.zeros(x.shape[:-1] + (n,))
    xp[..., : x.shape[-1]] = x
    return _fastfood_finish(xp @ w, bias, activation)


def walsh_hadamard_np(t: np.ndarray) -> np.ndarray:
    """Fast Walsh-Hadamard transform along the last axis, in t's dtype, with
    the butterfly stages h = 1, 2, 4, ... of (a + b, a - b)."""
    t = np.array(t)
    n = t.shape[-1]
    h = 1
    while h < n:
        v = t.reshape(t.shape[:-1] + (n // (2 * h), 2, h))
        a, c = v[..., 0, :].copy(), v[..., 1, :].copy()
        v[..., 0, :], v[..., 1, :] = a + c, a - c
        h *= 2
    return t


def fastfood_np(x, b, g, s, permutation, bias=None, units=None, activation=None):
    """Fastfood in float32 with the Keras layer's operations in its order (the
    exact reference): pad, * b, H, gather, * g, H, * (s * (1/n)), + bias, relu."""
    b, g, s = (np.asarray(v, np.float32) for v in (b, g, s))
    k, n = b.shape
    units = k * n if units is None else units
    x = np.asarray(x, np.float32)
    rows = x.reshape(-1, x.shape[-1])
    xp = np.zeros((rows.shape[0], n), np.float32)
    xp[:, : rows.shape[1]] = rows
    t = walsh_hadamard_np(xp[None] * b[:, None])  # (k, rows, n)
    t = np.take_along_axis(t, np.asarray(permutation)[:, None, :], axis=2)
    t = walsh_hadamard_np(t * g[:, None])
    y = t * (s * np.float32(1.0 / n))[:, None]
    y = y.transpose(1, 0, 2).reshape(rows.shape[0], k * n)[:, :units]
    bias = None if bias is None else np.asarray(bias, np.float32)
    y = _fastfood_finish(y, bias, activation).astype(np.float32)
    return y.reshape(x.shape[:-1] + (units,))


def bdepthwise_conv2d_np(
    x: np.ndarray,
    kernel: np.ndarray,
    multiplier: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    strides: tuple[int, int] = (1, 1),
    dilations: tuple[int, int] = (1, 1),
    padding: str = "VALID",
    pad_value: int = 0,
    activation: str | None = None,
) -> np.ndarray:
    """Binary depthwise conv of sign(x) (NHWC) with sign(kernel) ([KH, KW, C, DM],
    Keras layout), then y = m * dot + b per output channel o = c * DM + j.

    Padded pixels ("SAME", or explicit ((top, bottom), (left, right))) hold
    `pad_value` (0 or +1) in the binarised input.
    The dot products are exact integers; the transform is computed in float32.
    """
    ws = sign(kernel).astype(np.int64)
    kh, kw, cin, dm = ws.shape
    taps = binary_taps(x, (kh, kw), strides, dilations, padding, pad_value)
    dot = sum(patch[..., None] * ws[ky, kx] for ky, kx, patch in taps)
    return output_transform(dot.reshape(*dot.shape[:3], cin * dm), multiplier, bias, activation)
