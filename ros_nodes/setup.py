"""ament_python package of the symgate robot node (colcon build on a robot; pip install -e for development)."""

from setuptools import setup

PACKAGE = "symgate_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=[PACKAGE],
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
    ],
    install_requires=["setuptools", "numpy", "cryptography"],
    zip_safe=True,
    maintainer="symgate developers",
    description="Serves gate-certified symgate ONNX policies on a robot (rclpy lifecycle node).",
    license="Apache-2.0",
    entry_points={"console_scripts": ["policy_server = symgate_ros.policy_server:main"]},
)
