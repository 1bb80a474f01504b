"""Helpers of the tests that cut database connections (tests/integration): a libpq connection
string to the test database, for an admin connection beside Django's."""

from django.conf import settings


def dsn() -> str:
    db = settings.DATABASES["default"]
    return (f"host={db.get('HOST') or '127.0.0.1'} port={db.get('PORT') or 5432} "
            f"dbname={db['NAME']} user={db.get('USER') or 'postgres'}"
            + (f" password={db['PASSWORD']}" if db.get("PASSWORD") else ""))  # fmt: skip
