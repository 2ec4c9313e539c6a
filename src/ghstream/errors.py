"""The errors ghstream raises, and the exit codes the command line maps them to.

    GhstreamError                 anything ghstream reports to a user
    ├── ConfigError               a flag, variable or file is wrong (exit 2)
    ├── StartupError              a broker or database cannot be reached at start (exit 3)
    ├── SourceError               an archive or API source cannot be read
    │   └── GitHubAuthError       GitHub refused the token (exit 4)
    └── StoreError                a write to MongoDB or PostgreSQL failed

Adapters convert their library's errors into these at their edge, with
``raise ... from exc``, so the command line only ever has to know this tree.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_STARTUP = 3
EXIT_AUTH = 4
EXIT_INTERRUPTED = 130


class GhstreamError(Exception):
    """Base class of every error ghstream reports to a user."""

    exit_code = EXIT_FAILURE


class ConfigError(GhstreamError):
    """A flag, environment variable or file has a value ghstream cannot use."""

    exit_code = EXIT_USAGE


class StartupError(GhstreamError):
    """A broker or database could not be reached when the command started."""

    exit_code = EXIT_STARTUP


class SourceError(GhstreamError):
    """An archive file, URL or API feed could not be read."""


class GitHubAuthError(SourceError):
    """GitHub answered 401: the token is missing its rights or is wrong."""

    exit_code = EXIT_AUTH


class StoreError(GhstreamError):
    """A write to MongoDB or PostgreSQL failed for a reason other than a duplicate."""
