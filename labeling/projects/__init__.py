"""Projects: who may see them, editing their classes, their object size measured from the
reviewers' boxes (``measured_size``), and where their files live in storage."""
