"""lowbit_tf.convert, the lazy facade to lowbit_converter.convert: the same
signature and docstring, and Larq Compute Engine's options answered clearly."""

from __future__ import annotations

import inspect
import pydoc

import pytest
import tensorflow as tf

import lowbit_converter
import lowbit_tf
from lowbit_tf import _facade, layers
from lowbit_tf._keras import keras


@pytest.mark.parametrize("name", ["convert", "convert_with_report"])
def test_facade_has_the_converters_signature_and_docstring(name):
    facade, real = getattr(_facade, name), getattr(lowbit_converter, name)
    assert str(inspect.signature(facade)) == str(inspect.signature(real))
    assert inspect.getdoc(facade) == inspect.getdoc(real)
    assert list(inspect.signature(facade).parameters) == [
        "model", "lowbit", "packed_chains", "float_fallback", "int8", "representative_dataset",
        "inference_input_type", "inference_output_type", "int8_float_layers"]


def test_public_convert_is_the_facade():
    assert lowbit_tf.convert is _facade.convert
    text = pydoc.render_doc(lowbit_tf.convert, renderer=pydoc.plaintext)
    assert "float_fallback: 'bool' = False" in text and "**kwargs" not in text
    assert "LowbitBconv2d" in text


def tiny_model() -> keras.Model:
    return keras.Sequential([
        keras.Input((6, 6, 3)),
        layers.QuantConv2D(4, 3, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                           name="bconv"),
    ])


@pytest.mark.parametrize("convert", [lowbit_tf.convert, lowbit_converter.convert,
                                     lowbit_converter.convert_with_report])
@pytest.mark.parametrize("option, value, says", [
    ("experimental_default_int8_range", (-3.0, 3.0), "int8=True and a representative_dataset"),
    ("target", "xcore", "LOWBIT_KERNEL"),
    ("experimental_enable_bitpacked_activations", False, "packed_chains"),
])
def test_lce_options_are_refused_saying_what_to_do(convert, option, value, says):
    with pytest.raises(TypeError, match=rf"Larq Compute Engine.*{option}=.*{says}"):
        convert(tiny_model(), **{option: value})


@pytest.mark.parametrize("kwargs, says", [
    (dict(inference_input_type=tf.int8), "inference_input_type=int8 needs int8=True"),
    (dict(inference_output_type=tf.uint8), "inference_output_type must be float32 or int8"),
    (dict(int8=True), "int8=True needs a representative_dataset"),
    (dict(representative_dataset=lambda: []), "only used with int8=True"),
])
def test_int8_options_are_checked(kwargs, says):
    with pytest.raises(ValueError, match=says):
        lowbit_tf.convert(tiny_model(), **kwargs)


def test_lce_options_asking_for_what_happens_anyway_are_accepted():
    tflite = lowbit_tf.convert(tiny_model(), inference_input_type=tf.float32,
                               inference_output_type="float32",
                               experimental_default_int8_range=None, target="arm")
    assert tflite[4:8] == b"TFL3"


def test_unknown_options_still_raise_pythons_type_error():
    with pytest.raises(TypeError, match="unexpected keyword argument 'lowbti'"):
        lowbit_tf.convert(tiny_model(), lowbti=False)
