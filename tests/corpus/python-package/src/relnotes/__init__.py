"""Render release notes from a TOML changelog."""

from __future__ import annotations

from dataclasses import dataclass, field

import tomli
from packaging.version import InvalidVersion, Version

__all__ = ["Release", "load", "render"]
__version__ = "0.4.0"

SECTIONS = ("added", "changed", "fixed", "security")


@dataclass(order=True)
class Release:
    version: Version
    date: str = field(compare=False)
    changes: dict[str, list[str]] = field(compare=False, default_factory=dict)


def load(text: str) -> list[Release]:
    """Parses a changelog: one `[[release]]` table per release."""
    data = tomli.loads(text)
    releases = []
    for raw in data.get("release", []):
        try:
            version = Version(raw["version"])
        except InvalidVersion as e:
            raise ValueError(f"bad version in changelog: {raw.get('version')!r}") from e
        changes = {s: list(raw.get(s, [])) for s in SECTIONS if raw.get(s)}
        releases.append(Release(version, str(raw.get("date", "unreleased")), changes))
    return sorted(releases, reverse=True)


def render(releases: list[Release], *, include_pre: bool = False) -> str:
    out = []
    for r in releases:
        if r.version.is_prerelease and not include_pre:
            continue
        out.append(f"## {r.version} ({r.date})\n")
        for section, items in r.changes.items():
            out.append(f"### {section.capitalize()}\n")
            out.extend(f"- {item}" for item in items)
            out.append("")
    return "\n".join(out).rstrip() + "\n"
