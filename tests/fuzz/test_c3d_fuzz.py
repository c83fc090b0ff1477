"""Mutated C3D files through libs.emg.read_c3d: only typed EmgError subclasses may escape, never
another exception, and every input is handled within a time bound (no hang).

Inputs: a synthetic GHOSTLY-like file and the real samples (when present), mutated by bit
flips, truncations/extensions, header word corruption, parameter section corruption and
plain random bytes. Reading includes materialising every channel (the reader converts rows
lazily) and pairing muscles, so errors deferred past read_c3d are caught too."""

from __future__ import annotations

import signal
import struct
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libs.emg import EmgError, muscle_channels, read_c3d
from libs.emg.synthetic import ChannelSpec, SyntheticSpec, regular_contractions, write_synthetic_c3d
from tests.helpers import sample_files

PER_INPUT_S = 3.0  # hard bound per input (SIGALRM); typical inputs take ~1 ms
EXAMPLES = 800


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang(f"read_c3d did not return within {PER_INPUT_S} s")


@pytest.fixture(scope="module")
def synthetic_truth(tmp_path_factory) -> dict:
    """The synthetic base: its file and what it holds (write_synthetic_c3d's ground truth)."""
    path = tmp_path_factory.mktemp("c3dfuzz") / "synthetic.c3d"
    return write_synthetic_c3d(
        path,
        SyntheticSpec(
            duration_s=6.0,
            seed=7,
            channels=[ChannelSpec(contractions=regular_contractions(2, 1.0, 2.0)), ChannelSpec()],
        ),
    )


@pytest.fixture(scope="module")
def bases(synthetic_truth) -> list[bytes]:
    out = [synthetic_truth["path"].read_bytes()]
    samples = sample_files()
    if samples:
        out.append(min(samples, key=lambda p: p.stat().st_size).read_bytes())
    return out


def _param_span(data: bytes) -> tuple[int, int]:
    """Byte range of the parameter section (from the header's pointer; clamped)."""
    start = max(1, data[0] if data else 1) - 1
    start = min(start * 512, max(len(data) - 1, 0))
    if len(data) > start + 3:
        n_blocks = data[start + 2] or 1
    else:
        n_blocks = 1
    return start, min(len(data), start + n_blocks * 512)


EDGE_WORDS = [0, 1, 2, 0x7FFF, 0x8000, 0xFFFF, 0x7F, 0x80, 0xFF]
EDGE_FLOATS = [0.0, -0.0, 1.0, -1.0, 1e-45, 3.4e38, float("inf"), float("-inf"), float("nan")]

mutations = st.one_of(
    st.tuples(
        st.just("bitflips"),
        st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 7)), min_size=1, max_size=32),
    ),
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("extend"), st.binary(min_size=1, max_size=2048)),
    st.tuples(
        st.just("header_word"),
        st.lists(st.tuples(st.integers(0, 255), st.sampled_from(EDGE_WORDS)), min_size=1, max_size=4),
    ),
    st.tuples(st.just("header_float"), st.tuples(st.sampled_from([6, 10, 11]), st.sampled_from(EDGE_FLOATS))),
    st.tuples(
        st.just("params"),
        st.lists(
            st.tuples(st.floats(0, 1, exclude_max=True), st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF, 0xFE, 0x50])),
            min_size=1,
            max_size=24,
        ),
    ),
    st.tuples(
        st.just("params_random"), st.tuples(st.floats(0, 1, exclude_max=True), st.binary(min_size=1, max_size=64))
    ),
    st.tuples(st.just("random"), st.binary(max_size=4096)),
    st.tuples(st.just("c3d_prefix_random"), st.binary(max_size=2048)),
)


def mutate(data: bytes, mutation) -> bytes:
    kind, arg = mutation
    b = bytearray(data)
    if kind == "bitflips":
        for frac, bit in arg:
            b[int(frac * len(b))] ^= 1 << bit
    elif kind == "truncate":
        del b[int(arg * len(b)) :]
    elif kind == "extend":
        b += arg
    elif kind == "header_word":
        for word, value in arg:
            struct.pack_into("<H", b, 2 * word, value)
    elif kind == "header_float":
        word, value = arg
        struct.pack_into("<f", b, 2 * word, value)
    elif kind == "params":
        lo, hi = _param_span(data)
        for frac, value in arg:
            b[lo + int(frac * (hi - lo))] = value
    elif kind == "params_random":
        lo, hi = _param_span(data)
        frac, blob = arg
        at = lo + int(frac * (hi - lo))
        b[at : at + len(blob)] = blob
    elif kind == "random":
        b = bytearray(arg)
    elif kind == "c3d_prefix_random":
        b = bytearray(b"\x02\x50") + arg
    return bytes(b)


def read_everything(data: bytes) -> None:
    rec = read_c3d(data, file_name="Ghostly_Emg_20230321_17-50-17-0881.c3d")
    out = np.empty(rec.n_samples)
    for i in range(rec.shape[0]):
        rec.channel(i)
        rec.row(i, out)
    muscle_channels(rec)


def test_mutated_c3d_raise_only_typed_errors(bases, fuzz_count):
    outcomes: dict[str, int] = {}
    slowest = [0.0]
    old = signal.signal(signal.SIGALRM, _alarm)

    @settings(
        max_examples=EXAMPLES, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    @given(base=st.integers(0, len(bases) - 1), mutation=mutations)
    def one(base, mutation):
        data = mutate(bases[base], mutation)
        fuzz_count("c3d: read_c3d mutated inputs")
        t0 = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, PER_INPUT_S)
        try:
            read_everything(data)
            outcome = "read"
        except EmgError as exc:
            outcome = type(exc).__name__
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        slowest[0] = max(slowest[0], time.perf_counter() - t0)
        key = f"{mutation[0]}:{outcome}"
        outcomes[key] = outcomes.get(key, 0) + 1

    try:
        one()
    finally:
        signal.signal(signal.SIGALRM, old)
    print(f"\nc3d fuzz outcomes: {dict(sorted(outcomes.items()))}; slowest input {slowest[0] * 1000:.1f} ms")
    assert slowest[0] < PER_INPUT_S


def test_unmodified_bases_read_back_what_they_hold(bases, synthetic_truth):
    """The inputs the mutations start from are read correctly: the synthetic file gives back
    exactly the labels, rate and (float32-stored) samples written, every base reads the same
    twice, and a channel read whole equals the same channel read row-wise."""
    rec = read_c3d(bases[0], file_name="Ghostly_Emg_20230321_17-50-17-0881.c3d")
    assert rec.labels == synthetic_truth["labels"] and rec.rate == synthetic_truth["rate"]
    assert rec.shape == synthetic_truth["analogs"].shape and rec.n_samples == synthetic_truth["n_samples"]
    for i in range(rec.shape[0]):
        np.testing.assert_array_equal(rec.channel(i), synthetic_truth["analogs"][i])
    assert [m.raw_label for m in muscle_channels(rec)] == ["CH1 Raw", "CH2 Raw"]
    for data in bases:
        first, again = (read_c3d(data, file_name="Ghostly_Emg_20230321_17-50-17-0881.c3d") for _ in range(2))
        assert first.shape == again.shape and first.labels == again.labels and first.rate == again.rate
        out = np.empty(first.n_samples)
        for i in range(first.shape[0]):
            whole = first.channel(i)
            assert whole.shape == (first.n_samples,)
            np.testing.assert_array_equal(whole, again.channel(i))
            np.testing.assert_array_equal(first.row(i, out), whole)
