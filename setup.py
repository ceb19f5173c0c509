"""Build fastloss's compiled kernels.

OpenMP is probed by compiling *and running* a tiny program with the compiler setuptools will
use; if that fails the extension is still built, serially, with a warning (and
``fastloss.openmp_enabled()`` says False, which the test suite turns into a failure unless
FASTLOSS_ALLOW_NO_OPENMP=1). Set FASTLOSS_DEBUG=1 to build with Cython bounds checks and
without optimisation, for the sanitizer and debug runs described in the README.

No -march flag is ever passed: fl_kernels.c compiles each kernel per instruction set and
picks one at run time, so a wheel built here runs on any x86-64 CPU.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import warnings

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

DEBUG = os.environ.get("FASTLOSS_DEBUG", "0") not in ("", "0")

# One set of Cython directives for every module. Validation happens in Python before any
# kernel runs, so the kernels can go without bounds checks; FASTLOSS_DEBUG turns them on.
DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": False,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
}

# -fno-trapping-math lets gcc vectorize the branch-free math (it keeps values exact; see
# PERFORMANCE.md). Never -ffast-math: it breaks nan/inf handling, and linking crtfastmath.o
# into a shared library would turn on flush-to-zero in the whole Python process.
OPT_FLAGS = ["-O0", "-g"] if DEBUG else ["-O3"]
BASE_FLAGS = ["-fno-trapping-math", "-fno-math-errno", "-Wno-unused-function"]
OPENMP_FLAGS = ["-fopenmp"]

# FASTLOSS_SANITIZE=address,undefined builds an instrumented extension (scripts/sanitize.sh)
SANITIZE = os.environ.get("FASTLOSS_SANITIZE", "")
extra_sanitize = ["-fsanitize=" + SANITIZE, "-fno-omit-frame-pointer"] if SANITIZE else []

OPENMP_PROBE = textwrap.dedent(
    """
    #include <omp.h>
    #include <stdio.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel num_threads(2) reduction(+ : n)
        n += 1;
        printf("%d\\n", n);
        return n == 2 ? 0 : 1;
    }
    """
)


def _compiler_probe(compiler, flags, source):
    """Compile, link and run `source` with `flags`; True when all three succeed."""
    tmp = tempfile.mkdtemp(prefix="fastloss-probe-")
    try:
        path = os.path.join(tmp, "probe.c")
        with open(path, "w") as fh:
            fh.write(source)
        objects = compiler.compile([path], output_dir=tmp, extra_postargs=flags)
        exe = os.path.join(tmp, "probe")
        compiler.link_executable(objects, "probe", output_dir=tmp, extra_postargs=flags)
        subprocess.run([exe], check=True, capture_output=True, timeout=60)
        return True
    except Exception:  # any failure (compile, link or run) means: not usable
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _c_string(text):
    """A C string literal for a -D macro (setuptools passes argv without a shell)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class BuildExt(build_ext):
    """build_ext that decides OpenMP from a probe of the actual compiler, and leaves a copy of
    the compiled module in the source tree."""

    def run(self):
        super().run()
        if not self.inplace:
            self._copy_into_source_tree()

    def _copy_into_source_tree(self):
        """Copy the compiled module next to the sources, as ``--inplace`` would.

        ``python -m fastloss.bench`` typed in the repository root (the README's main command)
        imports the source package in the root, which shadows the installed one: Python puts
        the current directory first on sys.path. With the module copied here by the same
        ``pip install .`` that installed it, that import is complete and runs the same code
        (pip builds in the source tree). A read-only tree only loses this convenience: the
        installed package is unaffected, and fastloss/__init__.py then says what to do.
        """
        try:
            self.copy_extensions_to_source()
        except OSError as error:  # pragma: no cover - e.g. a read-only checkout
            warnings.warn(f"fastloss: could not copy the compiled module into the source tree "
                          f"({error}); run Python outside it to use the installed fastloss",
                          stacklevel=1)

    def build_extensions(self):
        compiler = self.compiler
        use_openmp = os.environ.get("FASTLOSS_NO_OPENMP", "0") in ("", "0") and _compiler_probe(
            compiler, OPENMP_FLAGS, OPENMP_PROBE
        )
        if use_openmp:
            parallel_flags = OPENMP_FLAGS
        else:
            warnings.warn(
                "fastloss: OpenMP was not found for this compiler (a test program with "
                "-fopenmp did not compile, link and run). Building the kernels SERIAL: "
                "n_threads will have no effect. Install an OpenMP runtime (e.g. libgomp) "
                "and rebuild for parallel kernels.",
                stacklevel=1,
            )
            # still honour `#pragma omp simd` where the compiler knows the flag
            simd_only = ["-fopenmp-simd"]
            parallel_flags = simd_only if _compiler_probe(compiler, simd_only, "int main(void){return 0;}") else []
        compile_flags = OPT_FLAGS + BASE_FLAGS + parallel_flags
        link_flags = OPENMP_FLAGS if use_openmp else []
        # What show_config() reports about the build, compiled into the extension itself (a
        # side file would be lost by setuptools' in-place and editable builds).
        compiler_name = (getattr(compiler, "compiler_so", None) or ["unknown"])[0]
        build_facts = [
            ("FL_BUILD_FLAGS", _c_string(" ".join(compile_flags + extra_sanitize))),
            ("FL_BUILD_LINK_FLAGS", _c_string(" ".join(link_flags))),
            ("FL_BUILD_COMPILER", _c_string(os.path.basename(compiler_name))),
            ("FL_BUILD_DEBUG", "1" if DEBUG else "0"),
        ]
        for ext in self.extensions:
            ext.extra_compile_args = compile_flags + list(ext.extra_compile_args or [])
            ext.extra_link_args = link_flags + list(ext.extra_link_args or [])
            ext.define_macros = list(ext.define_macros or []) + build_facts
        super().build_extensions()



def render_generated_sources():
    """fastloss/_src/fl_elementwise_list.h from the loss table (fastloss/_table.py), written
    only when its text changes (so an unchanged table does not force a rebuild). Generated
    files are never committed; the sdist ships the table that makes them."""
    import runpy

    table = runpy.run_path(os.path.join("fastloss", "_table.py"))
    path = os.path.join("fastloss", "_src", "fl_elementwise_list.h")
    text = table["kernel_list_header"]()
    try:
        with open(path) as fh:
            if fh.read() == text:
                return
    except OSError:
        pass
    with open(path, "w") as fh:
        fh.write(text)


render_generated_sources()

extensions = [
    Extension(
        "fastloss._kernels",
        sources=["fastloss/_kernels.pyx", "fastloss/_src/fl_kernels.c",
                 "fastloss/_src/fl_buffers.c"],  # fl_buffers.c: the result buffer cache (issue 18)
        include_dirs=["fastloss/_src", numpy.get_include()],
        depends=[
            os.path.join("fastloss", "_src", name)
            for name in sorted(os.listdir(os.path.join("fastloss", "_src")))
        ],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")],
        extra_compile_args=extra_sanitize,
        extra_link_args=extra_sanitize,
    )
]

setup(
    ext_modules=cythonize(extensions, compiler_directives=DIRECTIVES, annotate=False),
    cmdclass={"build_ext": BuildExt},
)
