"""The suite's own fixtures point at folders that exist (a renamed folder would silently lose them)."""

from tests.conftest import ONE_THREAD_FOLDERS


def test_every_single_threaded_folder_exists():
    missing = [str(folder) for folder in ONE_THREAD_FOLDERS if not folder.is_dir()]
    assert missing == []
