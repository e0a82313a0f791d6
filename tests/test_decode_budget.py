"""Decode budgets (issue 15 item 7): small files that decode to gigabytes are refused with one line,
before decoding, by the memory the whole pipeline needs (measured: about 200 bytes per pixel, budgeted 250,
plus what the models take); issue 28 item 1: the limit is the process's own cgroup's, or an ancestor's."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from p2p_desktop.io import load_study
from p2p_desktop.io.memory import BYTES_PER_PIXEL, FIXED_BYTES, check_decode_budget, memory_budget


def _png_bomb(path: Path, side: int = 5000) -> Path:
    from PIL import Image

    Image.new("L", (side, side), 0).save(path, optimize=True)  # 25 MP in a few tens of KB
    return path


def _rle_bomb(path: Path, side: int = 8192) -> Path:
    """A one-frame 8-bit RLE Lossless DICOM of ``side`` x ``side`` zeros, written by hand (about 1 MB)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import RLELossless, SecondaryCaptureImageStorage, generate_uid

    n = side * side
    segment = b"\x81\x00" * (n // 128)  # PackBits: repeat the next byte 128 times
    frame = struct.pack("<16L", 1, 64, *([0] * 14)) + segment
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.Rows = ds.Columns = side
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_budget_arithmetic(monkeypatch):
    monkeypatch.setenv("P2P_DESKTOP_MEMORY_BUDGET", "2G")
    assert memory_budget() == 2 * 2**30
    assert check_decode_budget(2000, 2000) is None  # 4 MP * 250 B + 600 MiB = 1.5 GiB
    reason = check_decode_budget(5000, 5000)  # 25 MP * 250 B + 600 MiB = 6.4 GiB
    assert "5000x5000" in reason and "6.4 GiB" in reason and "2.0 GiB" in reason
    assert BYTES_PER_PIXEL == 250 and FIXED_BYTES == 600 * 2**20
    monkeypatch.delenv("P2P_DESKTOP_MEMORY_BUDGET")
    assert memory_budget() and memory_budget() > 0  # the system's own figure


@pytest.mark.parametrize("make,size_limit", [(_png_bomb, 200_000), (_rle_bomb, 1_200_000)])
def test_bombs_under_the_pixel_cap_are_refused_before_decoding(tmp_path, make, size_limit):
    path = make(tmp_path / ("bomb.png" if make is _png_bomb else "bomb.dcm"))
    assert path.stat().st_size < size_limit
    code = (
        "import resource, sys\n"
        "from p2p_desktop.io import load_study\n"
        "from p2p_desktop.errors import InputError\n"
        "try:\n"
        f"    load_study({str(path)!r})\n"
        "    print('LOADED')\n"
        "except InputError as exc:\n"
        "    print('REFUSED', exc)\n"
        # VmHWM: this process's own peak (ru_maxrss would include the forking parent's)
        "print('PEAK_KB', next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')))\n")
    env = {**os.environ, "P2P_DESKTOP_MEMORY_BUDGET": "1G"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    out = proc.stdout
    assert "REFUSED" in out and "refused before decoding" in out, out + proc.stderr
    peak_mb = int(out.split("PEAK_KB")[1].split()[0]) / 1024
    assert peak_mb < 600, f"{peak_mb:.0f} MB used: it was decoded"  # a decoded frame alone is 25-64 MB * 150


def test_cli_refusal_is_one_line_exit_2(tmp_path, monkeypatch):
    path = _png_bomb(tmp_path / "bomb.png")
    env = {**os.environ, "P2P_DESKTOP_MEMORY_BUDGET": "1G", "P2P_DESKTOP_HOME": str(tmp_path / "home")}
    proc = subprocess.run([sys.executable, "-m", "p2p_desktop", "classify", str(path), "--classifier",
                           "demo-squeezenet1_1"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "working memory" in proc.stderr


def test_address_space_limit_is_part_of_the_budget(tmp_path):
    # no override: a process limited to 2 GiB more address space refuses the 25 MP PNG by itself
    path = _png_bomb(tmp_path / "bomb.png")
    code = (
        "import resource\n"
        "from p2p_desktop.io import load_study\n"
        "from p2p_desktop.io.memory import available_memory\n"
        "size = int(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmSize:'))) * 1024\n"
        "resource.setrlimit(resource.RLIMIT_AS, (size + 2 * 2**30, resource.RLIM_INFINITY))\n"
        "print('AVAIL', available_memory())\n"
        "try:\n"
        f"    load_study({str(path)!r}); print('LOADED')\n"
        "except Exception as exc:\n"
        "    print('REFUSED', type(exc).__name__, exc)\n")
    env = {k: v for k, v in os.environ.items() if k != "P2P_DESKTOP_MEMORY_BUDGET"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc")
    assert "REFUSED InputError" in proc.stdout and "working memory" in proc.stdout, proc.stdout + proc.stderr


def test_ordinary_images_still_load(pydicom_file):
    study = load_study(pydicom_file("examples_rgb_color.dcm"))
    assert study.width == 320


# ----------------------------------------------------------------- the process's own cgroup (issue 28 item 1)

G = 2**30
_V1_MOUNTINFO = "35 25 0:30 / /sys/fs/cgroup/memory rw,relatime shared:14 - cgroup cgroup rw,memory\n"
_V2_MOUNTINFO = "30 25 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"


def _tree(tmp_path, cgroup_lines: str, mountinfo: str, files: dict[str, str]):
    """A fake /proc/self (cgroup, mountinfo) and /sys/fs/cgroup tree; returns (proc, sys) roots."""
    proc, sys_root = tmp_path / "proc", tmp_path / "sys"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text(cgroup_lines)
    (proc / "self" / "mountinfo").write_text(mountinfo)
    sys_root.mkdir()
    for rel, text in files.items():
        (sys_root / rel).parent.mkdir(parents=True, exist_ok=True)
        (sys_root / rel).write_text(text)
    return proc, sys_root


def _v1(group: str, limit: int, usage: int, inactive: int = 0, hier: int = 9223372036854771712) -> dict[str, str]:
    base = f"memory/{group}/".replace("//", "/")
    return {base + "memory.limit_in_bytes": f"{limit}\n", base + "memory.usage_in_bytes": f"{usage}\n",
            base + "memory.stat": f"cache 0\nhierarchical_memory_limit {hier}\ntotal_inactive_file {inactive}\n"}


def test_v1_limit_of_an_ancestor_group_is_found(tmp_path):
    # a Slurm step inside a job limited to 3 GB; the top level has no limit (what was read before)
    from p2p_desktop.io.memory import cgroup_available

    no = 9223372036854771712
    proc, sys_root = _tree(tmp_path, "12:pids:/slurm\n4:memory:/slurm/uid_0/job_7/step_0\n1:cpu:/\n",
                           _V1_MOUNTINFO, {**_v1("", no, 20 * G), **_v1("slurm", no, 5 * G),
                                           **_v1("slurm/uid_0", no, 2 * G), **_v1("slurm/uid_0/job_7", 3 * G, G),
                                           **_v1("slurm/uid_0/job_7/step_0", no, G // 2)})
    assert cgroup_available(proc, sys_root) == 2 * G


def test_v1_smallest_headroom_wins_and_page_cache_is_not_used(tmp_path):
    from p2p_desktop.io.memory import cgroup_available

    proc, sys_root = _tree(tmp_path, "4:memory:/a/b\n", _V1_MOUNTINFO,
                           {**_v1("a", 8 * G, 6 * G, inactive=G), **_v1("a/b", 4 * G, 3 * G)})
    assert cgroup_available(proc, sys_root) == G  # b: 4 - 3 = 1 GiB; a: 8 - (6 - 1) = 3 GiB


def test_v1_hierarchical_limit_covers_ancestors_outside_the_mount(tmp_path):
    # a container without its own cgroup namespace: /sys/fs/cgroup/memory *is* /docker/abc
    from p2p_desktop.io.memory import cgroup_available

    mountinfo = "35 25 0:30 /docker/abc /sys/fs/cgroup/memory ro,relatime - cgroup cgroup rw,memory\n"
    no = 9223372036854771712
    proc, sys_root = _tree(tmp_path, "4:memory:/docker/abc\n", mountinfo, _v1("", no, G, hier=3 * G))
    assert cgroup_available(proc, sys_root) == 2 * G


def test_v1_path_under_the_mount_root_is_translated(tmp_path):
    from p2p_desktop.io.memory import cgroup_available

    mountinfo = "35 25 0:30 /docker/abc /sys/fs/cgroup/memory ro,relatime - cgroup cgroup rw,memory\n"
    proc, sys_root = _tree(tmp_path, "4:memory:/docker/abc/job\n", mountinfo, _v1("job", 2 * G, G // 2))
    assert cgroup_available(proc, sys_root) == G + G // 2


def test_v2_walks_up_to_the_nearest_limit(tmp_path):
    from p2p_desktop.io.memory import cgroup_available

    proc, sys_root = _tree(tmp_path, "0::/system.slice/run-u7.service\n", _V2_MOUNTINFO, {
        "cgroup.controllers": "cpu memory pids\n",
        "memory.current": f"{10 * G}\n",  # the root has no memory.max
        "system.slice/memory.max": "max\n", "system.slice/memory.current": f"{4 * G}\n",
        "system.slice/run-u7.service/memory.max": f"{3 * G}\n",
        "system.slice/run-u7.service/memory.current": f"{G}\n",
        "system.slice/run-u7.service/memory.stat": f"anon {G // 2}\ninactive_file {G // 2}\n"})
    assert cgroup_available(proc, sys_root) == 2 * G + G // 2


def test_v2_parent_limit_is_smaller_than_the_child_headroom(tmp_path):
    from p2p_desktop.io.memory import cgroup_available

    proc, sys_root = _tree(tmp_path, "0::/user.slice/job\n", _V2_MOUNTINFO, {
        "cgroup.controllers": "memory\n",
        "user.slice/memory.max": f"{2 * G}\n", "user.slice/memory.current": f"{int(1.5 * G)}\n",
        "user.slice/job/memory.max": "max\n", "user.slice/job/memory.current": f"{G}\n"})
    assert cgroup_available(proc, sys_root) == G // 2


def test_hybrid_v2_unified_mount_and_no_limits_anywhere(tmp_path):
    from p2p_desktop.io.memory import cgroup_available

    no = 9223372036854771712
    proc, sys_root = _tree(tmp_path, "4:memory:/x\n0::/x\n", _V1_MOUNTINFO, {
        **_v1("x", no, G), "unified/x/cgroup.procs": "1\n"})
    assert cgroup_available(proc, sys_root) is None
    (sys_root / "unified/x/memory.max").write_text(f"{G}\n")
    (sys_root / "unified/x/memory.current").write_text(f"{G // 4}\n")
    assert cgroup_available(proc, sys_root) == 3 * G // 4


def test_no_proc_files_means_no_cgroup_figure(tmp_path):
    from p2p_desktop.io.memory import cgroup_available

    assert cgroup_available(tmp_path / "none", tmp_path / "none") is None


def test_rle_frame_in_a_3gb_cgroup_is_refused_not_killed(tmp_path):
    """A 264 KB RLE DICOM of 4096² inside a 3 GB cgroup (a Slurm job, ``systemd-run -p MemoryMax``):
    one line and exit 2 from its header, not the out-of-memory killer (137)."""
    from tests.cgroup import memory_limited

    (tmp_path / "in").mkdir()
    src = _rle_bomb(tmp_path / "in" / "big.dcm", side=4096)
    assert src.stat().st_size < 300_000
    env = {k: v for k, v in os.environ.items() if k != "P2P_DESKTOP_MEMORY_BUDGET"}
    env["P2P_DESKTOP_HOME"] = str(tmp_path / "home")
    argv = [sys.executable, "-m", "p2p_desktop", "attack", str(src), "--attack", "fgsm", "--classifier",
            "demo-squeezenet1_1", "--out", str(tmp_path / "out"), "--export-dicom"]
    with memory_limited(3 * 10**9) as wrap:
        proc = subprocess.run(wrap(argv), capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "4096x4096" in lines[0] and "working memory" in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()
