"""``p2p-desktop models import-weights`` (issue 25, item 6): the paper's metrics offline.

The real AlexNet / InceptionV3 files cannot ship with the tests, so the refusal is tested with files of
the wrong hash against the real published table, and the accept path through the core function's
test-only ``published`` table pointed at a generated file; the metric must then find it.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from p2p_desktop.cli.main import main
from p2p_desktop.errors import InputError
from p2p_desktop.metrics.import_weights import PUBLISHED, PublishedWeights, checkpoints_dir, import_weights

ALEX, INCEPTION = "alexnet-owt-7be5be79.pth", "pt_inception-2015-12-05-6726825d.pth"


@pytest.fixture(autouse=True)
def torch_home(tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)  # follow TORCH_HOME
    return tmp_path / "torch-home"


def _file(path, data: bytes):
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def test_the_published_hashes_are_the_ones_the_file_names_abbreviate():
    for name, w in PUBLISHED.items():
        assert w.name == name and len(w.sha256) == 64 and name.rsplit("-", 1)[1] == f"{w.sha256[:8]}.pth"
        assert w.url.endswith("/" + name)


def test_a_file_of_another_hash_is_refused_in_one_line_and_nothing_is_copied(tmp_path, capsys):
    from p2p_desktop.metrics import lpips_status

    bad, actual = _file(tmp_path / ALEX, b"not the alexnet weights")
    assert main(["models", "import-weights", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("p2p-desktop: error: ")
    assert PUBLISHED[ALEX].sha256 in err and actual in err and "nothing was copied" in err
    assert not checkpoints_dir().exists() or not any(checkpoints_dir().iterdir())
    assert lpips_status()[0] is False


def test_one_bad_file_stops_the_import_before_any_copy(tmp_path):
    good, digest = _file(tmp_path / "a.pth", b"generated alexnet stand-in")
    bad, _ = _file(tmp_path / "b.pth", b"something else")
    table = {ALEX: PublishedWeights(ALEX, digest, 26, "LPIPS", "https://example.invalid/" + ALEX)}
    with pytest.raises(InputError, match="nothing was copied"):
        import_weights([good, bad], published=table)
    assert not (checkpoints_dir() / ALEX).exists()


def test_a_file_of_the_published_hash_is_installed_where_the_metrics_find_it(tmp_path, capsys):
    from p2p_desktop.metrics import lpips_status
    from p2p_desktop.metrics.fid import fid_status

    alex, a_hash = _file(tmp_path / "downloaded-1.bin", b"generated alexnet stand-in")
    incep, i_hash = _file(tmp_path / "downloaded-2.bin", b"generated inception stand-in")
    table = {ALEX: PublishedWeights(ALEX, a_hash, 26, "LPIPS (AlexNet)", "u"),
             INCEPTION: PublishedWeights(INCEPTION, i_hash, 27, "FID (pytorch-fid)", "u")}
    assert lpips_status()[0] is False and not fid_status().available
    records = import_weights([alex, incep], published=table)
    assert [r["name"] for r in records] == [ALEX, INCEPTION] and not any(r["already"] for r in records)
    assert (checkpoints_dir() / ALEX).read_bytes() == alex.read_bytes()
    assert lpips_status() == (True, "")
    status = fid_status()
    assert status.available and status.flavour == "pytorch-fid" and status.path == checkpoints_dir() / INCEPTION
    assert not list(checkpoints_dir().glob("*.part"))
    again = import_weights([alex], published=table)
    assert again[0]["already"] is True


def test_cli_json_refusal_exit_2(tmp_path, capsys):
    bad, _ = _file(tmp_path / "x.pth", b"x")
    assert main(["models", "import-weights", "--json", str(bad)]) == 2
    out, err = capsys.readouterr()
    assert PUBLISHED[ALEX].sha256 in err and PUBLISHED[INCEPTION].sha256 in err  # an unknown name: both named
    assert not out or "imported" not in json.loads(out or "{}")
