"""The README's "Using it" snippet runs as written, in a fresh interpreter, and
a model saved with lowbit layers loads in another one after `import lowbit_tf`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

from repo_paths import REPO


def run_python(script: str, cwd) -> subprocess.CompletedProcess:
    """`script` in a fresh interpreter, this checkout's packages first on the path."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    paths = [str(REPO), str(REPO / "converter"), str(REPO / "models")]
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", script], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def using_it_snippet() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Using it"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_snippet_runs_with_public_imports_only(tmp_path):
    snippet = using_it_snippet()
    assert "_keras" not in snippet and "import keras" in snippet
    # `images` is the reader's; the snippet's model takes 32x32x3.
    script = "import numpy as np\nimages = np.zeros((2, 32, 32, 3), np.float32)\n" + snippet
    script += "print('logits', logits.shape)\n"
    proc = run_python(script, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "logits (2, 10)" in proc.stdout
    assert (tmp_path / "model.keras").stat().st_size > 0


def test_saved_model_loads_in_a_fresh_interpreter_after_import_lowbit_tf(tmp_path):
    save = textwrap.dedent("""
        import keras
        import numpy as np
        import lowbit_tf
        from lowbit_tf import constraints, layers
        model = keras.Sequential([
            keras.Input((6, 6, 3)),
            layers.QuantConv2D(4, 3, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                               kernel_constraint=constraints.WeightClip(1.0), name="bconv"),
            keras.layers.Flatten(),
            layers.QuantDense(2, input_quantizer="ste_sign", kernel_quantizer="ste_tern"),
        ])
        model.save("m.keras")
        x = np.random.default_rng(0).standard_normal((2, 6, 6, 3)).astype(np.float32)
        np.save("x.npy", x)
        np.save("y.npy", model.predict(x, verbose=0))
    """)
    proc = run_python(save, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Only `import lowbit_tf`: no submodule named, as a user would write it.
    load = textwrap.dedent("""
        import keras
        import numpy as np
        import lowbit_tf
        model = keras.models.load_model("m.keras")
        y = model.predict(np.load("x.npy"), verbose=0)
        print("same", bool(np.array_equal(y, np.load("y.npy"))),
              type(model.get_layer("bconv")).__module__)
    """)
    proc = run_python(load, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "same True lowbit_tf.layers" in proc.stdout
