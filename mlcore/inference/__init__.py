"""From a scene to detections: window scoring, thresholds calibration, NMS post-processing."""
