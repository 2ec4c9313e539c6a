"""Logging set-up shared by every command.

Diagnostics go to stderr; tables and JSON go to stdout. Rich's handler is used
only when stderr is a terminal, so piped logs stay plain text.
"""

from __future__ import annotations

import logging
import re
import sys

_SECRET_PATTERNS = (
    # user:password@ in URLs and DSNs; the password runs to the last @ before the host
    re.compile(r"(?<=://)([^:/@\s]+):(\S*)@(?=[^@\s]*$|[^@\s]*\s)"),
    # GitHub tokens of every documented prefix
    re.compile(r"\b(gh[pousr]_[A-Za-z0-9_]{16,}|github_pat_[A-Za-z0-9_]{20,})\b"),
    # Authorization headers
    re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)(token|bearer)\s+[^\s'\",]+"),
    # secrets in URL query strings (?password=, &token=, signed URLs' sig=)
    re.compile(
        r"(?i)([?&](?:password|passwd|pwd|token|access_token|api_key|apikey|key|secret"
        r"|sig|signature|x-amz-signature|x-goog-signature)=)[^&#:\s]+"
    ),
    # libpq key=value connection strings: password=... or password='...'
    re.compile(r"(?i)(?<![?&\w])(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s']+)"),
)


def redact(text: str) -> str:
    """Return ``text`` with passwords in URLs and DSNs, secrets in query strings and
    GitHub tokens replaced by ``***``."""
    text = _SECRET_PATTERNS[0].sub(r"\1:***@", text)
    text = _SECRET_PATTERNS[1].sub("***", text)
    text = _SECRET_PATTERNS[2].sub(r"\1\2 ***", text)
    text = _SECRET_PATTERNS[3].sub(r"\1***", text)
    return _SECRET_PATTERNS[4].sub(r"\1***", text)


class RedactingFilter(logging.Filter):
    """Scrub secrets from every record before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def setup_logging(*, verbose: int = 0, quiet: bool = False) -> None:
    """Configure the root logger once for a command run.

    ``verbose`` 0 shows INFO from ghstream and WARNING from libraries, 1 shows
    DEBUG from ghstream, 2 and more shows DEBUG from everything. ``quiet`` shows
    only warnings and errors.
    """
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    handler: logging.Handler
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.logging import RichHandler

        # Rich's default console writes to stdout, which holds results.
        handler = RichHandler(
            console=Console(stderr=True), show_path=False, rich_tracebacks=False, markup=False
        )
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())

    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose >= 2 else logging.WARNING)
    logging.getLogger("ghstream").setLevel(level)
