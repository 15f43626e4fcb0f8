"""The exploration report: cold-item KPIs, off-policy estimates and charts in one HTML file.

``coldstart report --since 2026-01-05 --until 2026-01-12 --out report.html`` reads the offline
store; in Python::

    data = OfflineStoreSource(log).load(since, until, timedelta(seconds=300))
    html = render_html(build_report(data, ReportConfig()))
"""

from __future__ import annotations

from exploration.report.build import ReportResult, build_report
from exploration.report.config import ReportConfig
from exploration.report.html import render_html
from exploration.report.kpis import KPIs, KPISummary, compute_kpis, validate_window
from exploration.report.records import ItemListing, ReportData
from exploration.report.source import InMemorySource, OfflineStoreSource, ReportSource

__all__ = [
    "InMemorySource",
    "ItemListing",
    "KPISummary",
    "KPIs",
    "OfflineStoreSource",
    "ReportConfig",
    "ReportData",
    "ReportResult",
    "ReportSource",
    "build_report",
    "compute_kpis",
    "render_html",
    "validate_window",
]
