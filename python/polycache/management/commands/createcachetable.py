"""``manage.py createcachetable``: Django's command, plus the tables of polycache's SQL caches.

Active when ``"polycache"`` is in ``INSTALLED_APPS``. Django's own database caches are
handled by Django's command, as before; then every ``CACHES`` entry whose ``BACKEND`` is
``polycache.django.Cache`` and whose ``LOCATION`` is ``sqlite://`` or ``postgres://`` gets its
table (and, with ``MAX_ENTRIES``, its row counter). ``--dry-run`` prints the SQL and neither
connects nor creates anything.
"""

from __future__ import annotations

from typing import Any

from django.core.management.commands.createcachetable import Command as DjangoCommand
from django.utils.module_loading import import_string

from polycache._polycache import create_table, create_table_sql, read_cache_settings

__all__ = ["Command"]

_SQL_SCHEMES = ("sqlite", "postgres", "postgresql")


def _table_url(entry: Any) -> str | None:
    """The URL (secrets included) whose table a polycache ``CACHES`` entry uses, or None."""
    from polycache.django import DEFAULT_MEMORY_STORE, Cache

    backend = entry.get("BACKEND")
    cls = import_string(backend) if isinstance(backend, str) else None
    if not (isinstance(cls, type) and issubclass(cls, Cache)):
        return None
    # The core reads the entry as polycache.django.Cache does (polycache::settings).
    read = read_cache_settings(entry, django_store=DEFAULT_MEMORY_STORE)
    url = read["location"]
    if url.partition("://")[0].lower() not in _SQL_SCHEMES:
        return None
    options = read["options"]  # typed options; rendered as URL text once, for the URL API
    if len(options):
        url = f"{url}{'&' if '?' in url else '?'}{options.to_query()}"
    return url


class Command(DjangoCommand):
    help = (
        "Creates the tables needed to use the SQL cache backends: Django's database caches "
        "and polycache's sqlite:// and postgres:// caches."
    )

    def handle(self, *tablenames: str, **options: Any) -> None:
        super().handle(*tablenames, **options)
        if tablenames:
            return  # names of Django database-cache tables, handled above
        from django.conf import settings  # (imported here: a lazy object, read only when run)

        dry_run = options["dry_run"]
        for alias, entry in settings.CACHES.items():
            url = _table_url(entry)
            if url is None:
                continue
            if dry_run:
                for statement in create_table_sql(url):
                    self.stdout.write(statement)
                continue
            create_table(url)
            if options["verbosity"] >= 1:
                self.stdout.write(f"Cache table of '{alias}' ready.")
