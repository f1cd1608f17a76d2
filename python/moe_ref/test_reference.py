"""Property tests of the generator and the reference forward pass.

    python3 -m unittest moe_ref.test_reference   (from python/)
"""

import json
import os
import tempfile
import unittest

import numpy as np

from . import configs, generate, safetensors
import math

from .reference import Reference, inv_freq, rope, rope_parameters, softmax


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


class RopeScalingTest(unittest.TestCase):
    """inv_freq of each RoPE type against values worked out by hand from
    transformers' definitions (modeling_rope_utils.py)."""

    D, THETA = 16, 10000.0

    def default(self):
        return self.THETA ** (-np.arange(0, self.D // 2, dtype=np.float64) * 2.0 / self.D)

    def params(self, **kw):
        return {"rope_theta": self.THETA, **kw}

    def test_default_is_theta_power(self):
        freq, att = inv_freq(self.D, self.params(rope_type="default"), 512)
        np.testing.assert_array_equal(freq, self.default())
        self.assertEqual(freq[0], 1.0)
        self.assertAlmostEqual(freq[1], 10000 ** -0.125, places=15)
        self.assertEqual(att, 1.0)

    def test_linear_divides_by_factor(self):
        freq, att = inv_freq(self.D, self.params(rope_type="linear", factor=4.0), 512)
        np.testing.assert_allclose(freq, self.default() / 4.0, rtol=1e-15)
        self.assertEqual(att, 1.0)

    def test_dynamic_is_default_up_to_max_positions(self):
        p = self.params(rope_type="dynamic", factor=2.0)
        for seq_len in (1, 100, 512):
            np.testing.assert_array_equal(inv_freq(self.D, p, 512, seq_len)[0], self.default())

    def test_dynamic_grows_the_base_beyond(self):
        # base' = theta * (f s / m - (f - 1))^(D / (D - 2)): pair 0 keeps 1,
        # the last pair (exponent (D - 2) / D) divides by f s / m - f + 1.
        freq, att = inv_freq(self.D, self.params(rope_type="dynamic", factor=2.0), 512, 1024)
        self.assertEqual(freq[0], 1.0)
        self.assertAlmostEqual(freq[-1] / self.default()[-1], 1 / (2 * 1024 / 512 - 1), places=12)
        self.assertEqual(att, 1.0)

    def test_llama3_piecewise(self):
        # wavelength 2 pi theta^(2i / D): 6.28, 19.87, 62.83, 198.7, ...
        # original 64, low 1, high 4: below 16 keep, above 64 / factor,
        # between blend by (64 / wavelength - 1) / 3.
        p = self.params(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                        high_freq_factor=4.0, original_max_position_embeddings=64)
        freq, att = inv_freq(self.D, p, 512)
        base = self.default()
        self.assertEqual(freq[0], base[0])
        for i in (1, 2):
            s = (64 / (2 * math.pi / base[i]) - 1) / 3
            self.assertTrue(0 < s < 1)
            self.assertAlmostEqual(freq[i], (1 - s) * base[i] / 8 + s * base[i], places=15)
        np.testing.assert_allclose(freq[3:], base[3:] / 8, rtol=1e-15)
        self.assertEqual(att, 1.0)

    def test_llama3_continuous_at_the_boundaries(self):
        # low_freq_factor putting pair 1's wavelength exactly on
        # original / low_freq_factor: the blend gives exactly / factor there;
        # high_freq_factor on it: exactly the unscaled frequency.
        base = self.default()
        wl1 = 2 * math.pi / base[1]
        lo = self.params(rope_type="llama3", factor=8.0, low_freq_factor=64 / wl1,
                         high_freq_factor=64 / wl1 + 2, original_max_position_embeddings=64)
        self.assertAlmostEqual(inv_freq(self.D, lo, 512)[0][1], base[1] / 8, places=15)
        hi = self.params(rope_type="llama3", factor=8.0, low_freq_factor=64 / wl1 - 2,
                         high_freq_factor=64 / wl1, original_max_position_embeddings=64)
        self.assertAlmostEqual(inv_freq(self.D, hi, 512)[0][1], base[1], places=15)

    def test_yarn_ramp_and_attention(self):
        # find_correction_dim(beta) = D ln(4096 / (2 pi beta)) / (2 ln theta):
        # beta_fast 32 -> 2.618 (floor 2), beta_slow 1 -> 5.628 (ceil 6); the
        # ramp (i - 2) / 4 goes from keeping the frequency to / factor.
        p = self.params(rope_type="yarn", factor=4.0, original_max_position_embeddings=4096)
        freq, att = inv_freq(self.D, p, 16384)
        base = self.default()
        for i in range(8):
            ramp = min(max((i - 2) / 4, 0), 1)
            self.assertAlmostEqual(freq[i], base[i] / 4 * ramp + base[i] * (1 - ramp), places=15)
        self.assertAlmostEqual(att, 0.1 * math.log(4.0) + 1, places=15)

    def test_yarn_untruncated_range_and_mscale(self):
        d = lambda beta: 16 * math.log(4096 / (2 * math.pi * beta)) / (2 * math.log(1e4))
        p = self.params(rope_type="yarn", factor=4.0, original_max_position_embeddings=4096,
                        truncate=False, mscale=1.0, mscale_all_dim=0.5)
        freq, att = inv_freq(self.D, p, 16384)
        low, high = d(32), d(1)
        self.assertAlmostEqual(low, 2.6180602, places=6)
        ramp = (3 - low) / (high - low)
        base = self.default()
        self.assertAlmostEqual(freq[3], base[3] / 4 * ramp + base[3] * (1 - ramp), places=15)
        m = lambda k: 0.1 * k * math.log(4.0) + 1
        self.assertAlmostEqual(att, m(1.0) / m(0.5), places=15)
        # mscale alone is ignored; attention_factor wins over both.
        only = dict(p, mscale_all_dim=None)
        self.assertAlmostEqual(inv_freq(self.D, only, 1)[1], m(1.0), places=15)
        self.assertEqual(inv_freq(self.D, dict(p, attention_factor=0.5), 1)[1], 0.5)

    def test_attention_factor_scales_cos_and_sin(self):
        x = np.random.default_rng(3).standard_normal((2, 1, self.D))
        p = self.params(rope_type="yarn", factor=4.0, original_max_position_embeddings=4096,
                        attention_factor=2.0)
        q = self.params(rope_type="yarn", factor=4.0, original_max_position_embeddings=4096,
                        attention_factor=1.0)
        np.testing.assert_allclose(rope(x, [0, 5], self.THETA, p, 512),
                                   2 * rope(x, [0, 5], self.THETA, q, 512), rtol=1e-14)

    def test_standardisation(self):
        v4 = configs.make_config("tiny", rope_scaling={"type": "linear", "factor": 2.0})
        v5 = configs.make_config("tiny", rope_form="v5",
                                 rope_scaling={"rope_type": "linear", "factor": 2.0})
        self.assertNotIn("rope_theta", v5)
        for c in (v4, v5):
            self.assertEqual(rope_parameters(c), {"rope_type": "linear", "factor": 2.0,
                                                  "rope_theta": 10000.0})
        # The dict's rope_theta wins over the top-level one.
        both = dict(v5, rope_theta=5.0)
        self.assertEqual(rope_parameters(both)["rope_theta"], 10000.0)
        # yarn's original_max_position_embeddings: top level, dict, max.
        y = configs.make_config("tiny", rope_scaling={"rope_type": "yarn", "factor": 2.0})
        self.assertEqual(rope_parameters(y)["original_max_position_embeddings"], 512)
        y["rope_scaling"]["original_max_position_embeddings"] = 64
        self.assertEqual(rope_parameters(y)["original_max_position_embeddings"], 64)
        y["original_max_position_embeddings"] = 32
        self.assertEqual(rope_parameters(y)["original_max_position_embeddings"], 32)
        with self.assertRaises(ValueError):
            rope_parameters(configs.make_config("tiny", rope_scaling={"rope_type": "longrope"}))


class RopeScalingModelTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def logits(self, name, tokens, **kw):
        return Reference(make_model(self.tmp.name, name, seed=0, **kw)).prefill(tokens)[0]

    def test_scaling_changes_the_logits(self):
        tokens = list(range(1, 24))
        short = {"max_position_embeddings": 8}
        base = self.logits("base", tokens, overrides=short)
        for kind, extra in [("linear", {}), ("dynamic", {}),
                            ("yarn", {"original_max_position_embeddings": 8}),
                            ("llama3", {"low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                        "original_max_position_embeddings": 8})]:
            scaled = self.logits(kind, tokens, overrides=short,
                                 rope_scaling={"rope_type": kind, "factor": 4.0, **extra})
            diff = np.max(np.abs(scaled - base)) / np.max(np.abs(base))
            self.assertGreater(diff, 1e-2, kind)

    def test_v5_config_gives_the_v4_logits(self):
        tokens = [3, 1, 4, 1, 5, 9, 2, 6]
        scaling = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4}
        a = self.logits("v4", tokens, rope_scaling=scaling)
        b = self.logits("v5", tokens, rope_form="v5", rope_scaling=scaling)
        np.testing.assert_array_equal(a, b)

    def test_dynamic_depends_on_the_call(self):
        # Beyond max_position_embeddings a dynamic call's length sets its
        # frequencies: chunks see other bases than one call.
        ref = Reference(make_model(self.tmp.name, "dyn", seed=0,
                                   overrides={"max_position_embeddings": 8},
                                   rope_scaling={"rope_type": "dynamic", "factor": 2.0}))
        tokens = list(range(1, 21))
        one, _ = ref.prefill(tokens)
        chunked, _ = ref.prefill(tokens, 6)
        # The first chunk (positions 0-5, within 8) is the default RoPE's
        # call; the one call of 20 rotates every position with the grown base.
        np.testing.assert_array_equal(chunked[:6], ref.prefill(tokens[:6])[0])
        for rows in (slice(0, 6), slice(12, 20)):
            self.assertGreater(np.max(np.abs(chunked[rows] - one[rows])), 1e-3)

    def test_mixtral_renormalises_whatever_norm_topk_prob(self):
        ref = Reference(make_model(self.tmp.name, "nonorm", seed=0,
                                   overrides={"norm_topk_prob": False}))
        weights, _ = ref.route(0, np.random.default_rng(4).standard_normal((5, ref.H)))
        np.testing.assert_allclose(np.sum(weights, axis=-1), 1.0, rtol=1e-12)


if __name__ == "__main__":
    unittest.main()
