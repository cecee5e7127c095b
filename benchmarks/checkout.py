"""Files of the source checkout that fer-bench reads (it is a source-checkout tool, not a runtime one).

Beside this package when it runs from the checkout (an editable install), else under the current
directory, which is the checkout when fer-bench or pytest is run from its root after a regular install.
"""

from __future__ import annotations

from pathlib import Path


def checkout_path(*parts: str) -> Path:
    """``parts`` joined under the checkout's root: the first root that has it, else under the current directory."""
    for root in (Path(__file__).resolve().parents[1], Path.cwd()):
        path = root.joinpath(*parts)
        if path.exists():
            return path
    return Path.cwd().joinpath(*parts)
