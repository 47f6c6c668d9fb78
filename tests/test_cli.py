import subprocess
import sys

from symclone.cli import main


def test_help_lists_commands(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    for cmd in ("demo", "clone", "train-teacher", "analyze", "symmetrize", "finetune", "graphs"):
        assert cmd in out, f"command {cmd!r} missing from the CLI"


def test_console_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "symclone", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "symclone" in r.stdout


def test_unknown_argument_is_a_clean_error(capsys):
    try:
        main(["--bogus"])
    except SystemExit as e:
        assert e.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err
