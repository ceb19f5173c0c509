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
    """build_ext that decides OpenMP from a probe of the actual compiler."""

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
