"""The ``ghstream dashboard`` web app (Streamlit, from the ``dashboard`` extra).

``app.py`` is the Streamlit script, run by ``streamlit run`` in a subprocess
that ``ghstream dashboard`` starts; ``data.py`` reads PostgreSQL through
:mod:`ghstream.queries`, the same code ``ghstream top`` uses. Nothing in this
package imports Streamlit at import time except ``app.py``, so the command can
tell a user without the extra how to install it.
"""

from __future__ import annotations

from pathlib import Path

#: The Streamlit script ``ghstream dashboard`` serves.
APP_PATH = Path(__file__).with_name("app.py")

#: Environment variable through which the command hands the DSN to the app
#: (never on the command line, where ``ps`` would show the password).
DSN_ENV = "GHSTREAM_POSTGRES_DSN"

#: Seconds between refreshes, also an environment variable of the app.
REFRESH_ENV = "GHSTREAM_DASHBOARD_REFRESH_S"
DEFAULT_REFRESH_S = 5.0
