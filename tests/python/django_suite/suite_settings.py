"""Django settings for running Django's own cache tests against ``polycache.django.Cache``.

The shape of Django's ``tests/test_sqlite.py`` plus what ``tests/runtests.py`` sets for every
run (installed apps, templates, middleware, language). The cache location comes from
``POLYCACHE_SUITE_LOCATION`` (set by ``run_suite.py``).
"""

from __future__ import annotations

import os

LOCATION = os.environ.get("POLYCACHE_SUITE_LOCATION", "memory://")

SECRET_KEY = "polycache-django-suite"
DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3"},
    "other": {"ENGINE": "django.db.backends.sqlite3"},
}
CACHES = {"default": {"BACKEND": "polycache.django.Cache", "LOCATION": LOCATION}}
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    # Django's tests/cache package (its Poll model), extracted from the sdist.
    "cache",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    }
]
LANGUAGE_CODE = "en"
SITE_ID = 1
MIGRATION_MODULES = {"auth": None, "contenttypes": None, "sessions": None}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = False
