"""The ``fpbench`` console script: ``fpbench run|zoo|verify|tables|transfer|lineage|attacks ...`` dispatches to modules."""

from __future__ import annotations

import sys

from fpbench.registry import registry_of

COMMANDS = registry_of("command", {
    "run": "fpbench.run:cli",
    "zoo": "fpbench.zoo.__main__:cli",
    "verify": "fpbench.verify:cli",
    "tables": "fpbench.report.__main__:cli",
    "transfer": "fpbench.transfer.__main__:cli",
    "lineage": "fpbench.lineage.__main__:cli",
    "attacks": "fpbench.cmf.attacks:cli",
})


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(f"usage: fpbench {{{'|'.join(COMMANDS)}}} [hydra overrides ...]", file=sys.stderr)
        sys.exit(2)
    command = sys.argv.pop(1)
    COMMANDS.get(command)()
