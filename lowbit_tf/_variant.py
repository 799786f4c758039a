"""Which install this is. The full package (this file) has everything; the
lowbit-tf-runtime wheel (runtime/setup.py) ships lite.py and _native/ with its
own _variant.py saying RUNTIME_ONLY = True."""

RUNTIME_ONLY = False
