"""CLI sub-commands, one module each (discovered by :mod:`symclone.cli`)."""
