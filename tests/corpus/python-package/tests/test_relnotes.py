import pytest

from relnotes import load, render
from relnotes.cli import main

CHANGELOG = """
[[release]]
version = "1.10.0"
date = "2024-05-01"
added = ["Markdown output"]
fixed = ["Sorting of 1.10 after 1.9"]

[[release]]
version = "1.9.0"
date = "2024-04-01"
changed = ["Faster parsing"]

[[release]]
version = "2.0.0rc1"
date = "2024-06-01"
added = ["Everything"]
"""


def test_sorted_by_version_not_text():
    versions = [str(r.version) for r in load(CHANGELOG)]
    assert versions == ["2.0.0rc1", "1.10.0", "1.9.0"]


def test_render_skips_prereleases_by_default():
    text = render(load(CHANGELOG))
    assert "2.0.0rc1" not in text
    assert text.index("## 1.10.0") < text.index("## 1.9.0")
    assert "### Fixed\n\n- Sorting of 1.10 after 1.9" in text or "- Sorting of 1.10 after 1.9" in text


def test_render_with_prereleases():
    assert "## 2.0.0rc1 (2024-06-01)" in render(load(CHANGELOG), include_pre=True)


def test_bad_version():
    with pytest.raises(ValueError, match="bad version"):
        load('[[release]]\nversion = "not-a-version"\n')


def test_cli(tmp_path, capsys):
    path = tmp_path / "CHANGELOG.toml"
    path.write_text(CHANGELOG, encoding="utf-8")
    assert main([str(path)]) == 0
    assert "## 1.9.0 (2024-04-01)" in capsys.readouterr().out
