"""symgate on the robot: serve a gate-certified ONNX policy (``policy_server``)."""
