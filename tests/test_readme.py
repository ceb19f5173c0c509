"""The README's two commands, as a new user types them, and the training-loop example.

The main command (README.md, "The two commands": install, then run the benchmark report) is
read from README.md and run from the repository root, where a user types it: its install
part is what this test run was installed with (CI runs the README's test command, which
installs the same package), so the test runs the rest of it in its shortest form that still
makes the whole report: ``--quick --sizes tiny`` (every loss, one small size; the large size
of ``--quick`` alone is 2**27 elements on a machine with a large last-level cache). If the README
and the package drift apart (a renamed module, an option that no longer exists, a source tree
that shadows the installed package without its compiled module) this test fails.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def readme_commands():
    """The fenced bash blocks of the README's "The two commands" section, in order."""
    text = README.read_text()
    section = text.split("## The two commands", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def test_readme_has_the_two_commands():
    main, tests = readme_commands()[:2]
    assert "pip install" in main and "fastloss.bench" in main
    assert "pip install" in tests and "pytest" in tests


def test_ci_runs_the_readme_test_command_exactly():
    tests = readme_commands()[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci.splitlines(), f"{tests!r} is not a line of .ci/run"


def run_part(part: str):
    """One `&&`-separated part of a README command, typed in the repository root; `python`
    is this interpreter (the environment the package is installed in)."""
    argv = shlex.split(part)
    if argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONPATH=""))


def test_readme_main_command_runs_from_the_repository_root():
    main = readme_commands()[0]
    parts = [part.strip() for part in main.split("&&")]
    to_run = [part for part in parts if not part.startswith("pip install")]
    assert to_run, f"the main command {main!r} runs nothing after installing"
    for part in to_run:
        result = run_part(part + " --quick --sizes tiny")
        assert result.returncode == 0, (
            f"`{part} --quick --sizes tiny` in {ROOT} exited {result.returncode}:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        # the report: a header naming the machine and a table with fastloss rows
        assert "fastloss" in result.stdout and "copy-floor" in result.stdout, result.stdout[-3000:]


def test_unbuilt_source_tree_fails_with_one_clear_line(tmp_path):
    """A copy of the package without its compiled module: importing it names the problem
    and what to do, in one line, never a circular-import traceback."""
    import shutil

    import fastloss

    source = Path(fastloss.__file__).parent
    copy = tmp_path / "fastloss"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("_kernels*.so", "_kernels*.pyd",
                                                                "__pycache__"))
    # -S: no site-packages, so neither an installed fastloss nor an editable install's
    # finder can answer instead of the copy (its error comes before it imports numpy)
    result = subprocess.run([sys.executable, "-S", "-c", "import fastloss"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=""))
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: fastloss is being imported from its source tree"), last
    assert "pip install ." in last and "circular" not in result.stderr


# ---------------------------------------------------------------------- the example

def load_example():
    spec = importlib.util.spec_from_file_location("train_digits",
                                                  ROOT / "scripts" / "train_digits.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # (dataclasses look their module up there)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("model", ["softmax", "mlp"])
def test_training_example_loss_goes_down_and_matches_the_reference(model):
    example = load_example()
    data = example.load_data(seed=0)
    kwargs = dict(epochs=3, batch_size=64, learning_rate=0.05, hidden=32, seed=0)
    fast = example.train(__import__("fastloss"), model, data, **kwargs)
    ref = example.train(__import__("fastloss").reference, model, data, **kwargs)
    assert len(fast.losses) == 3
    assert fast.losses[-1] < 0.7 * fast.losses[0], fast.losses
    assert fast.accuracy > 0.8
    # the same loop with the NumPy reference: the same curve to float rounding
    np.testing.assert_allclose(fast.losses, ref.losses, rtol=1e-4)


def test_training_example_runs_as_a_script():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "train_digits.py"),
                             "--epochs", "2", "--hidden", "16"], cwd=ROOT.parent,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "softmax regression" in result.stdout and "MLP" in result.stdout
    assert "median epoch" in result.stdout
