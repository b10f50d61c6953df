"""The README's Python API example runs as written (doctest), on real photos."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_api_example_runs(small_photos: Path, tmp_path: Path) -> None:
    section = README.read_text("utf-8").split("## Python API", 1)[1].split("\n## ", 1)[0]
    (example,) = re.findall(r"```pycon\n(.*?)```", section, flags=re.S)
    test = doctest.DocTestParser().get_doctest(
        example, {"db": tmp_path / "db", "folder": small_photos}, "README API", str(README), 0
    )
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.failures == 0 and runner.tries >= 6


def test_the_public_names_are_importable() -> None:
    import semsearch

    for name in semsearch.__all__:
        assert getattr(semsearch, name) is not None
    assert issubclass(semsearch.CollectionError, semsearch.SemsearchError)
