"""Build the self-contained agent zipapp (``jobnet-agent.pyz``) from the installed package.

Deterministic: the same sources give the same bytes (sorted entries, fixed timestamps and modes),
so the operator can compare what is on a VM with what it ships.

    python3 -m jobnet_agent.bundle OUT.pyz
"""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path
from typing import List, Optional, Union

import jobnet_agent

SHEBANG = b"#!/usr/bin/env python3\n"
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
_MAIN = b"import sys\n\nfrom jobnet_agent.cli import main\n\nsys.exit(main())\n"


def _sources() -> List[Path]:
    package_dir = Path(jobnet_agent.__file__).resolve().parent
    return sorted(p for p in package_dir.glob("*.py") if p.is_file())


def build_zipapp(dest_path: Union[str, os.PathLike[str]]) -> Path:
    """Write the agent zipapp to ``dest_path`` (atomically) and return its path."""
    dest = Path(dest_path)
    tmp = dest.with_name(f"{dest.name}.tmp.{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(SHEBANG)
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            entries = [("__main__.py", _MAIN)]
            entries += [("jobnet_agent/" + p.name, p.read_bytes()) for p in _sources()]
            for name, data in entries:
                info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, data)
    os.chmod(tmp, 0o755)
    os.replace(tmp, dest)
    return dest


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python3 -m jobnet_agent.bundle OUT.pyz\n")
        return 2
    print(build_zipapp(args[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
