"""Training material: labelled datasets, training canvases, windows as views, the collage
generator."""
