"""Tests of the numpy block quantisers (quant.py) and of the reference with
quantised weights.

    python3 -m unittest moe_ref.test_quant   (from python/)

Hand-computed blocks pin llama.cpp's rounding rules; round trips check the
error bounds; when PyPI's `gguf` package (llama.cpp's own Python format
code, not a dependency of this project) is importable, random tensors must
quantise to its bytes exactly.
"""

import hashlib
import os
import tempfile
import unittest

import numpy as np

from . import generate, quant, safetensors
from .reference import Reference

try:
    import gguf
    import gguf.quants
except ImportError:  # not a project dependency: those tests skip
    gguf = None


def f16_bytes(v):
    return list(np.array([v], "<f2").view(np.uint8))


def block(values, fill=0.0):
    """One 32-element row: `values`, then `fill`."""
    x = np.full((1, 32), fill, np.float32)
    x[0, :len(values)] = values
    return x


def nibbles(qs):
    """uint8 [16] -> the 32 four-bit values, element order."""
    qs = np.asarray(qs, np.uint8)
    return list(qs & 0xF) + list(qs >> 4)


class Q8_0Test(unittest.TestCase):
    def test_halves_round_away_from_zero(self):
        # amax 127 -> d = 1, id = 1: q = roundf(x).
        x = block([127, 63.5, -63.5, 0.5, -0.5, 1.5, 2.5, -2.5, 0.49, -126.5])
        b = quant.quantize(x, "q8_0")[0]
        self.assertEqual(b.shape, (34,))
        self.assertEqual(list(b[:2]), f16_bytes(1.0))
        self.assertEqual(list(b[2:12].view(np.int8)), [127, 64, -64, 1, -1, 2, 3, -3, 0, -127])
        np.testing.assert_array_equal(quant.dequantize(b[None], "q8_0", 32)[0],
                                      b[2:].view(np.int8).astype(np.float32))

    def test_all_zero_block(self):
        b = quant.quantize(np.zeros((2, 64), np.float32), "q8_0")
        self.assertFalse(b.any())
        self.assertFalse(quant.dequantize(b, "q8_0", 64).any())

    def test_negative_largest(self):
        # amax = 254 -> d = 2, id = 0.5.
        x = block([-254, 1, -1, 3, 100])
        b = quant.quantize(x, "q8_0")[0]
        self.assertEqual(list(b[:2]), f16_bytes(2.0))
        self.assertEqual(list(b[2:7].view(np.int8)), [-127, 1, -1, 2, 50])

    def test_subnormal_and_huge_scales(self):
        # d = 2^-20 is an f16 subnormal (bits 0x0010); q is still exact.
        d = np.float32(2.0 ** -20)
        x = block([127 * d, -64 * d, 0.5 * d])
        b = quant.quantize(x, "q8_0")[0]
        self.assertEqual(list(b[:2]), [0x10, 0x00])
        self.assertEqual(list(b[2:5].view(np.int8)), [127, -64, 1])
        np.testing.assert_array_equal(quant.dequantize(b[None], "q8_0", 32)[0, :3],
                                      np.float32([127 * d, -64 * d, d]))
        # d = 2^-26 underflows f16 to 0; q is computed from the f32 d all the same.
        tiny = block([127 * 2.0 ** -26, 2.0 ** -26])
        b = quant.quantize(tiny, "q8_0")[0]
        self.assertEqual(list(b[:4]), [0, 0, 127, 1])
        # d = 70000 overflows f16 to +inf.
        b = quant.quantize(block([127 * 70000.0, 35000.0]), "q8_0")[0]
        self.assertEqual(list(b[:2]), [0x00, 0x7C])
        self.assertEqual(list(b[2:4].view(np.int8)), [127, 1])

    def test_scale_is_f16_rounded_but_q_uses_f32_d(self):
        x = block([1.0, 0.5, 1.0 / 3])
        b = quant.quantize(x, "q8_0")[0]
        d = np.float32(1.0) / np.float32(127)
        self.assertEqual(list(b[:2]), f16_bytes(d))
        self.assertEqual(list(b[2:5].view(np.int8)), [127, 64, 42])


