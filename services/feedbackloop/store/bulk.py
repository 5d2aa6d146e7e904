"""Many rows into one table: one executemany of a statement compiled once per dialect.

For a batch of wide rows, SQLAlchemy's Core executemany spent more on its own per-row work
(a parameter dict built through the compiled statement for every row, then each value's type
processing) than the database spent storing the rows. Here the INSERT is compiled once per
table and dialect, each value goes through the same bind processor SQLAlchemy would apply (so
what is stored is the same), and values common to every row are processed once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Table, insert
from sqlalchemy.engine import Dialect


@dataclass(frozen=True)
class _Plan:
    sql: str
    # The columns in the order the statement binds them (its parameter names).
    names: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]
    positional: bool


@lru_cache(maxsize=64)
def _plan(table: Table, dialect: Dialect) -> _Plan:
    compiled = insert(table).compile(dialect=dialect)
    names = tuple(compiled.positiontup or ()) if compiled.positional else tuple(c.key for c in table.c)
    if set(names) != {c.key for c in table.c} or compiled.escaped_bind_names:
        raise NotImplementedError(f"bulk insert into {table.name} needs plain column names")
    processors = tuple(table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names)
    return _Plan(compiled.string, names, processors, compiled.positional)


def insert_rows(
    connection: Connection,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    shared: Mapping[str, Any] | None = None,
) -> None:
    """Insert `rows`, each giving every column of `table` that `shared` (the values all rows
    have) does not. Column defaults are not applied: a missing column is a KeyError."""
    if not rows:
        return
    plan = _plan(table, connection.dialect)
    common = shared or {}
    unknown = set(common) - set(plan.names)
    if unknown:
        raise KeyError(f"{table.name} has no column {', '.join(sorted(unknown))}")
    done = {
        name: (process(common[name]) if process else common[name])
        for name, process in zip(plan.names, plan.processors, strict=True)
        if name in common
    }
    # Per column: the processed shared value, or the row's value and its processor.
    slots = [
        (name, name in done, done.get(name), process)
        for name, process in zip(plan.names, plan.processors, strict=True)
    ]
    values = [
        [
            fixed if is_shared else process(row[name]) if process else row[name]
            for name, is_shared, fixed, process in slots
        ]
        for row in rows
    ]
    params = (
        [tuple(v) for v in values]
        if plan.positional
        else [dict(zip(plan.names, v, strict=True)) for v in values]
    )
    connection.exec_driver_sql(plan.sql, params)
