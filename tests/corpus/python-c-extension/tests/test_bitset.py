import pytest

import bitset
from bitset import _speedups


def test_is_compiled():
    assert _speedups.__file__.endswith(".so")


@pytest.mark.parametrize(
    ("data", "bits"),
    [(b"", 0), (b"\x00", 0), (b"\xff", 8), (b"\x01\x03\x07", 6), (bytes(range(256)), 1024)],
)
def test_popcount(data, bits):
    assert bitset.popcount(data) == bits


def test_hamming_and_similarity():
    assert bitset.hamming(b"\x0f\xf0", b"\xff\xff") == 8
    assert bitset.similarity(b"abc", b"abc") == 1.0
    assert bitset.similarity(b"\x00", b"\xff") == 0.0
    assert bitset.hamming(bytearray(b"ab"), memoryview(b"ab")) == 0


def test_length_mismatch():
    with pytest.raises(ValueError, match="differ in length"):
        bitset.hamming(b"a", b"ab")
