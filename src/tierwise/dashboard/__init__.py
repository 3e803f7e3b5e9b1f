"""The gateway's web dashboard (``GET /dashboard``) and the feedback endpoint
(``POST /v1/feedback``).

The page is one HTML file with vanilla JavaScript and CSS shipped in ``static/`` (no build
step, no CDN): it polls ``GET /dashboard/data`` and draws its charts as inline SVG. The data
come from the ledger through the same functions as ``tierwise report``
(:func:`tierwise.reports.build_report`, :func:`tierwise.reports.build_series`,
:func:`tierwise.quality.quality_report`). See :mod:`tierwise.dashboard.routes`.
"""

from __future__ import annotations

from tierwise.dashboard.routes import dashboard_routes, feedback_route

__all__ = ["dashboard_routes", "feedback_route"]
