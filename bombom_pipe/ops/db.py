"""`init-db`: create or upgrade the schema and the least-privilege roles (safe to run twice)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg


@dataclass(slots=True)
class Done:
    """What `init_db` did."""

    owner: str | None = None  # the role made owner of the database
    applied: list[str] = field(default_factory=list)  # migrations, by name
    granted: list[tuple[str, str]] = field(default_factory=list)  # (kind, role)


def init_db(conn: psycopg.Connection, owner: str | None, roles: Mapping[str, str | None],
            passwords: Mapping[str, str]) -> Done:
    """As the owner (or, with `owner`, as a superuser who makes that role the owner and creates
    the schema as it): migrate, then grant each kind of role in `roles` ("delivery", "lookup")
    its rights. Passwords come from `passwords` (the environment): BOMBOM_ADMIN_PASSWORD,
    BOMBOM_DELIVERY_PASSWORD, BOMBOM_LOOKUP_PASSWORD."""
    from ..schema import grant, upgrade
    from ..schema.owner import make_owner, set_role

    done = Done(owner)
    if owner:
        make_owner(conn, owner, passwords.get("BOMBOM_ADMIN_PASSWORD"))
        set_role(conn, owner)
    done.applied = upgrade(conn)
    if owner:
        set_role(conn, None)  # creating roles and setting passwords needs the superuser
    for kind, role in roles.items():
        if role:
            grant(conn, kind, role, passwords.get(f"BOMBOM_{kind.upper()}_PASSWORD"))
            done.granted.append((kind, role))
    return done
