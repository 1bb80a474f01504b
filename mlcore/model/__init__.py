"""The network (ResNet with its named box head), the ONNX hand-off file, the shipped starting
model."""
