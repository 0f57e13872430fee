import subprocess
import sys

from medssl.cli import build_parser


def test_help_lists_commands(capsys):
    parser = build_parser()
    text = parser.format_help()
    assert "medssl" in text and "COMMAND" in text


def test_version_runs():
    out = subprocess.run([sys.executable, "-m", "medssl.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "medssl" in out.stdout
