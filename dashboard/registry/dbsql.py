"""Database objects the ORM cannot declare: the triggers that keep
``registry.VersionCount`` in step with ``registry.ModelVersion``, and the
trigram index behind the version search. One flavour per database the
dashboard runs on (PostgreSQL in production, SQLite locally); migration 0003
installs them.

Why triggers: a count kept by application code drifts the first time any
code path (a bulk insert, a queryset ``update()``, a test helper, a new
feature) forgets it; a trigger runs for every row change in the same
transaction. Each change touches one counter row per model, so two writers
of the same model queue on that row instead of deadlocking on two.
"""

from __future__ import annotations

from typing import Any

STATUSES = ("uploading", "validating", "valid", "invalid")

_TABLE = "registry_modelversion"
_COUNTS = "registry_versioncount"


def _flags(row: str, *, sign: str, as_int: str) -> str:
    """``uploading = uploading + (NEW.status = 'uploading')::int, ...``"""
    return ", ".join(f"{s} = {s} {sign} {as_int.format(f'{row}.status = {s!r}')}" for s in STATUSES)


# --- PostgreSQL ---------------------------------------------------------------

POSTGRES_INSTALL = [
    f"""
    CREATE OR REPLACE FUNCTION registry_versioncount_apply() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE {_COUNTS} SET total = total - 1, {_flags("OLD", sign="-", as_int="({})::int")}
        WHERE model_name = OLD.model_name;
      END IF;
      IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO {_COUNTS} AS c (model_name, total, {", ".join(STATUSES)})
        VALUES (NEW.model_name, 1, {", ".join(f"(NEW.status = {s!r})::int" for s in STATUSES)})
        ON CONFLICT (model_name) DO UPDATE SET total = c.total + 1,
          {", ".join(f"{s} = c.{s} + EXCLUDED.{s}" for s in STATUSES)};
      END IF;
      RETURN NULL;
    END $$;
    """,
    f"""
    CREATE TRIGGER registry_versioncount_insert_delete
    AFTER INSERT OR DELETE ON {_TABLE}
    FOR EACH ROW EXECUTE FUNCTION registry_versioncount_apply();
    """,
    f"""
    CREATE TRIGGER registry_versioncount_update
    AFTER UPDATE OF model_name, status ON {_TABLE}
    FOR EACH ROW WHEN (OLD.model_name IS DISTINCT FROM NEW.model_name
                       OR OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION registry_versioncount_apply();
    """,
    # pg_trgm is a trusted extension (PostgreSQL 13+): a database owner may
    # create it without being a superuser.
    "CREATE EXTENSION IF NOT EXISTS pg_trgm;",
    f"CREATE INDEX version_search_trgm ON {_TABLE} USING gin (search gin_trgm_ops);",
]

POSTGRES_UNINSTALL = [
    "DROP INDEX IF EXISTS version_search_trgm;",
    f"DROP TRIGGER IF EXISTS registry_versioncount_update ON {_TABLE};",
    f"DROP TRIGGER IF EXISTS registry_versioncount_insert_delete ON {_TABLE};",
    "DROP FUNCTION IF EXISTS registry_versioncount_apply();",
]

# --- SQLite -------------------------------------------------------------------

_SQLITE_ADD = f"""
  INSERT INTO {_COUNTS} (model_name, total, {", ".join(STATUSES)})
  VALUES (NEW.model_name, 0, 0, 0, 0, 0) ON CONFLICT (model_name) DO NOTHING;
  UPDATE {_COUNTS} SET total = total + 1, {_flags("NEW", sign="+", as_int="({})")}
  WHERE model_name = NEW.model_name;
"""
# Only an UPDATE: when the counter row is gone (Django's flush deletes tables
# one by one), a delete must not bring it back with negative numbers.
_SQLITE_REMOVE = f"""
  UPDATE {_COUNTS} SET total = total - 1, {_flags("OLD", sign="-", as_int="({})")}
  WHERE model_name = OLD.model_name;
"""
# The search index: an FTS5 table with the trigram tokenizer over the
# generated ``search`` column (external content: it stores no second copy).
SQLITE_SEARCH_TABLE = "registry_modelversion_search"

