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

    Padded pixels ("SAME") hold `pad_value` (0 or +1) in the binarised input.
    The dot products are exact integers; the transform is computed in float32.
    """
    xs = sign(x)
    ws = sign(kernel)
    kh, kw, cin, cout = ws.shape
    (sh, sw), (dh, dw) = strides, dilations
    if padding == "SAME":
        _, top, bottom = same_padding(xs.shape[1], kh, sh, dh)
        _, left, right = same_padding(xs.shape[2], kw, sw, dw)
        xs = np.pad(xs, ((0, 0), (top, bottom), (left, right), (0, 0)),
                    constant_values=float(pad_value))
    n, h, w, _ = xs.shape
    out_h = (h - ((kh - 1) * dh + 1)) // sh + 1
    out_w = (w - ((kw - 1) * dw + 1)) // sw + 1
    dot = np.zeros((n, out_h, out_w, cout), np.int64)
    for ky in range(kh):
        for kx in range(kw):
            patch = xs[:, ky * dh: ky * dh + (out_h - 1) * sh + 1: sh,
                       kx * dw: kx * dw + (out_w - 1) * sw + 1: sw, :]
            dot += np.einsum("nhwc,co->nhwo", patch.astype(np.int64),
                             ws[ky, kx].astype(np.int64))
    m = np.ones(cout, np.float32) if multiplier is None else np.asarray(multiplier, np.float32)
    b = np.zeros(cout, np.float32) if bias is None else np.asarray(bias, np.float32)
    y = dot.astype(np.float32) * m + b
    if activation == "relu":
        y = np.maximum(y, np.float32(0))
    return y.astype(np.float32)


def bconv2d_bitpacked_np(*args, **kwargs) -> np.ndarray:
    """bconv2d_np with output_type="bitpacked": the signs of the float output,
    packed (int32 [N, OH, OW, ceil(C_out / 32)])."""
    return bitpack_np(bconv2d_np(*args, **kwargs))


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

    Padded pixels ("SAME") hold `pad_value` (0 or +1) in the binarised input.
    The dot products are exact integers; the transform is computed in float32.
    """
    xs = sign(x)
    ws = sign(kernel)
    kh, kw, cin, dm = ws.shape
    (sh, sw), (dh, dw) = strides, dilations
    if padding == "SAME":
        _, top, bottom = same_padding(xs.shape[1], kh, sh, dh)
        _, left, right = same_padding(xs.shape[2], kw, sw, dw)
        xs = np.pad(xs, ((0, 0), (top, bottom), (left, right), (0, 0)),
                    constant_values=float(pad_value))
    n, h, w, _ = xs.shape
    out_h = (h - ((kh - 1) * dh + 1)) // sh + 1
    out_w = (w - ((kw - 1) * dw + 1)) // sw + 1
    dot = np.zeros((n, out_h, out_w, cin, dm), np.int64)
    for ky in range(kh):
        for kx in range(kw):
            patch = xs[:, ky * dh: ky * dh + (out_h - 1) * sh + 1: sh,
                       kx * dw: kx * dw + (out_w - 1) * sw + 1: sw, :]
            dot += patch.astype(np.int64)[..., None] * ws[ky, kx].astype(np.int64)
    dot = dot.reshape(n, out_h, out_w, cin * dm)
    m = np.ones(cin * dm, np.float32) if multiplier is None else np.asarray(multiplier, np.float32)
    b = np.zeros(cin * dm, np.float32) if bias is None else np.asarray(bias, np.float32)
    y = dot.astype(np.float32) * m + b
    if activation == "relu":
        y = np.maximum(y, np.float32(0))
    return y.astype(np.float32)
