"""Stage 5, serve: the simulated robot over ROS 2 and the launcher of the sim-to-robot rehearsal.

The robot-side node itself is ``ros_nodes/`` (package ``symgate_ros``); the modules here need rclpy
and run in the ROS environment (``.venv-ros``), which ``symgate serve`` calls into.
"""