class Q4_0Test(unittest.TestCase):
    def test_rounding_and_clip(self):
        # max = -8 (the signed largest) -> d = 1, id = 1: q = min(15, trunc(x + 8.5)).
        x = block([-8, 7, 8, -0.5, 0.5, -1.5, 2.5, -2.5, -7.5, -7.6, 7.49])
        b = quant.quantize(x, "q4_0")[0]
        self.assertEqual(b.shape, (18,))
        self.assertEqual(list(b[:2]), f16_bytes(1.0))
        q = nibbles(b[2:])
        self.assertEqual(q[:11], [0, 15, 15, 8, 9, 7, 11, 6, 1, 0, 15])
        self.assertEqual(q[11:], [8] * 21)  # zeros -> 8
        deq = quant.dequantize(b[None], "q4_0", 32)[0]
        np.testing.assert_array_equal(deq[:11], np.float32([-8, 7, 7, 0, 1, -1, 3, -2, -7, -8, 7]))

    def test_positive_largest_flips_the_scale(self):
        # max = +8 -> d = -1: +8 is stored exactly, -8 clips to -7.
        b = quant.quantize(block([8, -8, 1]), "q4_0")[0]
        self.assertEqual(list(b[:2]), f16_bytes(-1.0))
        np.testing.assert_array_equal(quant.dequantize(b[None], "q4_0", 32)[0, :3],
                                      np.float32([8, -7, 1]))

    def test_first_of_equal_magnitudes(self):
        self.assertEqual(list(quant.quantize(block([-4, 4]), "q4_0")[0, :2]), f16_bytes(0.5))
        self.assertEqual(list(quant.quantize(block([4, -4]), "q4_0")[0, :2]), f16_bytes(-0.5))
        self.assertEqual(list(quant.quantize(block([1, -4, 4]), "q4_0")[0, :2]), f16_bytes(0.5))

    def test_nibble_layout(self):
        # Element j in the low nibble of qs[j], element j + 16 in the high one.
        x = np.float32([-8] + list(range(-7, 8)) + [0] * 16).reshape(1, 32)
        x[0, 16:] = x[0, :16][::-1]
        b = quant.quantize(x, "q4_0")[0]
        lo, hi = list(range(16)), list(range(15, -1, -1))
        self.assertEqual(list(b[2:]), [l | h << 4 for l, h in zip(lo, hi)])

    def test_all_zero_block(self):
        # C starts from max = +0, so d = +0 / -8 = -0 (bits 0x8000), whatever
        # the zeros' signs; every q is trunc(8.5) = 8.
        for zeros in (np.zeros((1, 32), np.float32), -np.zeros((1, 32), np.float32)):
            b = quant.quantize(zeros, "q4_0")[0]
            self.assertEqual(list(b[:2]), [0x00, 0x80])
            self.assertEqual(list(b[2:]), [0x88] * 16)
            self.assertFalse(quant.dequantize(b[None], "q4_0", 32).any())

    def test_subnormal_scale(self):
        d = 2.0 ** -20  # f16 subnormal
        b = quant.quantize(block([-8 * d, 3 * d]), "q4_0")[0]
        self.assertEqual(list(b[:2]), [0x10, 0x00])
        np.testing.assert_array_equal(quant.dequantize(b[None], "q4_0", 32)[0, :2],
                                      np.float32([-8 * d, 3 * d]))


