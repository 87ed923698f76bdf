"""docs/kind.md is reachable from the README and its links lead somewhere."""

from __future__ import annotations

import re

from tests.kind.support import REPO

DOC = REPO / "docs" / "kind.md"


def test_readme_links_the_kind_page() -> None:
    install = REPO.joinpath("README.md").read_text().split("\n## Install\n", 1)[1].split("\n## ", 1)[0]
    assert "[docs/kind.md](docs/kind.md)" in install


def test_relative_links_of_the_kind_page_exist() -> None:
    targets = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", DOC.read_text())
    assert targets
    missing = [target for target in targets if not (DOC.parent / target).exists()]
    assert missing == []
