"""symclone.teachers (placeholder: filled by its issue)."""
