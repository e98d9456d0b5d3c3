"""Checks of data and models that end in a verdict: OK, WARN or FAIL, with the reasons and a fix.

`api` has one function per `newsrec diagnose` subcommand; `report` the framework (Check, Table,
Report); the other modules one group of checks each. The package itself imports nothing heavy
(torch loads with `api`), so `newsrec --help` stays fast.
"""
