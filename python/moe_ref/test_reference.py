"""Property tests of the generator and the reference forward pass.

    python3 -m unittest moe_ref.test_reference   (from python/)
"""

import json
import os
import tempfile
import unittest

import numpy as np

from . import configs, generate, safetensors
from .reference import Reference, rope, softmax


def read_json(path):
    with open(path) as f:
        return json.load(f)


def make_model(tmp, name, **kw):
    path = os.path.join(tmp, name)
    generate.generate(path, **kw)
    return path


class GeneratorTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_deterministic(self):
        a = make_model(self.tmp.name, "a", seed=3)
        b = make_model(self.tmp.name, "b", seed=3)
        c = make_model(self.tmp.name, "c", seed=4)
        def read(p):
            with open(os.path.join(p, "model.safetensors"), "rb") as f:
                return f.read()
        self.assertEqual(read(a), read(b))
        self.assertNotEqual(read(a), read(c))

    def test_names_and_shapes_are_mixtrals(self):
        path = make_model(self.tmp.name, "shapes", overrides={"head_dim": 8})
        header, _ = safetensors.read_header(os.path.join(path, "model.safetensors"))
        c = read_json(os.path.join(path, "config.json"))
        self.assertEqual(c["architectures"], ["MixtralForCausalLM"])
        self.assertEqual(c["model_type"], "mixtral")
        # 1 embed + per layer (4 attn + gate + 3 E experts + 2 norms) + norm + head
        E, L = c["num_local_experts"], c["num_hidden_layers"]
        self.assertEqual(len(header), 1 + L * (7 + 3 * E) + 2)
        self.assertEqual(header["model.layers.1.self_attn.q_proj.weight"]["shape"], [4 * 8, 64])
        self.assertEqual(header["model.layers.1.self_attn.k_proj.weight"]["shape"], [2 * 8, 64])
        self.assertEqual(header["model.layers.0.self_attn.o_proj.weight"]["shape"], [64, 32])
        self.assertEqual(header["model.layers.0.block_sparse_moe.experts.3.w2.weight"]["shape"], [64, 128])
        self.assertEqual(header["lm_head.weight"]["shape"], [256, 64])

    def test_shards_hold_the_same_tensors(self):
        one = make_model(self.tmp.name, "one", seed=1)
        three = make_model(self.tmp.name, "three", seed=1, shards=3)
        index = read_json(os.path.join(three, "model.safetensors.index.json"))
        self.assertEqual(len(set(index["weight_map"].values())), 3)
        a, b = safetensors.load_model_dir(one), safetensors.load_model_dir(three)
        self.assertEqual(sorted(a), sorted(b))
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])
        total = sum(t.nbytes for t in a.values())
        self.assertEqual(index["metadata"]["total_size"], total)

    def test_dtypes_round(self):
        f32 = safetensors.load_model_dir(make_model(self.tmp.name, "f32", seed=2))
        for dtype, tol in (("f16", 2 ** -10), ("bf16", 2 ** -7)):
            other = safetensors.load_model_dir(make_model(self.tmp.name, dtype, seed=2, dtype=dtype))
            for name in f32:
                np.testing.assert_allclose(other[name], f32[name], rtol=tol, atol=1e-6, err_msg=name)

    def test_bf16_rounds_to_nearest_even(self):
        x = np.array([1.0, 1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, -2.5], np.float32)
        y = safetensors.from_bf16(safetensors.to_bf16(x))
        np.testing.assert_array_equal(y, [1.0, 1.0, 1.0 + 2 ** -6, -2.5])

    def test_sparse_has_headers_only(self):
        path = make_model(self.tmp.name, "sparse", preset="mini", dtype="bf16", shards=2, sparse=True)
        index = read_json(os.path.join(path, "model.safetensors.index.json"))
        size = sum(os.path.getsize(os.path.join(path, f)) for f in set(index["weight_map"].values()))
        self.assertGreater(size, index["metadata"]["total_size"])
        used = sum(os.stat(os.path.join(path, f)).st_blocks * 512
                   for f in set(index["weight_map"].values()))
        self.assertLess(used, 1 << 20)


class ReferenceTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.default = Reference(make_model(cls.tmp.name, "default", seed=0))

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_decode_after_prefill_equals_longer_prefill(self):
        ref = self.default
        tokens = [5, 200, 17, 42, 99, 3, 250, 7]
        full, _ = ref.prefill(tokens)
        logits, cache = ref.prefill(tokens[:3])
        rows = [logits]
        for t in tokens[3:]:
            rows.append(ref.decode(t, cache)[None, :])
        np.testing.assert_allclose(np.concatenate(rows), full, rtol=0, atol=1e-10)

    def test_chunked_prefill_equals_single_pass(self):
        ref = self.default
        tokens = list(range(10, 30))
        full, _ = ref.prefill(tokens)
        cache = ref.new_cache()
        chunks = [ref.forward(tokens[i:i + 6], cache) for i in range(0, 20, 6)]
        np.testing.assert_allclose(np.concatenate(chunks), full, rtol=0, atol=1e-10)

    def test_window_at_least_sequence_equals_full_attention(self):
        full = self.default
        wide = Reference(make_model(self.tmp.name, "w16", seed=0, overrides={"sliding_window": 16}))
        narrow = Reference(make_model(self.tmp.name, "w4", seed=0, overrides={"sliding_window": 4}))
        tokens = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]
        a, _ = full.prefill(tokens)
        np.testing.assert_array_equal(wide.prefill(tokens)[0], a)
        b, _ = narrow.prefill(tokens)
        # Within the window nothing changes; beyond it the logits differ.
        np.testing.assert_array_equal(b[:4], a[:4])
        self.assertGreater(np.max(np.abs(b[4:] - a[4:])), 1e-3)

    def test_window_masks_exactly_the_old_keys(self):
        # With W = 1 each token sees only itself, so a token's logits do not
        # depend on what came before it.
        ref = Reference(make_model(self.tmp.name, "w1", seed=0, overrides={"sliding_window": 1}))
        a, _ = ref.prefill([9, 8, 7, 42])
        b, _ = ref.prefill([1, 2, 3, 42])
        np.testing.assert_allclose(a[3], b[3], rtol=0, atol=1e-12)

    def test_top_k_equal_e_is_a_dense_softmax_mixture(self):
        ref = Reference(make_model(self.tmp.name, "dense", seed=0,
                                   overrides={"num_experts_per_tok": 4}))
        b = np.random.default_rng(0).standard_normal((5, ref.H))
        gate = ref.w["model.layers.1.block_sparse_moe.gate.weight"]
        probs = softmax(b @ gate.T)
        dense = sum(probs[:, e:e + 1] * ref.expert(1, e, b) for e in range(ref.E))
        np.testing.assert_allclose(ref.moe_block(1, b), dense, rtol=1e-12, atol=1e-12)

    def test_router_picks_largest_and_renormalises(self):
        ref = self.default
        b = np.random.default_rng(1).standard_normal((7, ref.H))
        weights, indices = ref.route(0, b)
        logits = b @ ref.w["model.layers.0.block_sparse_moe.gate.weight"].T
        for t in range(7):
            best = sorted(range(ref.E), key=lambda e: -logits[t, e])[:ref.k]
            self.assertEqual(list(indices[t]), best)
            # Mistral's formulation: softmax over the top-k logits.
            np.testing.assert_allclose(weights[t], softmax(logits[t, best]), rtol=1e-12)

    def test_rope_depends_on_relative_position(self):
        rng = np.random.default_rng(2)
        q, k = rng.standard_normal((1, 1, 16)), rng.standard_normal((1, 1, 16))
        dot = lambda pq, pk: float(np.sum(rope(q, [pq], 1e4) * rope(k, [pk], 1e4)))
        self.assertAlmostEqual(dot(3, 1), dot(10, 8), places=10)
        self.assertNotAlmostEqual(dot(3, 1), dot(3, 2), places=3)

    def test_head_dim_not_hidden_over_heads(self):
        ref = Reference(make_model(self.tmp.name, "hd8", seed=0, overrides={"head_dim": 8}))
        self.assertEqual(ref.d, 8)
        logits, cache = ref.prefill([1, 2, 3])
        self.assertEqual(cache.k[0].shape, (3, 2, 8))
        self.assertTrue(np.all(np.isfinite(logits)))

    def test_f32_close_to_f64(self):
        path = make_model(self.tmp.name, "f32cmp", seed=0)
        a, _ = Reference(path, np.float64).prefill([4, 5, 6, 7])
        b, _ = Reference(path, np.float32).prefill([4, 5, 6, 7])
        self.assertLess(np.max(np.abs(a - b)), 1e-4 * np.max(np.abs(a)))

    def test_generate_rows(self):
        out, logits = self.default.generate([1, 17, 42], 5)
        self.assertEqual(len(out), 5)
        self.assertEqual(logits.shape, (8, 256))
        self.assertEqual([int(np.argmax(r)) for r in logits[2:7]], out)

    def test_rejects_bad_token(self):
        with self.assertRaises(ValueError):
            self.default.prefill([256])


if __name__ == "__main__":
    unittest.main()
