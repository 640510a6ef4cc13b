"""`write_text_atomic`: the file holds the old or the new text, never a torn one, and no temporary is left."""

import pytest

from bandpo._atomic import write_text_atomic


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

    monkeypatch.setattr("bandpo._atomic.os.replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_text_atomic(path, "new")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["marker.json"]
