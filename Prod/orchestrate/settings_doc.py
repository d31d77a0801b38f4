"""The README's configuration table, generated from ``config.Settings`` (names, defaults, docs).

``python -m Prod.orchestrate.settings_doc`` prints it; ``--write`` replaces the table between the
``settings-table`` markers in README.md (a test keeps the two in sync).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from config import ROOT, Settings

START = "<!-- settings-table:start (generated: python -m Prod.orchestrate.settings_doc --write) -->"
END = "<!-- settings-table:end -->"


def _default(field) -> str:
    value = field.default
    if value is None or value == "":
        return "(empty)"
    if isinstance(value, Path):
        value = value.relative_to(ROOT) if value.is_relative_to(ROOT) else value
    return f"`{value}`"


def settings_table() -> str:
    """Markdown table: environment variable | default | meaning, in declaration order."""
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        meaning = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{name.upper()}` | {_default(field)} | {meaning} |")
    return "\n".join(rows)


def replace_table(readme: str, table: str) -> str:
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table}\n{END}{tail}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="update README.md in place")
    args = parser.parse_args()
    if args.write:
        path = ROOT / "README.md"
        path.write_text(replace_table(path.read_text(), settings_table()))
        print(f"updated {path}")
    else:
        print(settings_table())


if __name__ == "__main__":
    main()
