"""Image and model code for the labeling app: plain Python, no Django imports."""
