"""Mutation corpus from pydicom's own test files: no crash, no hang, one readable message, nothing written.

≥ 1,000 mutants (bit flips, truncation, corrupt element lengths, zeroed runs) of real
ultrasound files are loaded in a child process (so a native-decoder crash would be caught
as a failure rather than killing the test run). Each file must either load to a sane image
or be refused with a single-line InputError, within a few seconds.
"""

from __future__ import annotations

import json
import random
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

SOURCES = ["examples_rgb_color.dcm", "examples_palette.dcm", "ExplVR_BigEnd.dcm", "examples_ybr_color.dcm",
           "examples_jpeg2k.dcm", "CT_small.dcm", "MR_small_RLE.dcm"]
PER_SOURCE = 150  # 7 × 150 = 1,050 mutants


def _mutate(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    kind = rng.choice(["flip", "truncate", "length", "zero", "flip", "length"])
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            pos = rng.randrange(128, len(b))
            b[pos] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        b = b[: rng.randrange(0, len(b))]
    elif kind == "length":
        # overwrite what may be an element length field with an absurd or shifted value
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(132, max(133, min(len(b) - 4, 4096))) & ~1
            value = rng.choice([0xFFFFFFFF, 0x7FFFFFFF, 0xFFFE, rng.randrange(0, 1 << 16), 0])
            b[pos:pos + 4] = struct.pack("<I", value)
    else:
        start = rng.randrange(128, len(b))
        b[start:start + rng.randint(1, 512)] = bytes(min(len(b) - start, rng.randint(1, 512)))
    return bytes(b)


CHILD = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from p2p_desktop.errors import InputError
    from p2p_desktop.io import load_study
    import numpy as np
    for line in sys.stdin:
        path = Path(line.strip())
        t0 = time.perf_counter()
        rec = {"file": path.name}
        try:
            s = load_study(path)
            ok = s.image.dtype == np.float32 and s.image.ndim == 3 and np.isfinite(s.image).all() \\
                 and float(s.image.min()) >= 0 and float(s.image.max()) <= 1
            rec.update(outcome="loaded" if ok else "bad-image")
        except InputError as exc:
            rec.update(outcome="refused", message=str(exc))
        except BaseException as exc:
            rec.update(outcome="crash", message=f"{type(exc).__name__}: {exc}"[:300])
        rec["seconds"] = time.perf_counter() - t0
        print(json.dumps(rec), flush=True)
""")


@pytest.mark.slow
def test_mutation_corpus_no_crash_no_hang(tmp_path):
    rng = random.Random(20261125)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    paths = []
    for name in SOURCES:
        data = Path(get_testdata_file(name)).read_bytes()
        for i in range(PER_SOURCE):
            p = corpus / f"{Path(name).stem}_{i:03d}.dcm"
            p.write_bytes(_mutate(data, rng))
            paths.append(p)
    assert len(paths) >= 1000
    before = sorted(x.name for x in corpus.iterdir())
    proc = subprocess.run([sys.executable, "-c", CHILD], input="\n".join(map(str, paths)) + "\n",
                          capture_output=True, text=True, timeout=900)
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0, f"child died after {len(records)} files: {proc.stderr[-2000:]}"
    assert len(records) == len(paths)
    crashes = [r for r in records if r["outcome"] in ("crash", "bad-image")]
    assert not crashes, crashes[:5]
    slow = [r for r in records if r["seconds"] > 3.0]
    assert not slow, slow[:5]
    refused = [r for r in records if r["outcome"] == "refused"]
    assert refused, "mutations should be refused at least sometimes"
    for r in refused:
        msg = r["message"]
        assert msg and "\n" not in msg and "Traceback" not in msg
        assert r["file"] in msg, msg
    assert sorted(x.name for x in corpus.iterdir()) == before  # nothing written
    print(f"{len(records)} mutants: {len(refused)} refused, {len(records) - len(refused)} loaded, "
          f"max {max(r['seconds'] for r in records):.2f} s")
