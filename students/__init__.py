"""symclone.students (placeholder: filled by its issue)."""
