"""The command line: parse, call drtool.app, render. The only place that prints or exits."""
