"""What a scoring run leaves behind: grids, detections, thresholds, metrics, COCO results."""
