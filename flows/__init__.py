"""Prefect flows and command lines over the unclip packages.

Prefect reads its settings when it is first imported, so the quiet local defaults (no analytics,
a patient temporary server, offline hub) are set here, before any flow module imports Prefect;
values the user set win.
"""

from flows.runtime import local_defaults

local_defaults()
