"""Scenes in: reading headers and bands (JPEG, PNG, TIFF), the scoring .npy, georeferencing, disk-
space checks, the deep-zoom pyramid."""
