"""What users bring in: uploads and storage keys, their size limits and picture checks."""