class Q4_1Test(unittest.TestCase):
    def test_rounding(self):
        # mn = -1, mx = 14 -> d = 1, id = 1: q = min(15, trunc(x + 1 + 0.5)).
        x = block([-1, 14, 0.5, -0.5, 1.49, 13.5], fill=2.0)
        b = quant.quantize(x, "q4_1")[0]
        self.assertEqual(b.shape, (20,))
        self.assertEqual(list(b[:2]), f16_bytes(1.0))
        self.assertEqual(list(b[2:4]), f16_bytes(-1.0))
        q = nibbles(b[4:])
        self.assertEqual(q[:6], [0, 15, 2, 1, 2, 15])
        self.assertEqual(q[6:], [3] * 26)
        np.testing.assert_array_equal(quant.dequantize(b[None], "q4_1", 32)[0, :6],
                                      np.float32([-1, 14, 1, 0, 1, 14]))

    def test_constant_block(self):
        # d = 0: every q is 0 and the value is m.
        b = quant.quantize(np.full((1, 32), 3.25, np.float32), "q4_1")[0]
        self.assertEqual(list(b[:4]), f16_bytes(0.0) + f16_bytes(3.25))
        self.assertEqual(list(b[4:]), [0] * 16)
        np.testing.assert_array_equal(quant.dequantize(b[None], "q4_1", 32), 3.25)

    def test_all_zero_block(self):
        b = quant.quantize(np.zeros((1, 32), np.float32), "q4_1")[0]
        self.assertFalse(b.any())
        # C's strict scans keep the first zero: its sign becomes m's.
        b = quant.quantize(np.float32([[-0.0, 0.0] * 16]), "q4_1")[0]
        self.assertEqual(list(b[:4]), [0, 0, 0x00, 0x80])

    def test_negative_range(self):
        x = block([-30, -0.0], fill=-15.0)
        b = quant.quantize(x, "q4_1")[0]
        self.assertEqual(list(b[:4]), f16_bytes(2.0) + f16_bytes(-30.0))
        q = nibbles(b[4:])
        # (x - mn) * id + 0.5 for -30, -0 and -15: 0.5, 15.5 and 8.0.
        self.assertEqual(q[:3], [0, 15, 8])

    def test_large_and_subnormal(self):
        # A span of 15 * 70000 overflows d to +inf; m = 65504 is the largest f16.
        b = quant.quantize(block([0, 15 * 70000.0]), "q4_1")[0]
        self.assertEqual(list(b[:4]), [0x00, 0x7C, 0x00, 0x00])
        d = 2.0 ** -20
        b = quant.quantize(block([0, 15 * d, 7 * d]), "q4_1")[0]
        self.assertEqual(list(b[:4]), [0x10, 0x00, 0x00, 0x00])
        np.testing.assert_array_equal(quant.dequantize(b[None], "q4_1", 32)[0, :3],
                                      np.float32([0, 15 * d, 7 * d]))


def random_weights(rng, rows, cols, scale):
    return (scale * rng.standard_normal((rows, cols))).astype(np.float32)


class RoundTripTest(unittest.TestCase):
    """|x - dequantize(quantize(x))| within half a step (a whole step where
    q4_0 clips), plus the f16 rounding of the stored scale (and offset)."""

    SCALES = (1.0, 1e-3, 1e-6, 300.0)

    def blocks(self, fmt):
        rng = np.random.default_rng(7)
        for scale in self.SCALES:
            x = random_weights(rng, 64, 256, scale)
            deq = quant.round_trip(x, fmt)
            self.assertEqual(deq.dtype, np.float32)
            self.assertEqual(deq.shape, x.shape)
            yield x.reshape(-1, 32).astype(np.float64), deq.reshape(-1, 32).astype(np.float64)

    def test_q8_0(self):
        for x, deq in self.blocks("q8_0"):
            d = (np.max(np.abs(x), axis=1, keepdims=True) / 127).astype(np.float32)
            dh = d.astype(np.float16).astype(np.float64)
            bound = 0.5 * d * (1 + 1e-6) + 127 * np.abs(d - dh)
            self.assertTrue(np.all(np.abs(x - deq) <= bound))

    def test_q4_0(self):
        for x, deq in self.blocks("q4_0"):
            first = np.argmax(np.abs(x), axis=1)[:, None]
            d = np.abs(np.take_along_axis(x, first, axis=1) / 8).astype(np.float32)
            dh = d.astype(np.float16).astype(np.float64)
            err = np.abs(x - deq) - 8 * np.abs(d - dh)
            clipped = np.abs(x) * np.sign(-np.take_along_axis(x, first, axis=1)) * np.sign(x) > 7.5 * d
            self.assertTrue(np.all(err[~clipped] <= 0.5 * d.repeat(32, 1)[~clipped] * (1 + 1e-6)))
            self.assertTrue(np.all(err <= d * (1 + 1e-6)))
            # The largest |x| itself is stored exactly up to the f16 scale.
            self.assertTrue(np.all(np.abs(np.take_along_axis(x - deq, first, axis=1))
                                   <= 8 * np.abs(d - dh) + 1e-12))

    def test_q4_1(self):
        for x, deq in self.blocks("q4_1"):
            mn, mx = x.min(axis=1, keepdims=True), x.max(axis=1, keepdims=True)
            d = ((mx - mn) / 15).astype(np.float32).astype(np.float64)
            dh = d.astype(np.float16).astype(np.float64)
            mh = mn.astype(np.float16).astype(np.float64)
            bound = 0.5 * d * (1 + 1e-6) + 15 * np.abs(d - dh) + np.abs(mn - mh) \
                + 1e-6 * np.abs(x).max(axis=1, keepdims=True)
            self.assertTrue(np.all(np.abs(x - deq) <= bound))

    def test_requantising_is_idempotent(self):
        # Dequantised values quantise back to the same blocks (q8_0 and q4_0
        # store exact multiples of a power-of-two-free d only approximately,
        # so use scales that f16 holds exactly).
        rng = np.random.default_rng(3)
        q = rng.integers(-127, 128, (8, 64)).astype(np.float32)
        q[:, ::32] = 127
        x = q * np.float32(2.0 ** -5)
        b = quant.quantize(x, "q8_0")
        np.testing.assert_array_equal(quant.dequantize(b, "q8_0", 64), x)


