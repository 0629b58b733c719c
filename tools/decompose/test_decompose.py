"""specwatch-decompose end to end on tiny cases (a few seconds): the simulator in-process against the batch SVD,
.npy files of every supported dtype and shape written here, the model and denoised outputs, and bad input."""

import json
import os
import subprocess
import tempfile
import unittest

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("SPECWATCH_BIN", os.path.join(ROOT, "build", "bin"))
EXE = os.path.join(BIN, "specwatch-decompose")
TINY_SIM = ["--sim", "--modality", "eds", "--channels", "256", "--phases", "3", "--counts", "2000",
            "--scan", "32x32", "--seed", "7", "--warmup-spectra", "0"]


def run(*args):
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=60)


def report(*args):
    r = run(*args)
    if r.returncode != 0:
        raise AssertionError("exit %d: %s" % (r.returncode, r.stderr))
    return json.loads(r.stdout)


def low_rank_counts(shape, seed=3):
    """Poisson counts of two endmembers mixed with varying abundance: one centred component."""
    rng = np.random.default_rng(seed)
    d = shape[-1]
    channels = np.arange(d)
    a = 40.0 * np.exp(-0.5 * ((channels - d * 0.3) / 3.0) ** 2) + 2.0
    b = 40.0 * np.exp(-0.5 * ((channels - d * 0.7) / 3.0) ** 2) + 2.0
    w = rng.uniform(0.0, 1.0, size=shape[:-1] + (1,))
    return rng.poisson(w * a + (1.0 - w) * b)


class DecomposeTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.tmp.cleanup()

    def path(self, name):
        return os.path.join(self.tmp.name, name)

    def test_sim_streaming_subspace_matches_batch(self):
        r = report(*TINY_SIM, "--rank", "2", "--check-batch", "--threads", "2")
        for key in ("spectra", "channels", "update_spectra_per_s", "denoise_spectra_per_s",
                    "denoise_spectra_per_s_threads", "combined_spectra_per_s", "combined_spectra_per_s_threads",
                    "pipelined_spectra_per_s", "rank", "singular_values", "noise_sigma", "rank_threshold",
                    "batch_check"):
            self.assertIn(key, r)
        self.assertEqual((r["spectra"], r["channels"], r["threads"]), (1024, 256, 2))
        # Update and denoise at once on 2 threads: one timed run per repeat, and its rate is the one reported.
        self.assertEqual(len(r["seconds"]["pipelined"]), 1)
        self.assertAlmostEqual(r["pipelined_spectra_per_s"], 1024 / r["seconds"]["pipelined"][0], places=6)
        self.assertEqual(r["rank"], 2)
        self.assertTrue(r["weighted"])
        b = r["batch_check"]
        self.assertEqual(len(b["max_angle_deg_by_rank"]), 2)
        # 3 phases span 2 centred components, far above the noise: the streaming and batch subspaces agree.
        self.assertLess(b["max_principal_angle_deg"], 2.0, b)
        s = np.array(r["singular_values"][:2])
        np.testing.assert_allclose(s, b["singular_values"][:2], rtol=0.01)

    def test_sim_data_written_and_read_back_give_the_same_model(self):
        data = self.path("sim.npy")
        a = report(*TINY_SIM, "--rank", "3", "--write-data", data)
        counts = np.load(data)
        self.assertEqual((counts.dtype, counts.shape), (np.dtype("<u2"), (1024, 256)))
        self.assertAlmostEqual(a["mean_counts_per_spectrum"], counts.sum(axis=1).mean(), places=3)
        b = report("--input", data, "--rank", "3", "--warmup-spectra", "0")
        self.assertNotIn("pipelined_spectra_per_s", b)  # one thread: nothing runs at once
        self.assertEqual(a["singular_values"], b["singular_values"])

    def test_npy_image_outputs(self):
        counts = low_rank_counts((16, 16, 64)).astype(np.uint32)
        np.save(self.path("image.npy"), counts)
        r = report("--input", self.path("image.npy"), "--rank", "1", "--oversample", "4", "--check-batch",
                   "--calibration-spectra", "64", "--write-model", self.path("model.npz"),
                   "--write-denoised", self.path("denoised.npy"))
        self.assertEqual(r["input"]["shape"], [16, 16, 64])
        self.assertEqual((r["spectra"], r["channels"], r["rank"]), (256, 64, 1))
        self.assertLess(r["batch_check"]["max_principal_angle_deg"], 5.0, r["batch_check"])
        m = np.load(self.path("model.npz"))
        k = m["singular_values"].size
        self.assertEqual(m["eigenspectra_counts"].shape, (k, 64))
        self.assertEqual(int(m["rank"]), 1)
        self.assertTrue(bool(m["weighted"]))
        np.testing.assert_allclose(m["eigenspectra_counts"], m["basis"] * m["channel_scale"], rtol=1e-6)
        np.testing.assert_allclose(m["basis"] @ m["basis"].T, np.eye(k), atol=1e-4)
        denoised = np.load(self.path("denoised.npy"))
        self.assertEqual((denoised.dtype, denoised.shape), (np.dtype("<f4"), (256, 64)))
        x = counts.reshape(256, 64).astype(np.float64)
        # Denoised spectra keep the counts' scale and are closer to each other's truth than the raw counts:
        # here only check they are in counts (totals preserved within a few percent on average).
        self.assertLess(abs(denoised.sum() / x.sum() - 1.0), 0.05)

    def test_every_dtype_gives_the_same_result(self):
        counts = low_rank_counts((128, 32))
        results = []
        for dtype in ("<u2", "<u4", "<i4", "<i8", "<f4", "<f8"):
            np.save(self.path("x.npy"), counts.astype(dtype))
            r = report("--input", self.path("x.npy"), "--rank", "2", "--calibration-spectra", "32")
            self.assertEqual(r["input"]["dtype"], np.dtype(dtype).name)
            results.append(r["singular_values"])
        for s in results[1:]:
            self.assertEqual(s, results[0])

    def test_bad_npy_files_exit_1_with_a_clear_message(self):
        good = low_rank_counts((8, 16)).astype("<u2")
        cases = {
            "magic": (b"not a numpy file at all", "bad magic"),
            "fortran": (np.asfortranarray(good), "Fortran"),
            "dtype": (good.astype(np.int8), "not supported"),
            "bigendian": (good.astype(">u2"), "big-endian"),
            "axes": (good.ravel(), "axes"),
            "nan": (np.where(np.arange(good.size).reshape(good.shape) == 5, np.nan, good.astype("<f4")),
                    "non-finite value at spectrum 0, channel 5"),
            "empty": (np.zeros((0, 16), "<u2"), "empty"),
        }
        for name, (content, message) in cases.items():
            with self.subTest(name):
                path = self.path(name + ".npy")
                if isinstance(content, bytes):
                    with open(path, "wb") as f:
                        f.write(content)
                else:
                    np.save(path, content)
                r = run("--input", path)
                self.assertEqual(r.returncode, 1, r.stderr)
                self.assertIn(message, r.stderr)
        np.save(self.path("cut.npy"), good)
        with open(self.path("cut.npy"), "r+b") as f:
            f.truncate(os.path.getsize(self.path("cut.npy")) - 2)
        r = run("--input", self.path("cut.npy"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("truncated", r.stderr)

    def test_bad_arguments_exit_2(self):
        np.save(self.path("x.npy"), low_rank_counts((8, 16)).astype("<u2"))
        x = self.path("x.npy")
        cases = [
            ((), "exactly one of"),
            (("--sim", "--input", x), "exactly one of"),
            (("--input", x, "--rank", "0"), "--rank"),
            (("--input", x, "--weighting", "sqrt"), "--weighting"),
            (("--input", x, "--bogus"), "unknown option"),
            (("--input", x, "--write-data", self.path("d.npy")), "--write-data"),
            (("--input", x, "--channels", "64"), "need --sim"),
            (("--input", x, "--rank", "12"), "channels"),
            (("--input", x, "--threads"), "missing value"),
        ]
        for args, message in cases:
            with self.subTest(args=args):
                r = run(*args)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn(message, r.stderr)
        h = run("--help")
        self.assertEqual(h.returncode, 0)
        self.assertIn("--check-batch", h.stdout)


if __name__ == "__main__":
    unittest.main()
