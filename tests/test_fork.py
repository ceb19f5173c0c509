"""Fork safety: a kernel used in a parent process (on 2 threads, so the OpenMP pool exists),
then in a child process, then in the parent again, completes with bitwise the same results.

GNU libgomp deadlocks when a forked child enters a parallel region after its parent used
one (https://gcc.gnu.org/bugzilla/show_bug.cgi?id=60035); fastloss/_kernels.pyx makes a
forked child run its kernels on one thread (see the comment at _in_forked_child there). Each
scenario runs in a fresh interpreter with a timeout, so that a hang fails the test instead
of hanging the test run, and so that it does not depend on what other tests did before.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import reliability_cases as rc

pytestmark = pytest.mark.skipif(not hasattr(os, "killpg"), reason="POSIX process groups")

CASES = rc.case_params()
TIMEOUT = 120  # seconds for a whole scenario; a child gets 60

SCRIPT = textwrap.dedent(
    """
    import hashlib, multiprocessing, os, sys
    sys.path.insert(0, {tests_dir!r})
    import numpy as np
    import reliability_cases as rc

    case = rc.CASES_BY_NAME[{name!r}]
    # 512 x 1000 logits (or 512 000 elements): 32 blocks, well above the serial threshold
    ARGS, KWARGS = case.valid_call(np.random.default_rng(1), np.float32, 512_000)

    def digest():
        loss, grad = case.function()(*ARGS, **KWARGS, reduction="sum", n_threads=2)
        return hashlib.sha256(np.float64(loss).tobytes() + grad.tobytes()).hexdigest()

    def child(queue):
        queue.put(digest())

    def grandchild_too(queue):
        # a child that forks again: its own child must also finish
        inner = multiprocessing.get_context("fork")
        inner_queue = inner.Queue()
        process = inner.Process(target=child, args=(inner_queue,))
        process.start()
        process.join(30)
        queue.put(digest() if not process.is_alive() else "grandchild hung")
        if process.is_alive():
            process.kill()
        else:
            queue.put(inner_queue.get())

    if __name__ == "__main__":
        method = sys.argv[1]
        before = digest()
        if method == "os.fork":
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.write(write_end, digest().encode())
                os._exit(0)
            os.close(write_end)
            results = [os.read(read_end, 64).decode()]
            os.waitpid(pid, 0)
        else:
            context = multiprocessing.get_context(method.replace("+grandchild", ""))
            queue = context.Queue()
            target = grandchild_too if method.endswith("+grandchild") else child
            process = context.Process(target=target, args=(queue,))
            process.start()
            process.join(60)
            if process.is_alive():
                process.kill()
                print("HANG: the child did not finish in 60 s")
                sys.exit(3)
            assert process.exitcode == 0, process.exitcode
            results = [queue.get(timeout=10)]
            if target is grandchild_too:
                results.append(queue.get(timeout=10))
        after = digest()
        assert after == before, "the parent's result changed"
        assert all(r == before for r in results), (results, before)
        print("OK", method, len(results))
    """
)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("method", ["fork", "os.fork", "fork+grandchild", "forkserver", "spawn"])
def test_parent_child_parent(case, method, tmp_path: Path):
    if method not in ("os.fork", "fork+grandchild") and method not in \
            __import__("multiprocessing").get_all_start_methods():
        pytest.skip(f"no {method} start method on this platform")
    if "fork" in method and not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    script = tmp_path / "scenario.py"
    script.write_text(SCRIPT.format(tests_dir=str(Path(__file__).resolve().parent),
                                    name=case.name))
    env = dict(os.environ)
    # the child interpreters import the same fastloss as this one
    package_root = str(Path(sys.modules["fastloss"].__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([package_root] + [p for p in [env.get("PYTHONPATH")] if p])
    env.pop("OMP_NUM_THREADS", None)
    # its own session, so that a hung grandchild is killed with it
    process = subprocess.Popen([sys.executable, str(script), method], env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"{method}: the scenario hung for {TIMEOUT} s\n{stdout}\n{stderr}")
    finally:
        try:  # whatever it left behind
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert process.returncode == 0, f"{stdout}\n{stderr}"
    assert stdout.startswith("OK"), stdout