class Int8ActivationsTest(unittest.TestCase):
    def test_rounding(self):
        # amax 127 -> d = 1: halves go to even (the kernels' cvtps2dq), not away.
        x = block([127, 0.5, 1.5, 2.5, -2.5, 3.2]).astype(np.float64)
        np.testing.assert_array_equal(quant.int8_activations(x)[0, :6], [127, 0, 2, 2, -2, 3])
        self.assertFalse(quant.int8_activations(np.zeros((2, 64))).any())
        # Blocks are per row and per 32 columns.
        y = np.concatenate([block([254.0]), block([1.0, 0.3])], axis=1)
        got = quant.int8_activations(np.concatenate([y, 2 * y]))
        self.assertEqual(got.shape, (2, 64))
        np.testing.assert_allclose(got[0, [0, 32, 33]], [254, 1, np.float32(1 / 127) * 38],
                                   rtol=1e-6)


class ShapesAndNamesTest(unittest.TestCase):
    def test_shapes_and_errors(self):
        self.assertEqual(quant.quantized_shape((3, 64), "q8_0"), (3, 68))
        self.assertEqual(quant.quantized_shape((3, 64), "q4_0"), (3, 36))
        self.assertEqual(quant.quantized_shape((3, 64), "q4_1"), (3, 40))
        with self.assertRaisesRegex(ValueError, "layers.0.w: 48 columns"):
            quant.quantize(np.zeros((2, 48), np.float32), "q8_0", "layers.0.w")
        with self.assertRaisesRegex(ValueError, "unknown quantisation format 'q5_0'"):
            quant.quantize(np.zeros((2, 64), np.float32), "q5_0")
        with self.assertRaisesRegex(ValueError, "norm: only rank-2"):
            quant.quantize(np.zeros(64, np.float32), "q4_0", "norm")
        with self.assertRaisesRegex(ValueError, r"w: \[2, 35\] bytes are not \[2, 64\]"):
            quant.dequantize(np.zeros((2, 35), np.uint8), "q4_0", 64, "w")

    def test_selection(self):
        expert = "model.layers.3.block_sparse_moe.experts.7.w2.weight"
        gate = "model.layers.3.block_sparse_moe.gate.weight"
        for name, shape, want_all, want_experts in [
                (expert, (64, 128), True, True),
                (gate, (4, 64), False, False),
                ("model.layers.0.self_attn.q_proj.weight", (64, 64), True, False),
                ("model.embed_tokens.weight", (256, 64), True, False),
                ("lm_head.weight", (256, 64), True, False),
                ("model.layers.0.input_layernorm.weight", (64,), False, False),
                ("model.norm.weight", (64,), False, False)]:
            self.assertEqual(quant.is_quantized(name, shape, "all"), want_all, name)
            self.assertEqual(quant.is_quantized(name, shape, "experts"), want_experts, name)
        with self.assertRaisesRegex(ValueError, "unknown weight selection 'gates'"):
            quant.is_quantized(gate, (4, 64), "gates")


