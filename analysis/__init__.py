"""symclone.analysis (placeholder: filled by its issue)."""
