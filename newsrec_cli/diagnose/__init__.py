"""Checks of data and models that end in a verdict: OK, WARN or FAIL, with the reasons and a fix.

`api` has one function per `newsrec diagnose` subcommand; `report` the framework (Check, Table,
Report); the other modules one group of checks each.
"""

from newsrec_cli.diagnose.api import check_cosine, check_data, check_gradients, check_saturation
from newsrec_cli.diagnose.report import Check, Report, Status, Table
from newsrec_cli.diagnose.subject import Subject, from_init, from_run

__all__ = [
    "Check",
    "Report",
    "Status",
    "Subject",
    "Table",
    "check_cosine",
    "check_data",
    "check_gradients",
    "check_saturation",
    "from_init",
    "from_run",
]