@unittest.skipIf(gguf is None, "PyPI's gguf package is not installed (optional)")
class GgufBitExactTest(unittest.TestCase):
    """Our bytes equal gguf.quants.quantize's (llama.cpp's Python twin of
    its C reference quantisers) on random data. All-zero blocks are left out:
    there gguf-py and C disagree on the sign of a zero scale (C's is tested
    above)."""

    def test_random(self):
        rng = np.random.default_rng(11)
        types = {"q8_0": gguf.GGMLQuantizationType.Q8_0,
                 "q4_0": gguf.GGMLQuantizationType.Q4_0,
                 "q4_1": gguf.GGMLQuantizationType.Q4_1}
        for fmt, qtype in types.items():
            for scale in (1.0, 0.02, 1e-5, 500.0):
                x = random_weights(rng, 96, 512, scale)
                # Exact halves: x * id lands on k + 0.5 for q8_0 (amax 127
                # -> id 1) and q4_1 (span 15 -> id 1).
                ties = rng.integers(-254, 255, (8, 512)).astype(np.float32) / 2
                ties[:, ::32], ties[:, 1::32] = 127, -8
                x = np.concatenate([x, ties * np.float32(scale)])
                ours = quant.quantize(x, fmt)
                theirs = gguf.quants.quantize(x, qtype)
                self.assertEqual(ours.shape, theirs.shape)
                diff = np.argwhere(ours != theirs)
                self.assertEqual(len(diff), 0, f"{fmt} scale {scale}: first differing byte "
                                 f"{diff[:1].tolist()}")
                np.testing.assert_array_equal(quant.dequantize(ours, fmt, 512),
                                              gguf.quants.dequantize(theirs, qtype))


def golden_kquant_input():
    """24 super-blocks, exact in float32: (i * 37 % 101 - 50) / 16 times a
    per-row scale, with an all-zero row, an all-negative, an all-positive,
    one half zero and one with a few larger values per sub-block."""
    i = np.arange(24 * 256).reshape(24, 256)
    v = ((i * 37 % 101) - 50).astype(np.float32) / np.float32(16)
    scales = np.array([1.0, 0.001953125, 64.0, 1.52587890625e-05], np.float32)
    v[5] = 0
    v[6] = -np.abs(v[6]) - 1
    v[7] = np.abs(v[7]) + 1
    v[8, :128] = 0
    v[9, 3::16] = -v[9, 3::16] * 4
    return v * scales[np.arange(24) % 4][:, None]


