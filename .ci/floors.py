"""Write pip constraints pinning every direct dependency of pyproject.toml (and its extras) to its floor.

``tox -e min`` installs the project under them: the lowest versions the ranges allow, so a floor that
does not work fails CI instead of a user. Usage: python .ci/floors.py OUT.txt
"""

import re
import sys
import tomllib
from pathlib import Path

project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]
requirements = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
lines = []
for requirement in requirements:
    match = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(>=|==)\s*([^,;\s]+)(\s*,\s*<[^,;\s]+)?", requirement.strip())
    if not match:
        sys.exit(f"{requirement!r}: every dependency needs a floor (name>=version[,<bound] or name==version)")
    lines.append(f"{match[1]}=={match[3]}")
Path(sys.argv[1]).write_text("\n".join(lines) + "\n")
print("\n".join(lines))
