"""Build the self-contained agent zipapp (``jobnet-agent.pyz``) from the installed package.

Deterministic: the same sources give the same bytes (sorted entries, fixed timestamps and modes),
so the operator can name what it ships by its content.

Each module is there twice: its source and its bytecode compiled by the building Python (an
unchecked hash-based ``.pyc`` beside the ``.py``, the place zipimport looks for it, stored
uncompressed). A VM whose
Python has the same bytecode magic (the same minor version) imports the bytecode; any other
finds a magic it does not know and compiles the source, as before. Python never writes
bytecode into a zip, so without it every ``serve`` and supervising process compiled the whole
agent again at start (~0.15 s of CPU each, the largest part of a cold start).

    python3 -m jobnet_agent.bundle OUT.pyz
"""

from __future__ import annotations

import hashlib
import importlib.util
import marshal
import os
import sys
import zipfile
from pathlib import Path
from typing import List, Optional, Union

import jobnet_agent

SHEBANG = b"#!/usr/bin/env python3\n"
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
_MAIN = b"import sys\n\nfrom jobnet_agent.cli import main\n\nsys.exit(main())\n"
#: Marshal format 2 has no back-references, whose choice follows the objects' reference counts in
#: the building process (format 4's output differs between processes); every version reads it.
_MARSHAL_VERSION = 2
#: PEP 552 flags: hash-based, source not checked (the archive is written once, never edited).
_UNCHECKED_HASH_PYC = 0b01


def _sources() -> List[Path]:
    package_dir = Path(jobnet_agent.__file__).resolve().parent
    return sorted(p for p in package_dir.glob("*.py") if p.is_file())


def sources_digest() -> str:
    """What a zipapp built here is made of, as a hex digest: this Python's bytecode magic, this
    module (how it is built) and every source of the package. The same digest, the same zipapp."""
    digest = hashlib.sha256(importlib.util.MAGIC_NUMBER)
    for path in [Path(__file__).resolve(), *_sources()]:
        data = path.read_bytes()
        digest.update(f"{path.name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def cached_zipapp(cache_dir: Union[str, os.PathLike[str]]) -> Path:
    """The zipapp of the package as it is now, from ``cache_dir`` if it was built there before
    (named by :func:`sources_digest`), otherwise built there: a restarted operator or a second
    ``kubectl jobnet logs`` reads it instead of compiling the agent again (~0.1 s of CPU)."""
    dest = Path(cache_dir) / f"jobnet-agent-{jobnet_agent.__version__}-{sources_digest()[:16]}.pyz"
    if dest.is_file():
        return dest
    return build_zipapp(dest)


def build_zipapp(dest_path: Union[str, os.PathLike[str]]) -> Path:
    """Write the agent zipapp to ``dest_path`` (atomically) and return its path."""
    dest = Path(dest_path)
    tmp = dest.with_name(f"{dest.name}.tmp.{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(SHEBANG)
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            entries = [("__main__.py", _MAIN)]
            for path in _sources():
                name = "jobnet_agent/" + path.name
                source = path.read_bytes()
                entries += [(name, source), (name + "c", _bytecode(name, source))]
            for name, data in entries:
                info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
                info.external_attr = 0o644 << 16
                # The bytecode stored as is: every process start reads it, and inflating it was
                # 13 M instructions (10 %) of serve's start; the sources are read only by another
                # Python version, which compiles them anyway.
                info.compress_type = zipfile.ZIP_STORED if name.endswith(".pyc") else zipfile.ZIP_DEFLATED
                archive.writestr(info, data)
    os.chmod(tmp, 0o755)
    os.replace(tmp, dest)
    return dest


def _bytecode(name: str, source: bytes) -> bytes:
    """The ``.pyc`` of a module's source for this Python (PEP 552 header, then the code)."""
    code = compile(source, name, "exec", dont_inherit=True)
    header = importlib.util.MAGIC_NUMBER + _UNCHECKED_HASH_PYC.to_bytes(4, "little")
    return header + importlib.util.source_hash(source) + marshal.dumps(code, _MARSHAL_VERSION)


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python3 -m jobnet_agent.bundle OUT.pyz\n")
        return 2
    print(build_zipapp(args[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
