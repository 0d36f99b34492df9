"""cm-api: the operations dashboard's JSON API, served from MySQL/MariaDB."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cm-api")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
