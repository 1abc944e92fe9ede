"""``python -m defectkit``: the command line, where the ``defectkit`` script is not on PATH."""

from defectkit.cli import app

app(prog_name="defectkit")
