import os
import stat

import pytest

from stdec.util import atomic_path, write_atomic


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077, 0o002])
def test_result_files_keep_the_users_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        write_atomic(tmp_path / "results.json", b"[]\n")
        with atomic_path(tmp_path / "pareto.png") as tmp:
            assert tmp.suffix == ".png" and tmp.parent == tmp_path  # a writer infers the format
            tmp.write_bytes(b"png")
    finally:
        os.umask(old)
    for name, data in (("results.json", b"[]\n"), ("pareto.png", b"png")):
        path = tmp_path / name
        assert path.read_bytes() == data
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pareto.png", "results.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    path = tmp_path / "results.json"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk on fire"), atomic_path(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk on fire")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
