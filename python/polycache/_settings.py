"""The error of an ``OPTIONS`` entry, raised by the core's reader of Django's ``CACHES`` shape.

Every rule of that shape (``LOCATION``, ``TIMEOUT``, ``KEY_PREFIX``, ``VERSION``, Django's and
django-redis' ``OPTIONS``) lives in the core (``polycache::settings``), for Rust, C and
Python alike: ``polycache.caches.configure`` and ``polycache.django.Cache`` call it through
``polycache._polycache.read_cache_settings``, which raises this class for a fault in ``OPTIONS``.
"""

from __future__ import annotations

from polycache.exceptions import ConfigurationError

__all__ = ["InvalidOptionError"]


class InvalidOptionError(ConfigurationError, TypeError):
    """An ``OPTIONS`` entry the location does not take, or a bad value for one.

    A ``TypeError`` as well, as Django's Redis and Memcached backends raise for an
    unexpected option (``got an unexpected keyword argument``).
    """

    __module__ = "polycache.django"
