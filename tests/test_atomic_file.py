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


def test_a_symlinked_path_is_replaced_in_its_own_directory(tmp_path):
    # the temporary file sits beside the link, not beside its target (which may be on another filesystem)
    (tmp_path / "elsewhere").mkdir()
    real = tmp_path / "elsewhere" / "real.csv"
    real.write_text("old")
    link = tmp_path / "out.csv"
    link.symlink_to(real)
    write_whole(link, "new")
    assert link.read_text() == "new" and not link.is_symlink()
    assert os.listdir(tmp_path / "elsewhere") == ["real.csv"] and sorted(os.listdir(tmp_path)) == ["elsewhere", "out.csv"]


def test_umask_is_never_changed_while_writing(tmp_path, monkeypatch):
    # setting the umask, even briefly, races with every other thread that creates files
    def no_umask(_mask):
        raise AssertionError("os.umask called")

    monkeypatch.setattr(os, "umask", no_umask)
    write_whole(tmp_path / "new.txt", "x")
    write_whole(tmp_path / "new.txt", "y")
    assert (tmp_path / "new.txt").read_text() == "y"


def test_private_umask_is_honoured(tmp_path):
    old = os.umask(0o077)
    try:
        write_whole(tmp_path / "p.csv", "x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "p.csv") == 0o600


def test_figure_path_without_suffix_is_refused(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, _ = plt.subplots()
    try:
        with pytest.raises(ValueError, match="suffix"):
            save_figure(fig, tmp_path / "plot")
    finally:
        plt.close(fig)
    assert os.listdir(tmp_path) == []
