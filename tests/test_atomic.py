"""`write_text_atomic`: the file holds the old or the new text, never a torn one, and no temporary is left."""

import pytest

from bandpo.training._atomic import write_text_atomic


def test_writes_and_replaces_leaving_no_temporary(tmp_path):
    path = tmp_path / "sub" / "marker.json"
    write_text_atomic(path, "old")
    write_text_atomic(path, "new")
    assert path.read_text() == "new"
    assert sorted(p.name for p in path.parent.iterdir()) == ["marker.json"]


def test_a_failed_write_keeps_the_old_text(tmp_path, monkeypatch):
    path = tmp_path / "marker.json"
    write_text_atomic(path, "old")

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("bandpo.training._atomic.os.replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_text_atomic(path, "new")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["marker.json"]


def test_files_and_staging_folders_follow_the_umask(tmp_path):
    """tempfile's private 0600/0700 made a shared cache unreadable to its other users: the umask decides."""
    import os

    from bandpo.training._atomic import make_temporary_dir, use_umask

    previous = os.umask(0o027)
    try:
        write_text_atomic(tmp_path / "a.json", "{}")
        folder = make_temporary_dir(tmp_path, ".staging-")
        private = folder / "weights"
        private.write_bytes(b"x")
        private.chmod(0o600)  # as safetensors writes its files
        use_umask(folder)
    finally:
        os.umask(previous)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640
    assert folder.stat().st_mode & 0o777 == 0o750 and private.stat().st_mode & 0o777 == 0o640
