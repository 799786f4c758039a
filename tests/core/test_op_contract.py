"""The op contract table (custom_ops/core/op_contract.h) and what is held to it.

- The TF registration derived from the table equals the OpDefs recorded before
  it was (tests/data/lowbit_op_defs.pbtxt): names, inputs, outputs, attribute
  names, types, minimums, allowed values and defaults, in the same order, so
  SavedModels and converted files keep working.
- The table as the TFLite library returns it (lowbit_op_contract_json) agrees
  with the converter's custom_op_specs.py (every op, option key, type,
  choices / minimum, default, number of inputs) and with docs/custom_ops.md
  (every option key appears in its op's section).
"""

from __future__ import annotations

import ctypes
import json
import re
from pathlib import Path

import pytest

from lowbit_converter import custom_op_specs
from lowbit_tf import _native

ROOT = Path(__file__).resolve().parents[2]
RECORDED_OP_DEFS = ROOT / "tests" / "data" / "lowbit_op_defs.pbtxt"


@pytest.fixture(scope="module")
def contract() -> dict:
    lib = ctypes.CDLL(str(_native.tflite_library_path()))
    fn = lib.lowbit_op_contract_json
    fn.restype = ctypes.c_char_p
    table = json.loads(fn().decode())
    return {op["name"]: op for op in table["ops"]}


def _options(op: dict) -> dict:
    """The options a .tflite file carries (not the TF-only attributes)."""
    return {o["key"]: o for o in op["options"] if not o["tf_only"]}


def test_tf_registration_equals_recorded_op_defs():
    pytest.importorskip("tensorflow")
    from google.protobuf import text_format
    from tensorflow.core.framework import op_def_pb2
    from tensorflow.python.framework import op_def_registry

    _native.load_tf_ops()
    recorded = op_def_pb2.OpList()
    text_format.Parse(RECORDED_OP_DEFS.read_text(), recorded)
    assert len(recorded.op) == 7
    for expected in recorded.op:
        actual = op_def_registry.get(expected.name)
        assert actual is not None, expected.name
        assert text_format.MessageToString(actual) == text_format.MessageToString(expected)


def test_every_tflite_op_is_in_the_table(contract):
    assert set(contract) == set(custom_op_specs.CUSTOM_OPS)


@pytest.mark.parametrize("name", sorted(custom_op_specs.CUSTOM_OPS))
def test_converter_specs_follow_the_table(contract, name):
    spec = custom_op_specs.CUSTOM_OPS[name]
    op = contract[name]
    assert spec.num_inputs == op["num_inputs"]
    assert [t["name"] for t in op["inputs"] if t["variadic"]] == (
        ["epilogue_inputs"] if spec.extra_inputs is not None else []
    )
    options = _options(op)
    assert set(spec.options) == set(options)
    for key, want in options.items():
        got = spec.options[key]
        if want["type"] == "int":
            assert got.type is int, key
            if got.choices is not None:  # a small range written out: pad_value (0, 1)
                assert tuple(got.choices) == tuple(range(want["minimum"], want["maximum"] + 1))
                assert got.minimum is None
            else:
                assert got.minimum == want["minimum"], key
        else:
            assert got.type is str, key
            assert tuple(got.choices) == tuple(want["choices"]), key
        assert got.default == want.get("default"), key
        if want["optional"]:
            assert want["default"] == want["tf_default"]


def _doc_sections() -> dict[str, str]:
    """docs/custom_ops.md split at its "## " headings, by the op each one names."""
    text = (ROOT / "docs" / "custom_ops.md").read_text()
    sections: dict[str, str] = {}
    parts = re.split(r"^(## .*)$", text, flags=re.M)
    for heading, body in zip(parts[1::2], parts[2::2], strict=True):
        for name in custom_op_specs.CUSTOM_OPS:
            if re.search(rf"\b{name}\b", heading):
                sections[name] = sections.get(name, "") + heading + body
    return sections


@pytest.mark.parametrize("name", sorted(custom_op_specs.CUSTOM_OPS))
def test_docs_name_every_option(contract, name):
    sections = _doc_sections()
    section = sections.get(name)
    assert section, f"docs/custom_ops.md has no section for {name}"
    bconv = _options(contract["LowbitBconv2d"])
    for key, option in _options(contract[name]).items():
        assert re.search(rf"\b{key}\b", section), f"{name}: option {key} not in its doc section"
        # A section may refer to LowbitBconv2d's for the values of an option it shares.
        shared = key in bconv and option == bconv[key] and "LowbitBconv2d" in section
        where = section + (sections["LowbitBconv2d"] if shared else "")
        for choice in option.get("choices", ()):
            assert f'"{choice}"' in where, f"{name}: {key} = {choice!r} not in its doc section"


def test_json_describes_inputs_and_outputs(contract):
    bconv = contract["LowbitBconv2d"]
    assert [t["name"] for t in bconv["inputs"]] == [
        "input", "filter", "multiplier", "bias", "epilogue_inputs"]
    assert bconv["inputs"][0]["tflite_types"] == ["FLOAT32", "INT32", "INT8"]
    assert bconv["inputs"][1]["min_rank"] == bconv["inputs"][1]["max_rank"] == 2
    assert [t["name"] for t in contract["LowbitFastfood"]["inputs"]] == [
        "x", "b", "g", "s", "permutation", "bias"]
    for op in contract.values():
        assert len(op["outputs"]) == 1


@pytest.mark.parametrize("attrs, message", [
    # Past the table's int range: the TF attribute declares only the minimum.
    ({"channels_in": 2**40},
     r"LowbitBgemm: option 'channels_in' = 1099511627776 is out of range \[1, 2147483647\]"),
    # Within the table, then the core's own check (CheckBGemmOptions).
    ({"channels_in": 2**25}, "channels_in must be in"),
])
def test_tf_kernel_reads_options_through_the_table(attrs, message):
    """The TF kernels check option values with the same reader as the TFLite ops."""
    tf = pytest.importorskip("tensorflow")
    import numpy as np

    x = np.zeros((2, 33), np.float32)
    filt = np.zeros((4, 2), np.int32)
    ones, zeros = np.ones(4, np.float32), np.zeros(4, np.float32)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match=message):
        _native.load_tf_ops().lowbit_bgemm(x, filt, ones, zeros, **attrs)
