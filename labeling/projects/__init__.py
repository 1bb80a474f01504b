"""Projects: who may see them, editing their classes, and where their files live in storage."""
