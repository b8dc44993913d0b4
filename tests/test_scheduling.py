"""The order in which pytest-xdist's workers take the test files: longest first, each file whole."""
from __future__ import annotations

from pathlib import Path

from conftest import FILE_SECONDS, UNLISTED_FILE_S, longest_files_first

TESTS = Path(__file__).resolve().parent


class Item:  # what longest_files_first reads of a pytest item
    def __init__(self, file: str, name: str) -> None:
        self.fspath, self.name = TESTS / file, name

    def __repr__(self) -> str:
        return f"{self.fspath.name}::{self.name}"


def test_whole_files_longest_first_ties_in_collection_order() -> None:
    items = [Item("test_a.py", "1"), Item("test_short.py", "1"), Item("test_a.py", "2"), Item("test_long.py", "1"),
             Item("test_b.py", "1"), Item("test_long.py", "2")]
    longest_files_first(items, {"test_long.py": 9.0, "test_short.py": 0.1})
    assert [repr(i) for i in items] == ["test_long.py::1", "test_long.py::2", "test_a.py::1", "test_a.py::2",
                                        "test_b.py::1", "test_short.py::1"]


def test_the_listed_files_exist_and_are_longer_than_an_unlisted_one() -> None:
    missing = sorted(name for name in FILE_SECONDS if not (TESTS / name).is_file())
    assert not missing, f"FILE_SECONDS lists files that are gone: {missing}"
    assert all(s > UNLISTED_FILE_S for s in FILE_SECONDS.values())