class KQuantTest(unittest.TestCase):
    """q4_K, q5_K and q6_K: quant.h's simple quantisers (not llama.cpp's search),
    pinned against the bytes runtime/include/moert/quant.h's quantizeBlock
    wrote for golden_kquant_input() (built with -ffp-contract=off,
    2026-12-02, q5_K's on its addition; a C++ change that moves them must
    change these too)."""

    GOLDEN = {"q4_K": "d323a1f1de68a6336014be6de044ff0dcf0d0b95ba578b781de8af3aa779d18e",
              "q5_K": "02ad51b3a4b639b6395cc65cbcad31afef1884d1ff6ab1ed1863458b848cc3af",
              "q6_K": "9acebab4213e227fea3d0a423970d37ecf614a76070fa6ce66a868e9363fce39"}

    def test_bit_exact_with_the_cpp_quantiser(self):
        x = golden_kquant_input()
        for fmt, digest in self.GOLDEN.items():
            q = quant.quantize(x, fmt)
            self.assertEqual(q.shape, (24, quant.BLOCK_BYTES[fmt]))
            self.assertEqual(hashlib.sha256(q.tobytes()).hexdigest(), digest, fmt)

    def test_layout_by_hand(self):
        # q4_K: sub-block j = 5 gets scale 63 (the largest), the others 0;
        # element 64 * 2 + 32 + 7 = 167 is sub-block 5's element 7, in the
        # high nibble of qs[2 * 32 + 7].
        x = np.zeros((1, 256), np.float32)
        x[0, 160:192] = np.arange(32, dtype=np.float32) % 16
        q = quant.quantize(x, "q4_K")[0]
        sc = q[4:16]
        self.assertEqual(sc[9] & 0xF, 63 & 0xF)            # low bits of sc_5
        self.assertEqual(sc[1] >> 6, 63 >> 4)              # high bits of sc_5
        self.assertEqual(q[16 + 64 + 7] >> 4, 7)
        # The codes are the values (d = f16(1 / 63) is not exact, so the
        # values come back within d's rounding).
        np.testing.assert_array_equal(q[16 + 64:16 + 96] >> 4, np.arange(32) % 16)
        np.testing.assert_array_equal(q[16 + 64:16 + 96] & 0xF, 0)
        np.testing.assert_allclose(quant.round_trip(x, "q4_K"), x, rtol=1e-3)
        # q5_K: the same sub-block 5 with codes 0..31; element 160 + l has
        # its low nibble in the high nibble of qs[64 + l] (qs at byte 48)
        # and its bit 4 in bit 5 of qh[l] (qh at byte 16).
        x = np.zeros((1, 256), np.float32)
        x[0, 160:192] = np.arange(32, dtype=np.float32)
        q = quant.quantize(x, "q5_K")[0]
        self.assertEqual(q[4 + 9] & 0xF, 63 & 0xF)
        self.assertEqual(q[4 + 1] >> 6, 63 >> 4)
        np.testing.assert_array_equal(q[48 + 64:48 + 96] >> 4, np.arange(32) % 16)
        np.testing.assert_array_equal(q[48 + 64:48 + 96] & 0xF, 0)
        np.testing.assert_array_equal(q[16:48], (np.arange(32) >= 16) << 5)
        np.testing.assert_allclose(quant.round_trip(x, "q5_K"), x, rtol=1e-3)
        # q6_K: element 200 (half 1, k = 2, l = 8) is ql[64 + 8]'s high
        # nibble and bits 4, 5 of qh[32 + 8]; scale index 200 / 16 = 12.
        x = np.zeros((1, 256), np.float32)
        x[0, 200] = -32
        x[0, 201] = 31
        q = quant.quantize(x, "q6_K")[0]
        self.assertEqual(q[192 + 12], 128)                 # int8 -128
        self.assertEqual(q[64 + 8] >> 4, 0)                # -32 + 32 = 0
        self.assertEqual(q[64 + 9] >> 4, 63 & 0xF)
        self.assertEqual((q[128 + 32 + 9] >> 4) & 3, 63 >> 4)
        np.testing.assert_array_equal(quant.round_trip(x, "q6_K"), x)

    def test_round_trip_error(self):
        rng = np.random.default_rng(4)
        for scale in (1.0, 0.02, 300.0):
            w = random_weights(rng, 32, 1024, scale)
            xs = w.reshape(-1, 8, 32)
            err = np.abs(quant.round_trip(w, "q4_K") - w).reshape(-1, 256)
            # One step of the largest sub-block scale (the 6-bit scales and
            # mins round it) per super-block.
            step = np.max((xs.max(2) - np.minimum(xs.min(2), 0)) / 15, axis=1)
            self.assertTrue(np.all(err.max(1) <= step * 1.0 + 1e-30), scale)
            err5 = np.abs(quant.round_trip(w, "q5_K") - w).reshape(-1, 256)
            step = np.max((xs.max(2) - np.minimum(xs.min(2), 0)) / 31, axis=1)
            self.assertTrue(np.all(err5.max(1) <= step * 1.0 + 1e-30), scale)
            self.assertLess(np.median(err5), np.median(err))
            err = np.abs(quant.round_trip(w, "q6_K") - w).reshape(-1, 256)
            amax = np.abs(w).reshape(-1, 256).max(1)
            self.assertTrue(np.all(err.max(1) <= amax / 32 + 1e-30), scale)
            self.assertLess(np.median(err), np.median(np.abs(w)) / 20)

    def test_zero_and_shapes(self):
        for fmt in ("q4_K", "q5_K", "q6_K"):
            z = np.zeros((2, 512), np.float32)
            np.testing.assert_array_equal(quant.round_trip(z, fmt), z)
            self.assertEqual(quant.quantized_shape((3, 512), fmt),
                             (3, 2 * quant.BLOCK_BYTES[fmt]))
            with self.assertRaisesRegex(ValueError, "not a multiple of the 256-element"):
                quant.quantize(np.zeros((2, 96), np.float32), fmt)

    @unittest.skipIf(gguf is None, "PyPI's gguf package is not installed (optional)")
    def test_dequantize_matches_gguf(self):
        """Our dequantisers equal gguf.quants.dequantize bit for bit, on our
        blocks and on random bytes (any scales and codes, finite f16 d)."""
        rng = np.random.default_rng(12)
        types = {"q4_K": gguf.GGMLQuantizationType.Q4_K,
                 "q5_K": gguf.GGMLQuantizationType.Q5_K,
                 "q6_K": gguf.GGMLQuantizationType.Q6_K}
        for fmt, qtype in types.items():
            blocks = [quant.quantize(random_weights(rng, 16, 1024, 1.0), fmt),
                      quant.quantize(golden_kquant_input(), fmt)]
            raw = rng.integers(0, 256, (64, quant.BLOCK_BYTES[fmt]), dtype=np.uint8)
            d = rng.standard_normal((64, 2)).astype(np.float16).view(np.uint8).reshape(64, 4)
            if fmt in ("q4_K", "q5_K"):
                raw[:, 0:4] = d
            else:
                raw[:, 208:210] = d[:, 0:2]
            blocks.append(raw)
            for b in blocks:
                cols = b.shape[1] // quant.BLOCK_BYTES[fmt] * 256
                ours = quant.dequantize(b, fmt, cols)
                theirs = gguf.quants.dequantize(b.reshape(-1), qtype).reshape(ours.shape)
                np.testing.assert_array_equal(ours.view(np.uint32), theirs.view(np.uint32))


class ReferenceQuantizedTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.model = os.path.join(cls.tmp.name, "tiny")
        generate.generate(cls.model, "tiny", seed=5)
        cls.tied = os.path.join(cls.tmp.name, "tied")
        generate.generate(cls.tied, "tiny", seed=5, overrides={"tie_word_embeddings": True})
        cls.source = safetensors.load_model_dir(cls.model)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_which_weights(self):
        for which in quant.SELECTIONS:
            ref = Reference(self.model, np.float32, quantize="q4_0", quantize_only=which)
            for name, w in self.source.items():
                if quant.is_quantized(name, w.shape, which):
                    np.testing.assert_array_equal(ref.w[name], quant.round_trip(w, "q4_0"), name)
                    self.assertFalse(np.array_equal(ref.w[name], w), name)
                else:
                    np.testing.assert_array_equal(ref.w[name], w, name)
        self.assertEqual(sum(quant.is_quantized(n, w.shape, "experts")
                             for n, w in self.source.items()), 2 * 4 * 3)
        self.assertEqual(sum(quant.is_quantized(n, w.shape, "all")
                             for n, w in self.source.items()), 2 + 2 * (4 + 4 * 3))

    def test_tied_head_follows_the_embedding(self):
        ref = Reference(self.tied, np.float64, quantize="q8_0")
        self.assertIs(ref.w["lm_head.weight"], ref.w["model.embed_tokens.weight"])
        emb = safetensors.load_model_dir(self.tied)["model.embed_tokens.weight"]
        np.testing.assert_array_equal(ref.w["lm_head.weight"], quant.round_trip(emb, "q8_0"))

    def test_logits_stay_close(self):
        prompt = [1, 17, 42, 7]
        exact = Reference(self.model, np.float64).prefill(prompt)[0]
        # tiny (hidden 64) is harsh on 4 bits: measured worst rows 0.023
        # (q8_0), 0.29 (q4_0) and 0.40 (q4_1) with every weight quantised.
        errors = {}
        for fmt, tol in (("q8_0", 0.05), ("q4_1", 0.6), ("q4_0", 0.6)):
            got = Reference(self.model, np.float64, quantize=fmt).prefill(prompt)[0]
            errors[fmt] = np.max(np.abs(got - exact)) / np.max(np.abs(exact))
            self.assertLess(errors[fmt], tol, fmt)
            self.assertGreater(errors[fmt], 0, fmt)
        self.assertLess(errors["q8_0"], min(errors["q4_0"], errors["q4_1"]))

    def test_int8_activations_touch_only_quantised_linears(self):
        prompt = [1, 17, 42]
        for which in quant.SELECTIONS:
            plain = Reference(self.model, np.float64, quantize="q8_0", quantize_only=which)
            acts = Reference(self.model, np.float64, quantize="q8_0", quantize_only=which,
                             int8_activations=True)
            x = np.random.default_rng(1).standard_normal((3, 64))
            gate = "model.layers.0.block_sparse_moe.gate.weight"
            np.testing.assert_array_equal(acts.linear(x, gate), plain.linear(x, gate))
            w1 = "model.layers.0.block_sparse_moe.experts.0.w1.weight"
            self.assertFalse(np.array_equal(acts.linear(x, w1), plain.linear(x, w1)))
            rel = (np.max(np.abs(acts.prefill(prompt)[0] - plain.prefill(prompt)[0]))
                   / np.max(np.abs(plain.prefill(prompt)[0])))
            self.assertLess(rel, 0.05, which)
        # Without quantised weights the flag changes nothing.
        self.assertFalse(Reference(self.model, int8_activations=True).int8_activations)

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "unknown quantisation format"):
            Reference(self.model, quantize="q3")
        with self.assertRaisesRegex(ValueError, "unknown weight selection"):
            Reference(self.model, quantize="q8_0", quantize_only="attention")


if __name__ == "__main__":
    unittest.main()
