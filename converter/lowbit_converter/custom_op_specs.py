"""The custom ops the converter emits and the options each one carries.

This is the Python side of the contract written down in docs/custom_ops.md;
the C++ kernels (custom_ops/tflite) read the same keys. The contract itself is
the core's table (custom_ops/core/op_contract.h); tests/core/test_op_contract.py
holds every op, key, type, choice, minimum, default and input count here to it
(kept as plain Python so that the converter needs no native library to import).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class OptionSpec:
    type: type
    choices: tuple | None = None
    minimum: int | None = None
    # An option added after the first version of the contract: readers take
    # `default` when it is absent, and the flatbuffer pass leaves it out when
    # it has that value (so models without the feature are unchanged).
    default: object | None = None


@dataclass(frozen=True)
class CustomOpSpec:
    name: str
    num_inputs: int
    options: dict[str, OptionSpec]
    # Inputs after the first num_inputs that the options call for, as a map
    # from the (normalised) options to one flag per extra input: True for a
    # weight that must be a constant, False for a run-time tensor.
    extra_inputs: Callable[[dict], tuple[bool, ...]] | None = None

    def input_constness(self, options: dict) -> tuple[bool, ...]:
        """Per input, whether it must be a constant (input 0 never)."""
        extra = self.extra_inputs(options) if self.extra_inputs is not None else ()
        return (False,) + (True,) * (self.num_inputs - 1) + extra


# LowbitBconv2d's epilogue inputs: post_multiplier and post_bias (constants),
# then the residual (a run-time tensor).
EPILOGUE_INPUTS = {
    "none": (),
    "affine": (True, True),
    "add": (False,),
    "affine_add": (True, True, False),
}


BCONV2D = CustomOpSpec(
    name="LowbitBconv2d",
    num_inputs=4,
    options={
        "channels_in": OptionSpec(int, minimum=1),
        "kernel_h": OptionSpec(int, minimum=1),
        "kernel_w": OptionSpec(int, minimum=1),
        "stride_h": OptionSpec(int, minimum=1),
        "stride_w": OptionSpec(int, minimum=1),
        "dilation_h": OptionSpec(int, minimum=1),
        "dilation_w": OptionSpec(int, minimum=1),
        "padding": OptionSpec(str, choices=("SAME", "VALID", "EXPLICIT")),
        "pad_value": OptionSpec(int, choices=(0, 1)),
        "activation": OptionSpec(str, choices=("NONE", "RELU")),
        # "int8": the int8 output of a quantized model (docs/int8.md).
        "output_type": OptionSpec(str, choices=("float", "bitpacked", "int8"), default="float"),
        "epilogue": OptionSpec(str, choices=tuple(EPILOGUE_INPUTS), default="none"),
        # padding "EXPLICIT": rows / columns padded on each side.
        **{f"explicit_pad_{side}": OptionSpec(int, minimum=0, default=0)
           for side in ("top", "bottom", "left", "right")},
        "output_activation": OptionSpec(str, choices=("NONE", "RELU"), default="NONE"),
    },
    extra_inputs=lambda options: EPILOGUE_INPUTS[options.get("epilogue", "none")],
)

# The options the other conv ops share with LowbitBconv2d (whose padding alone
# may be EXPLICIT).
_CONV_OPTIONS = {
    key: BCONV2D.options[key]
    for key in ("channels_in", "kernel_h", "kernel_w", "stride_h", "stride_w", "dilation_h",
                "dilation_w", "pad_value", "activation")
}
_CONV_OPTIONS["padding"] = OptionSpec(str, choices=("SAME", "VALID"))

MULTIBIT_CONV2D = CustomOpSpec(
    name="LowbitMultibitConv2d",
    num_inputs=6,
    options={
        **_CONV_OPTIONS,
        "activation_mode": OptionSpec(str, choices=("sign", "abc", "dorefa")),
        "activation_bits": OptionSpec(int, minimum=0),
        "output_type": BCONV2D.options["output_type"],
    },
)

BGEMM = CustomOpSpec(
    name="LowbitBgemm",
    num_inputs=4,
    options={
        "channels_in": BCONV2D.options["channels_in"],
        "activation": BCONV2D.options["activation"],
        "output_type": BCONV2D.options["output_type"],
    },
)

BMAXPOOL2D = CustomOpSpec(
    name="LowbitBMaxPool2d",
    num_inputs=1,
    options={
        "channels": OptionSpec(int, minimum=1),
        "filter_h": OptionSpec(int, minimum=1),
        "filter_w": OptionSpec(int, minimum=1),
        "stride_h": OptionSpec(int, minimum=1),
        "stride_w": OptionSpec(int, minimum=1),
        "padding": OptionSpec(str, choices=("SAME", "VALID")),
    },
)

FASTFOOD = CustomOpSpec(
    name="LowbitFastfood",
    num_inputs=6,
    options={
        "units": OptionSpec(int, minimum=1),
        "activation": OptionSpec(str, choices=("NONE", "RELU")),
        # "int8": the int8 output of a quantized model (docs/int8.md).
        "output_type": OptionSpec(str, choices=("float", "int8"), default="float"),
    },
)

BDEPTHWISECONV2D = CustomOpSpec(
    name="LowbitBDepthwiseConv2d",
    num_inputs=4,
    options={
        **_CONV_OPTIONS,
        "depth_multiplier": OptionSpec(int, minimum=1),
        "output_type": BCONV2D.options["output_type"],
    },
)

CUSTOM_OPS: dict[str, CustomOpSpec] = {
    spec.name: spec
    for spec in (BCONV2D, BGEMM, BMAXPOOL2D, BDEPTHWISECONV2D, MULTIBIT_CONV2D, FASTFOOD)
}
