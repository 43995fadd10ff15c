from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "bitset._speedups",
            sources=["src/bitset/_speedups.c"],
            extra_compile_args=["-O2", "-std=c99"],
        )
    ]
)