SQLITE_INSTALL = [
    f"CREATE TRIGGER registry_versioncount_insert AFTER INSERT ON {_TABLE}"
    f" BEGIN {_SQLITE_ADD} END;",
    f"CREATE TRIGGER registry_versioncount_delete AFTER DELETE ON {_TABLE}"
    f" BEGIN {_SQLITE_REMOVE} END;",
    f"""
    CREATE TRIGGER registry_versioncount_update AFTER UPDATE OF model_name, status ON {_TABLE}
    WHEN OLD.model_name IS NOT NEW.model_name OR OLD.status IS NOT NEW.status
    BEGIN {_SQLITE_REMOVE} {_SQLITE_ADD} END;
    """,
    f"""
    CREATE VIRTUAL TABLE {SQLITE_SEARCH_TABLE} USING fts5(
      search, content='{_TABLE}', content_rowid='id', tokenize='trigram');
    """,
    f"""
    CREATE TRIGGER registry_search_insert AFTER INSERT ON {_TABLE} BEGIN
      INSERT INTO {SQLITE_SEARCH_TABLE} (rowid, search) VALUES (NEW.id, NEW.search);
    END;
    """,
    f"""
    CREATE TRIGGER registry_search_delete AFTER DELETE ON {_TABLE} BEGIN
      INSERT INTO {SQLITE_SEARCH_TABLE} ({SQLITE_SEARCH_TABLE}, rowid, search)
      VALUES ('delete', OLD.id, OLD.search);
    END;
    """,
    f"""
    CREATE TRIGGER registry_search_update AFTER UPDATE OF version, notes, created_by, sha256
    ON {_TABLE} BEGIN
      INSERT INTO {SQLITE_SEARCH_TABLE} ({SQLITE_SEARCH_TABLE}, rowid, search)
      VALUES ('delete', OLD.id, OLD.search);
      INSERT INTO {SQLITE_SEARCH_TABLE} (rowid, search) VALUES (NEW.id, NEW.search);
    END;
    """,
    f"INSERT INTO {SQLITE_SEARCH_TABLE} ({SQLITE_SEARCH_TABLE}) VALUES ('rebuild');",
]

SQLITE_UNINSTALL = [
    "DROP TRIGGER IF EXISTS registry_search_update;",
    "DROP TRIGGER IF EXISTS registry_search_delete;",
    "DROP TRIGGER IF EXISTS registry_search_insert;",
    f"DROP TABLE IF EXISTS {SQLITE_SEARCH_TABLE};",
    "DROP TRIGGER IF EXISTS registry_versioncount_update;",
    "DROP TRIGGER IF EXISTS registry_versioncount_delete;",
    "DROP TRIGGER IF EXISTS registry_versioncount_insert;",
]

# Existing rows, counted once when the triggers are installed.
COUNT_EXISTING = f"""
INSERT INTO {_COUNTS} (model_name, total, {", ".join(STATUSES)})
SELECT model_name, COUNT(*),
  {", ".join(f"SUM(CASE WHEN status = {s!r} THEN 1 ELSE 0 END)" for s in STATUSES)}
FROM {_TABLE} GROUP BY model_name;
"""


def install(apps: Any, schema_editor: Any) -> None:
    vendor = schema_editor.connection.vendor
    statements = {"postgresql": POSTGRES_INSTALL, "sqlite": SQLITE_INSTALL}.get(vendor)
    if statements is None:
        raise RuntimeError(f"the registry supports PostgreSQL and SQLite, not {vendor}")
    schema_editor.execute(f"DELETE FROM {_COUNTS};")
    for statement in statements:
        schema_editor.execute(statement)
    schema_editor.execute(COUNT_EXISTING)


def uninstall(apps: Any, schema_editor: Any) -> None:
    vendor = schema_editor.connection.vendor
    for statement in {"postgresql": POSTGRES_UNINSTALL, "sqlite": SQLITE_UNINSTALL}.get(vendor, []):
        schema_editor.execute(statement)
