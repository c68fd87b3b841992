"""What to do about a database that is not as the reactor needs it: one home for the
advice that `db init`, `db check`, `doctor` and the other commands end with.

Privileges are granted by the database owner, never by `reactor db init`; a schema
problem is fixed by `db init` only when the role may apply DDL, else by the owner's
SQL (docs/database-setup.md says who may run it).
"""

from __future__ import annotations

from collections.abc import Iterable

from reactor.store.catalog import Finding

SETUP_DOC = "docs/database-setup.md"


def grants(role: str) -> str:
    return f"ask the database owner to run the GRANTs printed by `reactor db sql --grants-only --role {role}`"


def owner_sql(role: str) -> str:
    return f"ask the database owner to run the SQL printed by `reactor db sql --role {role}` ({SETUP_DOC})"


def for_problems(role: str, problems: Iterable[Finding], can_apply: bool) -> str:
    """The next step for these findings; `can_apply`: the role may run the DDL itself."""
    found = list(problems)
    privileges = any(f.kind == "privilege" for f in found)
    # `db init` adds what is missing but never changes an existing column's type or
    # constraint (a legacy column belongs to other programs): such a finding's detail
    # says which statement its owner runs.
    schema = any(f.kind != "privilege" and not (f.kind == "column" and f.status == "different") for f in found)
    if not schema and not privileges:
        return "ask the owner of the table to change the column as said"
    if schema and not can_apply:
        return owner_sql(role)  # the owner's SQL carries the GRANTs too
    if schema and privileges:
        return f"run `reactor db init`, then {grants(role)}"
    if schema:
        return "run `reactor db init`"
    return grants(role)
