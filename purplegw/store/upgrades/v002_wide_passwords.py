"""Room for encrypted passwords.

The original column is VARCHAR(64); a Fernet token for even a short
password is longer (about 120 characters), and MySQL in strict mode would
refuse it.  SQLite does not enforce VARCHAR lengths, so only MySQL changes.
"""

from purplegw.store.database import Database
from purplegw.store.upgrades.registry import Tables, upgrade


@upgrade("ext_pass wide enough for encrypted passwords")
def widen_ext_pass(db: Database, tables: Tables) -> None:
    table = tables.accounts
    if db.dialect == "mysql":
        db.execute(f"ALTER TABLE {table} MODIFY ext_pass VARCHAR(512)")
