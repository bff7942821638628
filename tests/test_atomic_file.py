"""Output files are written whole, with ordinary permissions, and a failure leaves the old file alone."""

import os
import stat

import pytest

from fabricsim.atomic_file import replacing, save_figure, write_whole


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_new_file_gets_umask_permissions_not_private_ones(tmp_path):
    old = os.umask(0o022)
    try:
        write_whole(tmp_path / "a.csv", "x\r\n", newline="")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.csv") == 0o644
    assert (tmp_path / "a.csv").read_bytes() == b"x\r\n"


def test_existing_file_keeps_its_permissions(tmp_path):
    path = tmp_path / "b.json"
    path.write_text("old")
    os.chmod(path, 0o640)
    write_whole(path, b"new")
    assert path.read_bytes() == b"new" and _mode(path) == 0o640


def test_failure_leaves_old_content_and_no_temporary(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with replacing(path) as fh:
            fh.write("half of the new")
            raise RuntimeError("interrupted")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["c.txt"]


def test_bad_mode_is_refused(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        with replacing(tmp_path / "d", "a"):
            pass


@pytest.mark.parametrize("ext, magic", [("png", b"\x89PNG"), ("svg", b"<?xml")])
def test_figure_saved_in_the_format_its_suffix_names(tmp_path, ext, magic):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = tmp_path / f"f.{ext}"
    save_figure(fig, path, dpi=50)
    plt.close(fig)
    assert path.read_bytes().startswith(magic)
    assert os.listdir(tmp_path) == [f"f.{ext}"]
