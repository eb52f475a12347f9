"""cmma_jax.files: results are written whole or not at all (a full disk mid-write leaves the
previous file readable and no temporary file), and a reproduction that meets a file cut by an
older, non-atomic write redoes it instead of failing."""

import errno
import json
import os

import numpy as np
import pytest

from cmma_jax import evaluate, files, reproduce


def _disk_full_after(monkeypatch, nbytes):
    """Writes fail with ENOSPC once `nbytes` bytes have gone to a file opened by `files`."""
    real_fdopen = os.fdopen

    class Filling:
        def __init__(self, f):
            self._f, self._written = f, 0

        def write(self, data):
            if self._written + len(data) > nbytes:
                self._f.write(data[: max(nbytes - self._written, 0)])
                raise OSError(errno.ENOSPC, "No space left on device")
            self._written += len(data)
            return self._f.write(data)

        def __getattr__(self, name):
            return getattr(self._f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self._f.__exit__(*exc)

    monkeypatch.setattr(files.os, "fdopen", lambda fd, mode: Filling(real_fdopen(fd, mode)))


@pytest.mark.parametrize("write,read", [
    (lambda p: files.write_json(p, {"models": list(range(1000))}), lambda p: json.load(open(p))),
    (lambda p: files.write_text(p, "x" * 10_000), lambda p: open(p).read()),
])
def test_a_full_disk_leaves_the_previous_file_whole(tmp_path, monkeypatch, write, read):
    path = str(tmp_path / "results.json")
    files.write_json(path, {"previous": True})
    _disk_full_after(monkeypatch, 100)
    with pytest.raises(OSError, match="No space left"):
        write(path)
    assert json.load(open(path)) == {"previous": True}
    assert os.listdir(tmp_path) == ["results.json"]  # no temporary file left behind
    monkeypatch.undo()
    write(path)
    read(path)


def test_npz_and_unserialisable_values(tmp_path):
    path = str(tmp_path / "per_face.npz")
    files.write_npz(path, {"a/bound": np.arange(3.0)})
    np.testing.assert_array_equal(np.load(path)["a/bound"], [0.0, 1.0, 2.0])
    json_path = str(tmp_path / "r.json")
    files.write_json(json_path, [1])
    with pytest.raises(TypeError):
        files.write_json(json_path, {"x": object()})
    assert json.load(open(json_path)) == [1]
    assert sorted(os.listdir(tmp_path)) == ["per_face.npz", "r.json"]


def test_a_truncated_results_file_is_redone_not_a_crash(tmp_path, capsys):
    path = tmp_path / "results.json"
    path.write_text('{"models": [{"model": "cmma", "st')  # cut by a full disk, before atomicity
    reason = reproduce.evaluation_finished(str(tmp_path), [], [], evaluate.EvalSettings(), None)
    assert reason == "not evaluated yet"  # evaluated again, where it raised JSONDecodeError
    assert "results.json is unreadable" in capsys.readouterr().out


def test_output_folders_are_checked_before_any_work(tmp_path):
    fresh = tmp_path / "new" / "results"
    assert files.ensure_writable_dir(str(fresh)) == str(fresh)
    assert not (tmp_path / "new").exists()  # nothing is made until results are written
    (tmp_path / "file_parent").write_text("")
    with pytest.raises(files.OutputDirError, match=r"cannot be made: .*file_parent is a file"):
        files.ensure_writable_dir(str(tmp_path / "file_parent" / "results"))
    blocking = tmp_path / "a_file"
    blocking.write_text("")
    with pytest.raises(files.OutputDirError, match=r"--output_dir .*a_file is a file, not a "
                                                   r"folder.*Nothing was computed"):
        files.ensure_writable_dir(str(blocking), "--output_dir")
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o500)
    try:
        if os.access(read_only, os.W_OK):  # root ignores permissions
            pytest.skip("this user can write anywhere")
        with pytest.raises(files.OutputDirError, match=r"cannot be written"):
            files.ensure_writable_dir(str(read_only / "sub"), "--output_dir")
    finally:
        read_only.chmod(0o700)


@pytest.mark.parametrize("door", ["evaluate.py", "generate.py", "ground_truth.py"])
def test_the_doors_refuse_an_output_dir_that_is_a_file_before_loading_anything(door, tmp_path):
    import pathlib
    import sys

    from conftest import run_command

    blocking = tmp_path / "results"
    blocking.write_text("")
    # The workdir does not even exist: the output is checked first, in one line.
    result = run_command([sys.executable, f"launch/{door}", f"--workdirs={tmp_path}/none",
                          f"--output_dir={blocking}"],
                         cwd=str(pathlib.Path(__file__).resolve().parents[1]))
    assert result.returncode != 0
    assert result.stderr.strip() == (f"launch/{door}: --output_dir {blocking} is a file, not a "
                                     "folder: choose another path or move the file away. Nothing "
                                     "was computed."), result.stderr[-2000:]


def test_written_files_have_the_usual_permissions(tmp_path):
    path = str(tmp_path / "results.json")
    files.write_json(path, {})
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's private 0600
